"""Engine construction: SQLite in WAL mode with a busy timeout, PostgreSQL with timeouts."""

from __future__ import annotations

import contextlib
import re
import sqlite3
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine, make_url

from webhooks.storage import writer


def create_db_engine(
    url: str,
    timeout: float = 2.0,
    *,
    autocommit: bool = False,
    poll_busy: bool = False,
    pool_size: int = 5,
    max_overflow: int = 10,
    write_turns: bool = False,
) -> Engine:
    """An engine whose waits (connect, pool, locks) all end within about `timeout` seconds.

    `autocommit` suits callers that only run single statements (the web app): each
    statement is then its own transaction, which saves PostgreSQL two round trips
    (BEGIN and COMMIT) per request. `poll_busy` (SQLite) makes a busy database fail
    at once instead of waiting in SQLite's busy handler, for a caller that retries in
    finer steps (webhooks.storage.inbox). `pool_size` and `max_overflow` size the
    PostgreSQL pool of this process (SQLite's connections are files: not pooled alike).
    `write_turns` (SQLite, the worker) makes each transaction take the host's writer
    turn (webhooks.storage.writer) at its first write, until it ends: see _TurnConnection.
    """
    parsed = make_url(url)
    engine_options: dict[str, Any] = {"isolation_level": "AUTOCOMMIT"} if autocommit else {}
    if parsed.get_backend_name() == "sqlite":
        busy = 0.001 if poll_busy else timeout
        return _sqlite_engine(url, timeout, engine_options, busy, write_turns and not autocommit)
    millis = int(timeout * 1000)
    # Keep options given in the URL (e.g. -csearch_path=...) beside the timeouts.
    options = " ".join(
        part
        for part in (
            parsed.query.get("options"),
            f"-c lock_timeout={millis} -c statement_timeout={millis}",
        )
        if isinstance(part, str)
    )
    return sa.create_engine(
        url,
        **engine_options,
        # No pool_pre_ping: it costs a round trip per request; store_delivery retries
        # once on a connection the pool finds dead instead.
        pool_timeout=timeout,
        pool_size=pool_size,
        max_overflow=max_overflow,
        connect_args={
            "connect_timeout": max(1, round(timeout)),
            # A server that stops answering mid-request fails the request in time
            # instead of hanging a sync worker until gunicorn kills it.
            "tcp_user_timeout": millis,
            "keepalives": 1,
            "keepalives_idle": 30,
            # Bounded waits: a stuck lock or statement becomes a 503 the provider
            # retries, long before Shopify's 5 s limit.
            "options": options,
        },
    )


# The statements that make a SQLite transaction a writer (the driver's own BEGIN for
# them is implicit; BEGIN IMMEDIATE takes the write lock at once).
_WRITES = re.compile(r"\s*(INSERT|UPDATE|DELETE|REPLACE|BEGIN IMMEDIATE)\b", re.IGNORECASE)


class _TurnConnection(sqlite3.Connection):
    """A SQLite connection holding the host's writer turn from its transaction's first
    write to its commit or rollback.

    A worker transaction that finds the database busy otherwise waits in SQLite's busy
    handler, which sleeps 1, 2, 5 ... up to 100 ms between tries: a live claim behind a
    10 ms backfill commit lost 18 ms. The turn is a queue with immediate hand-over (the
    web processes take it per insert), so a writer waits only as long as the one before
    it writes; reads take no turn, so mapping computes beside ingest as before.
    """

    turn_path = ""
    turn_timeout = 2.0
    _turn: contextlib.ExitStack | None = None

    def take_turn(self) -> None:
        if self._turn is not None:
            return
        stack = contextlib.ExitStack()
        try:
            stack.enter_context(writer.turn(self.turn_path, self.turn_timeout))
        except TimeoutError:
            # What a busy database says: callers already treat it as a transient failure.
            raise sqlite3.OperationalError("database is locked (no writer turn)") from None
        self._turn = stack

    def _give_back(self) -> None:
        turn, self._turn = self._turn, None
        if turn is not None:
            turn.close()

    def commit(self) -> None:
        try:
            super().commit()
        finally:
            self._give_back()

    def rollback(self) -> None:
        try:
            super().rollback()
        finally:
            self._give_back()

    def close(self) -> None:
        try:
            super().close()
        finally:
            self._give_back()


def _sqlite_engine(
    url: str, timeout: float, options: dict[str, Any], busy: float, write_turns: bool = False
) -> Engine:
    database = make_url(url).database
    if database and database != ":memory:":
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    connect_args: dict[str, Any] = {"timeout": busy}
    if write_turns:
        connect_args["factory"] = _TurnConnection
    engine = sa.create_engine(url, connect_args=connect_args, pool_timeout=timeout, **options)
    if write_turns:

        @sa.event.listens_for(engine, "connect")
        def _turns(dbapi_conn: _TurnConnection, _record: Any) -> None:
            dbapi_conn.turn_path = database or ""
            dbapi_conn.turn_timeout = timeout

        @sa.event.listens_for(engine, "before_cursor_execute")
        def _take_turn(conn: sa.Connection, *args: Any) -> None:
            if _WRITES.match(args[1]):
                take = getattr(conn.connection.dbapi_connection, "take_turn", None)
                if take is not None:
                    take()

    @sa.event.listens_for(engine, "connect")
    def _pragmas(dbapi_conn: sqlite3.Connection, _record: Any) -> None:
        cursor = dbapi_conn.cursor()
        # WAL lets readers run beside the single writer; synchronous=FULL fsyncs the
        # WAL on every commit, so an acknowledged webhook survives a power cut.
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={max(1, int(busy * 1000))}")
        cursor.close()

    return engine
