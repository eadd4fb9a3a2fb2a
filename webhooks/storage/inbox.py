"""The durable inbox: one atomic insert per verified delivery, exact dedup by unique key."""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from webhooks.errors import StorageUnavailable
from webhooks.providers.base import Delivery
from webhooks.storage.schema import inbox

_DEDUP_COLUMNS = ["provider", "account", "event_type", "delivery_id"]


def _insert_ignoring_duplicates(dialect_name: str) -> sa.Insert:
    """INSERT ... ON CONFLICT DO NOTHING RETURNING id for the engine's dialect."""
    # INSERT ... ON CONFLICT DO NOTHING: concurrent copies of one delivery race in the
    # database, where exactly one wins; never check-then-insert.
    # RETURNING tells a new row from a duplicate; rowcount is unreliable across drivers.
    dialect = postgresql if dialect_name == "postgresql" else sqlite
    return (
        dialect.insert(inbox)
        .on_conflict_do_nothing(index_elements=_DEDUP_COLUMNS)
        .returning(inbox.c.id)
    )


def store_delivery(engine: Engine, delivery: Delivery, received_at: datetime | None = None) -> bool:
    """Store a delivery; True when it is new, False when the same key was stored before.

    Raises StorageUnavailable when the database cannot take the write in time; the
    transaction is rolled back, so nothing is half-written and the provider retries.
    """
    statement = _insert_ignoring_duplicates(engine.dialect.name).values(
        provider=delivery.provider,
        account=delivery.account,
        event_type=delivery.event_type,
        delivery_id=delivery.delivery_id,
        event_id=delivery.event_id,
        api_version=delivery.api_version,
        headers=delivery.headers,
        body=delivery.body,
        received_at=received_at or datetime.now(UTC),
        occurred_at=delivery.occurred_at,
    )
    try:
        with engine.begin() as conn:
            return conn.execute(statement).first() is not None
    except (DBAPIError, SQLAlchemyError, TimeoutError) as exc:
        raise StorageUnavailable(f"inbox write failed: {type(exc).__name__}") from exc
