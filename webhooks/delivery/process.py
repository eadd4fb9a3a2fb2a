"""Stage 1: claim pending inbox rows, map them, and write their outbox operations.

The outbox rows and the inbox row's `done` are written in one transaction, so a crash
leaves either both or neither; the outbox's unique op_key makes a repeat add nothing.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import sqlalchemy as sa
import structlog
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from mappers.base import MapperConfig
from mappers.errors import MappingError
from mappers.registry import map_delivery
from webhooks.delivery.ids import op_ulid
from webhooks.delivery.operations import Operation, OperationKind, to_operations
from webhooks.mapping import stored_delivery
from webhooks.providers.base import Delivery
from webhooks.storage.queue import claim, release, utcnow
from webhooks.storage.schema import InboxState, OutboxState, inbox, outbox

log = structlog.get_logger("webhooks.process")
LEASE = timedelta(seconds=60)


class LeaseLost(Exception):
    """Another worker took the row over (our lease expired); our writes are rolled back."""


def process_batch(
    engine: Engine, owner: str, config: MapperConfig, limit: int = 100, lease: timedelta = LEASE
) -> int:
    """Map up to `limit` pending inbox rows (live lane first); returns how many."""
    rows = claim(
        engine,
        inbox,
        owner,
        limit,
        lease,
        due=[inbox.c.state == InboxState.PENDING],
        order_by=[inbox.c.lane, inbox.c.id],
    )
    for row in rows:
        try:
            process_row(engine, owner, row, config)
        except LeaseLost:
            log.warning("lease_lost", stage="process", inbox_id=row.id)
    return len(rows)


def _delivery(row: sa.Row[Any]) -> Delivery:
    return Delivery(
        provider=row.provider,
        account=row.account,
        event_type=row.event_type,
        delivery_id=row.delivery_id,
        body=row.body,
        event_id=row.event_id,
        api_version=row.api_version,
        # Without a provider time, the receipt time is the closest to the event.
        occurred_at=row.occurred_at or row.received_at,
        headers=row.headers or {},
    )


def process_row(engine: Engine, owner: str, row: sa.Row[Any], config: MapperConfig) -> None:
    """Map one inbox row and store its operations, or dead-letter it with the reason."""
    delivery = _delivery(row)
    key = f"{row.provider}:{row.account}:{row.event_type}:{row.delivery_id}"
    try:
        ops = to_operations(map_delivery(stored_delivery(delivery), config), key)
    except MappingError as exc:
        with engine.begin() as conn:
            release(
                conn,
                inbox,
                [row.id],
                owner,
                state=InboxState.DEAD,
                last_error=exc.reason,
                attempts=row.attempts + 1,
            )
        log.warning(
            "mapping_failed",
            inbox_id=row.id,
            provider=row.provider,
            type=row.event_type,
            reason=exc.reason,
        )
        return
    with engine.begin() as conn:
        for op in ops:
            conn.execute(_insert(conn, op, row))
        done = release(
            conn,
            inbox,
            [row.id],
            owner,
            state=InboxState.DONE,
            processed_at=utcnow(),
            attempts=row.attempts + 1,
            last_error=None,
        )
        if done != 1:
            raise LeaseLost(row.id)


def _insert(conn: Connection, op: Operation, row: sa.Row[Any]) -> sa.Insert:
    op_id = op_ulid(op.op_key, op.occurred_at)
    payload = dict(op.payload)
    if op.kind in (OperationKind.EVENT, OperationKind.ANONYMOUS_EVENT):
        payload["id"] = op_id  # Customer.io deduplicates events by this ULID
    now = utcnow()
    values = {
        "op_key": op.op_key,
        "op_id": op_id,
        "kind": op.kind,
        "person_id": op.person_id,
        "payload": payload,
        "occurred_at": op.occurred_at,
        "lane": row.lane,
        "inbox_id": row.id,
        "next_attempt_at": now,
        "created_at": now,
        "state": OutboxState.DEAD if op.problem else OutboxState.PENDING,
        "last_error": op.problem,
    }
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    statement = dialect.insert(outbox).values(**values)
    # The same fact again adds nothing, except where the first report could not be
    # sent for want of a person (a refund naming no customer) and this one names one.
    return statement.on_conflict_do_update(
        index_elements=["op_key"],
        set_={
            "payload": statement.excluded.payload,
            "person_id": statement.excluded.person_id,
            "kind": statement.excluded.kind,
            "state": statement.excluded.state,
            "last_error": statement.excluded.last_error,
            "next_attempt_at": statement.excluded.next_attempt_at,
        },
        where=sa.and_(
            outbox.c.person_id.is_(None),
            outbox.c.state == OutboxState.DEAD,
            statement.excluded.person_id.is_not(None),
        ),
    )


def requeue_dead_inbox(engine: Engine, ids: list[int] | None = None) -> int:
    """Put dead-lettered inbox rows back to pending (after a mapper fix); how many."""
    statement = sa.update(inbox).where(inbox.c.state == InboxState.DEAD)
    if ids is not None:
        statement = statement.where(inbox.c.id.in_(ids))
    with engine.begin() as conn:
        result = conn.execute(
            statement.values(state=InboxState.PENDING, lease_owner=None, lease_until=None)
        )
    return result.rowcount or 0
