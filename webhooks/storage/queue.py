"""Leased claims on the inbox and the outbox, shared by both worker stages.

A claim sets lease_owner/lease_until on due rows, one UPDATE ... RETURNING per queue it
takes from, in one transaction; rows of a worker that died are claimable again once their
lease expires. PostgreSQL skips rows another worker holds (FOR UPDATE SKIP LOCKED);
SQLite has one writer at a time anyway.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from webhooks.storage.dialect import one_of

# How long a claim lasts unless the caller says otherwise (WORKER_LEASE_SECONDS).
DEFAULT_LEASE = timedelta(seconds=60)

# Held around a write transaction: the worker's SQLite turn (webhooks.worker), so its
# threads hand SQLite's write lock over on a thread lock instead of meeting in the busy
# handler, which sleeps 1, 2, 5, 10 ms ... between tries. A no-op by default.
Turn = Callable[[], AbstractContextManager[object]]


@contextmanager
def writing(engine: Engine, turn: Turn = contextlib.nullcontext) -> Iterator[Connection]:
    """A write transaction in `turn`: taken before it begins, given back after it ends."""
    with turn(), engine.begin() as conn:
        yield conn


@contextmanager
def unsynced(engine: Engine) -> Iterator[Connection]:
    """A write transaction whose commit does not wait for the disk: for what can be
    done again from durable rows, never for what only a request knows.

    An inbox claim only sets leases, and stage 1 writes only what it derives from inbox
    rows that ingest stored durably: one lost to a power cut (or a PostgreSQL crash)
    puts its rows back in the queue and they are mapped again the same way. Nothing
    acts on it before it is durable: the log is written in order, and stage 2's claim,
    which comes before any send, commits durably (`claim(..., durable=True)`), as does
    the next ingest. Nothing is ever half-written. SQLite: synchronous=NORMAL in WAL
    mode skips the commit's fsync (5-10 ms here), during which ingest waited for the
    write lock. PostgreSQL: synchronous_commit=off for this transaction (SET LOCAL).
    Everything else stays synchronous.
    """
    with engine.connect() as conn:
        raw = conn.connection.driver_connection if conn.dialect.name == "sqlite" else None
        if raw is not None:
            raw.execute("PRAGMA synchronous=NORMAL")  # outside any transaction: allowed
        try:
            with conn.begin():
                if raw is None:
                    conn.exec_driver_sql("SET LOCAL synchronous_commit = off")
                yield conn
        finally:
            if raw is not None:
                raw.execute("PRAGMA synchronous=FULL")


def utcnow() -> datetime:
    """Now, aware, in UTC."""
    return datetime.now(UTC)


def claim(
    engine: Engine,
    table: sa.Table,
    owner: str,
    limit: int,
    lease: timedelta,
    queues: Sequence[Sequence[sa.ColumnElement[bool]]],
    order_by: Sequence[sa.ColumnElement[Any]],
    turn: Turn = contextlib.nullcontext,
    durable: bool = False,
) -> list[sa.Row[Any]]:
    """Lease up to `limit` rows (not leased by a live worker) from `queues` in turn,
    holding `turn` around the write.

    The lease's commit waits for the disk only when `durable`: stage 2 claims that way
    before it sends, because stage 1 commits without waiting (`unsynced`) and the log
    is written in order, so everything a sender can see is on disk before Customer.io
    acts on it. A lost stage 1 transaction then never undoes what was sent after it
    (a redaction's purge of queued operations, a merge's repointing, a cart
    suppression, an event's time).

    Each queue is a filter read in `order_by` order, such as one lane's pending rows.
    Its terms should be equalities on the leading columns of an index whose next
    columns are `order_by`, so the database reads the index in order and stops at
    `limit`. One filter over several states or lanes (`IN`) has no such order: the
    database sorts every matching row on each claim, which behind a 20,000-row backfill
    cost a PostgreSQL claim 48 ms instead of 6.
    """
    now = utcnow()
    free = sa.or_(table.c.lease_until.is_(None), table.c.lease_until < now)
    selects = [sa.select(table.c.id).where(*queue, free).order_by(*order_by) for queue in queues]
    # Look before taking the write lock: an idle worker polls several times a second,
    # and on SQLite every UPDATE, even of no rows, queues behind and blocks ingest.
    # One statement for all the queues: a round trip costs more than the look itself.
    with engine.connect() as conn:
        looks = conn.execute(sa.select(*(sa.exists(s) for s in selects))).one()
    waiting = [s for s, there in zip(selects, looks, strict=True) if there]
    rows: list[sa.Row[Any]] = []
    if not waiting:
        return rows
    with turn(), engine.begin() if durable else unsynced(engine) as conn:
        for candidates in waiting:
            if len(rows) >= limit:
                break
            statement = _lease(engine, table, candidates.limit(limit - len(rows)))
            values = {"lease_owner": owner, "lease_until": now + lease}
            found = list(conn.execute(statement.values(**values)))
            rows.extend(sorted(found, key=_sort_key(order_by)))
    return rows


def _lease(engine: Engine, table: sa.Table, candidates: sa.Select[Any]) -> sa.Update:
    """An UPDATE of exactly the rows `candidates` picks, returning them.

    It repeats none of the filter: the UPDATE would then plan a scan of its own over
    the queue's index instead of fetching the chosen ids by primary key. SQLite has one
    writer at a time, so the subquery's rows are still due when they are updated;
    PostgreSQL locks them (FOR UPDATE rechecks the filter on the newest row version)
    and skips rows another worker holds.
    """
    chosen: sa.ColumnElement[bool] = table.c.id.in_(candidates.scalar_subquery())
    if engine.dialect.name == "postgresql":
        # = ANY(ARRAY(subquery)) runs the subquery once. As IN (subquery), PostgreSQL
        # may run it again per row, each time skipping the rows this statement just
        # locked, and so lease the whole backlog whatever the limit.
        locked = candidates.with_for_update(skip_locked=True).scalar_subquery()
        chosen = table.c.id == sa.any_(sa.func.array(locked))
    return sa.update(table).where(chosen).returning(*table.c)


def _sort_key(order_by: Sequence[sa.ColumnElement[Any]]) -> Callable[[sa.Row[Any]], list[Any]]:
    # RETURNING does not keep the subquery's order; sort by the same columns again.
    names = [cast(sa.Column[Any], getattr(col, "element", col)).name for col in order_by]
    return lambda row: [row._mapping[name] for name in names]


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
