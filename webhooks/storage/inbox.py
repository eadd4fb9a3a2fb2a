"""The durable inbox: one atomic insert per verified delivery, exact dedup by unique key."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from webhooks.errors import StorageUnavailable
from webhooks.storage.schema import inbox

_DEDUP_COLUMNS = ["provider", "account", "event_type", "delivery_id"]


@dataclass(frozen=True, slots=True)
class Delivery:
    """One verified delivery, keyed by its provider, to be stored exactly as received."""

    provider: str
    account: str
    event_type: str
    delivery_id: str
    body: bytes
    event_id: str | None = None
    api_version: str | None = None
    occurred_at: datetime | None = None
    headers: dict[str, str] = field(default_factory=dict)


@cache
def _insert_ignoring_duplicates(dialect_name: str) -> sa.Insert:
    """INSERT ... ON CONFLICT DO NOTHING RETURNING id, built once per dialect.

    Concurrent copies of one delivery race in the database, where exactly one wins;
    never check-then-insert. RETURNING tells a new row from a duplicate (rowcount is
    unreliable across drivers). Built once and executed with parameters: rebuilding
    the statement per request cost more CPU than the insert itself.
    """
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
    statement = _insert_ignoring_duplicates(engine.dialect.name)
    params: dict[str, Any] = {
        "provider": delivery.provider,
        "account": delivery.account,
        "event_type": delivery.event_type,
        "delivery_id": delivery.delivery_id,
        "event_id": delivery.event_id,
        "api_version": delivery.api_version,
        "headers": delivery.headers,
        "body": delivery.body,
        "received_at": received_at or datetime.now(UTC),
        "occurred_at": delivery.occurred_at,
    }
    for attempt in (1, 2):
        try:
            # Works in a transaction or, as the web app runs it, in autocommit, where
            # the one statement is its own atomic transaction (see create_app).
            with engine.begin() as conn:
                return conn.execute(statement, params).first() is not None
        except DBAPIError as exc:
            # A pooled connection that died (database restart, failover) is dropped
            # by SQLAlchemy; one fresh attempt is safe because the insert is idempotent,
            # and cheaper than pinging before every request.
            if exc.connection_invalidated and attempt == 1:
                continue
            raise StorageUnavailable(_reason(exc)) from exc
        except (SQLAlchemyError, TimeoutError) as exc:
            raise StorageUnavailable(_reason(exc)) from exc
    raise AssertionError("unreachable")  # pragma: no cover


def _reason(exc: Exception) -> str:
    """Error class and database error code, never str(exc): it would quote the body."""
    orig = getattr(exc, "orig", None)
    code = getattr(orig, "sqlstate", None) or getattr(orig, "sqlite_errorname", None)
    return f"inbox write failed: {type(exc).__name__}" + (f" ({code})" if code else "")
