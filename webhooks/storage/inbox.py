"""The durable inbox: one atomic insert per verified delivery, exact dedup by unique key."""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from webhooks.errors import StorageUnavailable
from webhooks.storage import arrays, writer
from webhooks.storage.bulk import CHUNK, update_in_chunks
from webhooks.storage.dialect import insert
from webhooks.storage.group import GroupCommit
from webhooks.storage.schema import InboxState, Lane, inbox, inbox_waits

_DEDUP_COLUMNS = ["provider", "account", "event_type", "delivery_id"]
_BUSY = ("SQLITE_BUSY", "SQLITE_BUSY_SNAPSHOT", "SQLITE_LOCKED")
BUSY_POLL = 0.0005  # seconds between tries of a busy SQLite insert


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
    secret_index: int | None = None  # which configured secret verified it (0: first)
    lane: int = Lane.LIVE  # schema.Lane: live, replay, backfill, history (claimed in order)


@cache
def _insert_counting_duplicates(dialect_name: str) -> sa.Insert:
    """INSERT ... ON CONFLICT DO UPDATE duplicates + 1 RETURNING duplicates, built once.

    Concurrent copies of one delivery race in the database, where exactly one inserts
    and the others count themselves on its row; never check-then-insert. The returned
    count tells a new row (0) from a duplicate (rowcount is unreliable across drivers)
    and `webhooks trace` shows how often the provider delivered it. Built once and
    executed with parameters: rebuilding it per request cost more than the insert.
    """
    statement = insert(inbox, dialect_name)
    return statement.on_conflict_do_update(
        index_elements=_DEDUP_COLUMNS, set_={"duplicates": inbox.c.duplicates + 1}
    ).returning(inbox.c.duplicates)


def store_delivery(engine: Engine, delivery: Delivery, received_at: datetime | None = None) -> bool:
    """Store a delivery; True when it is new, False when the same key was stored before.

    Raises StorageUnavailable when the database cannot take the write in time; the
    transaction is rolled back, so nothing is half-written and the provider retries.
    """
    return store_deliveries(engine, [delivery], received_at)[0]


def store_deliveries(
    engine: Engine, deliveries: list[Delivery], received_at: datetime | None = None
) -> list[bool]:
    """Store several deliveries in one transaction (all or none); each one's `is new`.

    A batch that repeats one key stores it once: the later copies count as duplicates.
    """
    now = received_at or datetime.now(UTC)
    rows = [_params(delivery, now) for delivery in deliveries]
    if engine.dialect.name == "sqlite":
        return _store_sqlite(engine, rows)
    if len(rows) == 1:
        return _store_postgresql(engine, rows)
    return _store_together(engine, rows)


def _store_together(engine: Engine, rows: list[dict[str, Any]]) -> list[bool]:
    """PostgreSQL: `rows` in one transaction, one statement each (a batch request)."""
    statement = _insert_counting_duplicates(engine.dialect.name)
    # Works in a transaction or, as the web app runs it, in autocommit, where the one
    # statement of a single row is its own atomic transaction (see create_app).
    return _retrying(engine, len(rows) > 1, lambda conn: _insert_all(conn, statement, rows))


def _retrying(
    engine: Engine, together: bool, work: Callable[[Connection], list[bool]]
) -> list[bool]:
    """`work` in a transaction, once more on a fresh connection if the pooled one died."""
    for attempt in (1, 2):
        try:
            with _begin(engine, together) as conn:
                return work(conn)
        except DBAPIError as exc:
            # A pooled connection that died (database restart, failover) is dropped
            # by SQLAlchemy; one fresh attempt is safe because the insert is idempotent,
            # and cheaper than pinging before every request.
            if attempt == 1 and (exc.connection_invalidated or _connection_lost(exc)):
                continue
            raise StorageUnavailable(_reason(exc)) from exc
        except (SQLAlchemyError, TimeoutError) as exc:
            raise StorageUnavailable(_reason(exc)) from exc
    raise AssertionError("unreachable")  # pragma: no cover


# Group statements one web process runs at once on PostgreSQL. One: while it runs, the
# process's other requests queue up for the next (groups of about four at 16
# connections); two halved the groups and stored fewer requests a second.
LEADERS = 1


def _store_postgresql(engine: Engine, rows: list[dict[str, Any]]) -> list[bool]:
    """One request's delivery on PostgreSQL, stored in one statement with whatever the
    process's other requests queued meanwhile (webhooks.storage.group): per request,
    a share of one round trip, one statement and one commit instead of each its own."""
    size = sum(len(row["body"]) for row in rows)
    timeout = _pool_timeout(engine)
    try:
        return _group(engine).store_shared(
            rows, size, lambda group: _store_group(engine, group), timeout, LEADERS, _alone
        )
    except (SQLAlchemyError, TimeoutError) as exc:
        raise StorageUnavailable(_reason(exc)) from exc


def _alone(exc: Exception) -> bool:
    """Whether a refused group is worth storing again request by request: not when
    the database is gone or the pool has no connection (every request would wait
    its own timeout for the same answer)."""
    cause = exc.__cause__ if isinstance(exc, StorageUnavailable) else exc
    if isinstance(cause, DBAPIError):
        return not (cause.connection_invalidated or _connection_lost(cause))
    return not isinstance(cause, sa.exc.TimeoutError | TimeoutError)


def _store_group(engine: Engine, rows: list[dict[str, Any]]) -> list[bool]:
    """A group's rows in one upsert of arrays (webhooks.storage.arrays); each one's `is
    new`. Copies of one delivery in the group (a provider's retry racing its original)
    become one row carrying their count: the first copy is new if nobody stored it
    before, every other is a duplicate, and `duplicates` counts them all."""
    if len(rows) == 1:
        return _store_together(engine, rows)
    first: dict[tuple[Any, ...], int] = {}
    copies: dict[tuple[Any, ...], int] = {}
    keys = [tuple(row[column] for column in _DEDUP_COLUMNS) for row in rows]
    for index, key in enumerate(keys):
        first.setdefault(key, index)
        copies[key] = copies.get(key, 0) + 1
    # In key order, so two groups sharing keys lock them in the same order.
    ordered = sorted(first, key=lambda key: [str(value) for value in key])
    values = [{**rows[first[key]], "duplicates": copies[key] - 1} for key in ordered]
    extra = {key: count - 1 for key, count in copies.items()}

    def upsert(conn: Connection) -> list[bool]:
        returned = arrays.upsert(conn, _insert_group(), values)
        # A row just inserted holds exactly its group's extra copies; one stored
        # before had its count raised past that.
        # (A key the database returns changed, never expected, is nobody's new row.)
        new = {tuple(row)[:-1] for row in returned if row[-1] == extra.get(tuple(row)[:-1])}
        return [key in new and first[key] == index for index, key in enumerate(keys)]

    return _retrying(engine, False, upsert)


@cache
def _insert_group() -> sa.Insert:
    """The group's upsert: a row already stored counts every copy of the group."""
    statement = insert(inbox, "postgresql")
    return statement.on_conflict_do_update(
        index_elements=_DEDUP_COLUMNS,
        set_={"duplicates": inbox.c.duplicates + statement.excluded.duplicates + 1},
    ).returning(*(inbox.c[name] for name in _DEDUP_COLUMNS), inbox.c.duplicates)


def _params(delivery: Delivery, received_at: datetime) -> dict[str, Any]:
    return {
        "provider": delivery.provider,
        "account": delivery.account,
        "event_type": delivery.event_type,
        "delivery_id": delivery.delivery_id,
        "event_id": delivery.event_id,
        "api_version": delivery.api_version,
        "headers": delivery.headers,
        "body": delivery.body,
        "received_at": received_at,
        "occurred_at": delivery.occurred_at,
        "secret_index": delivery.secret_index,
        "lane": delivery.lane,
    }


def _begin(engine: Engine, together: bool) -> AbstractContextManager[Connection]:
    """engine.begin() for one row (the request path: nothing added); rows stored
    `together` get a real transaction even on the web app's autocommit engine, where
    each statement would otherwise commit on its own and a batch failing part way
    would leave its first rows stored."""
    return _transaction(engine) if together else engine.begin()


@contextmanager
def _transaction(engine: Engine) -> Iterator[Connection]:
    with engine.connect() as plain:
        # The driver's own level (READ COMMITTED, SQLite's SERIALIZABLE): a transaction.
        level = plain.default_isolation_level or "SERIALIZABLE"
        conn = plain.execution_options(isolation_level=level)
        with conn.begin():
            yield conn


def _insert_all(conn: Connection, statement: sa.Insert, rows: list[dict[str, Any]]) -> list[bool]:
    # One statement per row, not executemany: ON CONFLICT DO UPDATE may not touch one
    # row twice in a statement (a batch repeating a key), and each row's RETURNING
    # says whether it is new. In key order, so two batches sharing keys lock them in
    # the same order and never deadlock; the answers come back in the rows' order.
    if len(rows) == 1:
        return [conn.execute(statement, rows[0]).scalar_one() == 0]
    order = sorted(range(len(rows)), key=lambda i: [str(rows[i][c]) for c in _DEDUP_COLUMNS])
    new = [False] * len(rows)
    for index in order:
        new[index] = conn.execute(statement, rows[index]).scalar_one() == 0
    return new


def _connection_lost(exc: DBAPIError) -> bool:
    """A client-side failure of the connection itself (no SQLSTATE from the server).

    A connection cut mid-statement can fail the rollback after it ("another command is
    already in progress") instead of being recognised as a disconnect; the server's
    own refusals (lock and statement timeouts) carry a SQLSTATE and are not retried.
    """
    return isinstance(exc, sa.exc.OperationalError) and getattr(exc.orig, "sqlstate", "") is None


def _store_sqlite(engine: Engine, rows: list[dict[str, Any]]) -> list[bool]:
    """The insert on SQLite: one writer turn per host, a commit per group of requests,
    busy retries in fine steps.

    The requests of this process that wait for the turn are stored in one transaction
    by whichever gets it first (webhooks.storage.group): one disk flush for all of them.
    While the worker commits, the database is busy. SQLite's own busy handler sleeps
    1, 2, 5 ... up to 100 ms between tries, so a 30 ms commit could cost a waiting
    request 50 ms; on an engine made with `poll_busy` SQLite gives up after 1 ms and
    the insert is tried again here every half millisecond until the timeout. Only
    the thread holding the host's writer turn (storage/writer.py) polls. A busy
    transaction is rolled back whole, so trying again is safe.
    """
    statement = _insert_counting_duplicates("sqlite")
    timeout = _pool_timeout(engine)
    # One deadline for all this request's work, as a leader's too: a group the database
    # keeps busy is not tried again entry by entry for a further timeout each.
    deadline = time.monotonic() + timeout
    database = engine.url.database or ":memory:"

    def turn(unneeded: Callable[[], bool]) -> AbstractContextManager[bool]:
        return writer.turn(database, timeout, unneeded)

    def insert(batch: list[dict[str, Any]]) -> list[bool]:
        while True:
            try:
                with _begin(engine, len(batch) > 1) as conn:
                    return _insert_all(conn, statement, batch)
            except sa.exc.OperationalError as exc:
                busy = getattr(exc.orig, "sqlite_errorname", "") in _BUSY
                if not busy or time.monotonic() >= deadline:
                    raise
            time.sleep(BUSY_POLL)

    size = sum(len(row["body"]) for row in rows)
    try:
        return _group(engine).store(rows, size, turn, insert, timeout)
    except (SQLAlchemyError, TimeoutError) as exc:
        raise StorageUnavailable(_reason(exc)) from exc


_groups: weakref.WeakKeyDictionary[Engine, GroupCommit[dict[str, Any]]] = (
    weakref.WeakKeyDictionary()
)
_groups_lock = threading.Lock()


def _group(engine: Engine) -> GroupCommit[dict[str, Any]]:
    """The group commit of this engine (one per web process and database)."""
    with _groups_lock:
        group = _groups.get(engine)
        if group is None:
            group = _groups[engine] = GroupCommit()
        return group


def _pool_timeout(engine: Engine) -> float:
    timeout = getattr(engine.pool, "timeout", None)
    return float(timeout()) if callable(timeout) else 2.0


def _reason(exc: Exception) -> str:
    """Error class and database error code, never str(exc): it would quote the body."""
    orig = getattr(exc, "orig", None)
    code = getattr(orig, "sqlstate", None) or getattr(orig, "sqlite_errorname", None)
    return f"inbox write failed: {type(exc).__name__}" + (f" ({code})" if code else "")


def save_enrichment(
    engine: Engine, owner: str, stored: list[dict[str, Any]], deferred: list[dict[str, Any]]
) -> None:
    """Store fetched data (`b_id`, `b_enrichment`) and push deferred leases out (`b_id`,
    `b_until`), on rows `owner` still holds."""
    if not stored and not deferred:
        return
    ours = sa.and_(inbox.c.id == sa.bindparam("b_id"), inbox.c.lease_owner == owner)
    with engine.begin() as conn:
        if stored:
            statement = sa.update(inbox).where(ours)
            conn.execute(statement.values(enrichment=sa.bindparam("b_enrichment")), stored)
        if deferred:
            statement = sa.update(inbox).where(ours)
            conn.execute(statement.values(lease_until=sa.bindparam("b_until")), deferred)


@cache
def _wait_once(dialect_name: str) -> sa.Insert:
    return insert(inbox_waits, dialect_name).on_conflict_do_nothing()


def add_wait(conn: Connection, key: str, inbox_id: int, now: datetime) -> None:
    """Remember that inbox row `inbox_id` waits for `key` to be linked to a person."""
    conn.execute(
        _wait_once(conn.dialect.name), {"key": key, "inbox_id": inbox_id, "created_at": now}
    )


def requeue_dead(engine: Engine, ids: list[int] | None = None) -> int:
    """Put dead-lettered inbox rows back to pending (after a mapper fix); how many."""
    statement = sa.update(inbox).where(inbox.c.state == InboxState.DEAD)
    if ids is not None:
        statement = statement.where(inbox.c.id.in_(ids))
    with engine.begin() as conn:
        result = conn.execute(
            # attempts restart: a row dead after MAX_STORE_ATTEMPTS gets a full new round.
            statement.values(
                state=InboxState.PENDING, lease_owner=None, lease_until=None, attempts=0
            )
        )
    return result.rowcount or 0


def release_waiting(engine: Engine, ids: list[int]) -> int:
    """Waiting rows back to pending, to be mapped again (they may wait again); how many."""
    if not ids:
        return 0
    with engine.begin() as conn:
        result = conn.execute(
            sa.update(inbox)
            .where(inbox.c.id.in_(ids), inbox.c.state == InboxState.WAITING)
            .values(state=InboxState.PENDING, last_error=None, lease_owner=None, lease_until=None)
        )
        conn.execute(sa.delete(inbox_waits).where(inbox_waits.c.inbox_id.in_(ids)))
    return result.rowcount or 0


def expire_waiting(engine: Engine, waiting_before: datetime, ids: list[int] | None = None) -> int:
    """Rows that have waited since before `waiting_before` (and are in `ids`, if given)
    become dead letters that say what they waited for; how many. Nothing named their
    person in time. Measured from when the row began to wait, not from its receipt
    (a replayed old delivery that waits again gets the whole expiry), and done a chunk
    at a time, each its own short transaction."""
    waited = (
        sa.select(inbox_waits.c.inbox_id)
        .group_by(inbox_waits.c.inbox_id)
        .having(sa.func.min(inbox_waits.c.created_at) < waiting_before)
    )
    query = sa.select(inbox.c.id).where(inbox.c.state == InboxState.WAITING, inbox.c.id.in_(waited))
    if ids is not None:
        query = query.where(inbox.c.id.in_(ids))
    expired = 0
    while True:
        with engine.begin() as conn:
            chunk = list(conn.scalars(query.order_by(inbox.c.id).limit(CHUNK)))
            if not chunk:
                return expired
            conn.execute(
                sa.update(inbox)
                .where(inbox.c.id.in_(chunk), inbox.c.state == InboxState.WAITING)
                .values(
                    state=InboxState.DEAD,
                    last_error="expired while waiting: "
                    + sa.func.coalesce(inbox.c.last_error, "no key recorded"),
                )
            )
            conn.execute(sa.delete(inbox_waits).where(inbox_waits.c.inbox_id.in_(chunk)))
        expired += len(chunk)


def purge_bodies(engine: Engine, received_before: datetime, dry_run: bool = False) -> int:
    """Drop the raw bodies, headers and fetched data of finished deliveries received
    before `received_before`; how many. The rows stay: their keys keep deduplicating a
    provider's retry. Rows still to be mapped, waiting or dead keep their bodies."""
    finished = sa.and_(
        inbox.c.state.in_((InboxState.DONE, InboxState.DISCARDED)),
        inbox.c.received_at < received_before,
        sa.func.length(inbox.c.body) > 0,
    )
    purged: dict[str, Any] = {"body": b"", "headers": {}, "enrichment": None}
    return update_in_chunks(engine, inbox, finished, purged, dry_run)


def exists(engine: Engine, delivery: Delivery) -> bool:
    """Whether a delivery with `delivery`'s dedup key is stored (a backfill's dry run)."""
    key = [getattr(inbox.c, column) == getattr(delivery, column) for column in _DEDUP_COLUMNS]
    with engine.connect() as conn:
        return conn.scalar(sa.select(inbox.c.id).where(*key)) is not None
