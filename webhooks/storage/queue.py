"""Leased claims on the inbox and the outbox, shared by both worker stages.

A claim sets lease_owner/lease_until on due rows in one UPDATE ... RETURNING; rows of a
worker that died are claimable again once their lease expires. PostgreSQL skips rows
another worker holds (FOR UPDATE SKIP LOCKED); SQLite has one writer at a time anyway.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from webhooks.storage.dialect import one_of

# How long a claim lasts unless the caller says otherwise (WORKER_LEASE_SECONDS).
DEFAULT_LEASE = timedelta(seconds=60)


def utcnow() -> datetime:
    """Now, aware, in UTC."""
    return datetime.now(UTC)


def claim(
    engine: Engine,
    table: sa.Table,
    owner: str,
    limit: int,
    lease: timedelta,
    due: Sequence[sa.ColumnElement[bool]],
    order_by: Sequence[sa.ColumnElement[Any]],
) -> list[sa.Row[Any]]:
    """Lease up to `limit` rows matching `due` (and not leased by a live worker)."""
    now = utcnow()
    free = sa.or_(table.c.lease_until.is_(None), table.c.lease_until < now)
    candidates = sa.select(table.c.id).where(*due, free).order_by(*order_by).limit(limit)
    # Look before taking the write lock: an idle worker polls several times a second,
    # and on SQLite every UPDATE, even of no rows, queues behind and blocks ingest.
    with engine.connect() as conn:
        if conn.execute(candidates.limit(1)).first() is None:
            return []
    chosen: sa.ColumnElement[bool] = table.c.id.in_(candidates.scalar_subquery())
    if engine.dialect.name == "postgresql":
        # = ANY(ARRAY(subquery)) runs the subquery once. As IN (subquery), PostgreSQL
        # may run it again per row, each time skipping the rows this statement just
        # locked, and so lease the whole backlog whatever the limit.
        locked = candidates.with_for_update(skip_locked=True).scalar_subquery()
        chosen = table.c.id == sa.any_(sa.func.array(locked))
    statement = (
        sa.update(table)
        .where(chosen, *due, free)
        .values(lease_owner=owner, lease_until=now + lease)
        .returning(*table.c)
    )
    with engine.begin() as conn:
        rows = list(conn.execute(statement))
    return sorted(rows, key=lambda row: [row._mapping[col.name] for col in _order_cols(order_by)])


def _order_cols(order_by: Sequence[sa.ColumnElement[Any]]) -> list[sa.Column[Any]]:
    # RETURNING does not keep the subquery's order; sort by the same columns again.
    return [cast(sa.Column[Any], getattr(col, "element", col)) for col in order_by]


def release(
    conn: Connection, table: sa.Table, ids: Sequence[int], owner: str, **values: Any
) -> int:
    """Clear our lease on `ids` (setting `values`), if we still hold it; rows updated."""
    if not ids:
        return 0
    statement = (
        sa.update(table)
        .where(one_of(table.c.id, ids, conn.dialect.name), table.c.lease_owner == owner)
        .values(lease_owner=None, lease_until=None, **values)
    )
    return conn.execute(statement).rowcount or 0
