"""Engine construction: SQLite in WAL mode with a busy timeout, PostgreSQL with timeouts."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine, make_url

from webhooks.core import jsontext


def create_db_engine(
    url: str,
    timeout: float = 2.0,
    *,
    autocommit: bool = False,
    poll_busy: bool = False,
    pool_size: int = 15,
    max_overflow: int = 0,
    own_checkpoints: bool = False,
) -> Engine:
    """An engine whose waits (connect, pool, locks) all end within about `timeout` seconds.

    `autocommit` suits callers that only run single statements (the web app): each
    statement is then its own transaction, which saves PostgreSQL two round trips
    (BEGIN and COMMIT) per request. `poll_busy` (SQLite) makes a busy database fail
    at once instead of waiting in SQLite's busy handler, for a caller that retries in
    finer steps (webhooks.storage.inbox). `pool_size` and `max_overflow` size the
    PostgreSQL pool of this process (SQLite's connections are files: not pooled alike):
    the pool opens a connection when no idle one is there and keeps it; an overflow
    connection is closed when given back. `own_checkpoints` (SQLite) turns SQLite's
    automatic WAL checkpoint off on this engine's connections, for a process that runs
    webhooks.storage.checkpoint.background instead (the worker).
    """
    parsed = make_url(url)
    # JSON columns (payloads, facts) written and read with orjson: webhooks.core.jsontext.
    engine_options: dict[str, Any] = {
        "json_serializer": jsontext.dumps,
        "json_deserializer": jsontext.loads,
    }
    if autocommit:
        engine_options["isolation_level"] = "AUTOCOMMIT"
    if parsed.get_backend_name() == "sqlite":
        busy = 0.001 if poll_busy else timeout
        return _sqlite_engine(url, timeout, engine_options, busy, own_checkpoints)
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


def _sqlite_engine(
    url: str, timeout: float, options: dict[str, Any], busy: float, own_checkpoints: bool
) -> Engine:
    database = make_url(url).database
    if database and database != ":memory:":
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(url, connect_args={"timeout": busy}, pool_timeout=timeout, **options)

    @sa.event.listens_for(engine, "connect")
    def _pragmas(dbapi_conn: sqlite3.Connection, _record: Any) -> None:
        cursor = dbapi_conn.cursor()
        # WAL lets readers run beside the single writer; synchronous=FULL fsyncs the
        # WAL on every commit, so an acknowledged webhook survives a power cut.
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={max(1, int(busy * 1000))}")
        if own_checkpoints:
            cursor.execute("PRAGMA wal_autocheckpoint=0")
        cursor.close()

    return engine
