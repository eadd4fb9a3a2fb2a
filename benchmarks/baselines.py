"""Baseline WSGI apps that benchmarks/ingest.py measures the real service against.

* `bare_app`: one POST route that answers 200 without looking at the request; the
  ceiling of Flask under gunicorn on this machine.
* `minimal_app`: the least a correct store-then-ack receiver must do: check the Stripe
  HMAC with the stdlib, then insert the raw body with the plain DB-API driver (sqlite3,
  or psycopg on PostgreSQL), deduplicated by a unique event id. It is the floor the
  real service is compared to; whatever the real service spends above it is framework
  and library overhead.

Both run under gunicorn (`gunicorn -k sync baselines:bare_app`), so they read their
configuration from the environment: BASELINE_STRIPE_SECRET and BASELINE_DATABASE_URL
(`sqlite:////abs/path.db` or a libpq `postgresql://` URI). Call `prepare_minimal_store`
once before starting gunicorn: creating the table in every worker would race.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import multiprocessing
import os
import sqlite3
import threading
import time
from typing import Any

import psycopg
from flask import Flask, Response, jsonify, request

WEBHOOK_PATH = "/webhooks/stripe"
SECRET_ENV = "BASELINE_STRIPE_SECRET"
DATABASE_ENV = "BASELINE_DATABASE_URL"
SQLITE_PREFIX = "sqlite:///"
# The same bounds the real service applies (database_timeout, Stripe tolerance).
BUSY_TIMEOUT_MS = 2000
TOLERANCE_SECONDS = 300

_SQLITE_DDL = """
CREATE TABLE IF NOT EXISTS baseline_inbox (
    id INTEGER PRIMARY KEY,
    event_id TEXT NOT NULL UNIQUE,
    body BLOB NOT NULL,
    received_at REAL NOT NULL
)
"""
_POSTGRES_DDL = """
CREATE TABLE IF NOT EXISTS baseline_inbox (
    id BIGSERIAL PRIMARY KEY,
    event_id TEXT NOT NULL UNIQUE,
    body BYTEA NOT NULL,
    received_at TIMESTAMPTZ NOT NULL DEFAULT now()
)
"""
_SQLITE_INSERT = (
    "INSERT INTO baseline_inbox (event_id, body, received_at) VALUES (?, ?, ?) "
    "ON CONFLICT (event_id) DO NOTHING"
)
_POSTGRES_INSERT = (
    "INSERT INTO baseline_inbox (event_id, body) VALUES (%s, %s) ON CONFLICT (event_id) DO NOTHING"
)

bare_app = Flask("baseline_bare")
minimal_app = Flask("baseline_minimal")

# Connections are opened lazily so they are created after the fork (a connection
# inherited from the master would be shared between processes). PostgreSQL: one per
# thread. SQLite: one per process, writers taking turns on a semaphore shared by the
# forks (gunicorn --preload imports this module in the master), as the product's web
# processes do (webhooks/storage/writer.py), since SQLite's busy handler sleeps.
_local = threading.local()
_sqlite_turn = multiprocessing.get_context("fork").Lock()
_sqlite_connection: sqlite3.Connection | None = None


@bare_app.post(WEBHOOK_PATH)
def bare_receive() -> Response:
    """Acknowledge without reading, verifying or storing anything."""
    return jsonify(status="accepted")


@minimal_app.post(WEBHOOK_PATH)
def minimal_receive() -> Response:
    """Verify the Stripe signature on the raw bytes, store the body, then acknowledge."""
    body = request.get_data(cache=False)
    if not _signature_ok(body, request.headers.get("Stripe-Signature", "")):
        response = jsonify(error="signature_mismatch")
        response.status_code = 400
        return response
    event_id = json.loads(body)["id"]
    is_new = _insert(event_id, body)
    return jsonify(status="accepted" if is_new else "duplicate")


def _signature_ok(body: bytes, header: str) -> bool:
    """Stripe's scheme: v1 = hex HMAC-SHA256 of f"{t}.{body}", t within the tolerance."""
    timestamp = ""
    candidates: list[str] = []
    for item in header.split(","):
        key, _, value = item.strip().partition("=")
        if key == "t":
            timestamp = value
        elif key == "v1":
            candidates.append(value)
    if not timestamp.isdigit() or abs(time.time() - int(timestamp)) > TOLERANCE_SECONDS:
        return False
    secret = os.environ[SECRET_ENV].encode()
    expected = hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return any(hmac.compare_digest(expected, candidate) for candidate in candidates)


def _insert(event_id: str, body: bytes) -> bool:
    """One committed INSERT ... ON CONFLICT DO NOTHING; True when the row is new."""
    # One statement in autocommit is its own atomic transaction: the fewest round
    # trips and lock hold time any store-then-ack receiver can have (the product's
    # web engine runs in autocommit too).
    url = os.environ[DATABASE_ENV]
    if url.startswith(SQLITE_PREFIX):
        global _sqlite_connection
        with _sqlite_turn:
            if _sqlite_connection is None:
                _sqlite_connection = connect(url)  # type: ignore[assignment]
            assert _sqlite_connection is not None
            cursor = _sqlite_connection.execute(_SQLITE_INSERT, (event_id, body, time.time()))
            return cursor.rowcount == 1
    conn = getattr(_local, "connection", None)
    if conn is None:
        conn = _local.connection = connect(url)
    return bool(conn.execute(_POSTGRES_INSERT, (event_id, body)).rowcount == 1)


def connect(url: str) -> sqlite3.Connection | psycopg.Connection[Any]:
    """Open the baseline database with the same durability settings as the product."""
    if url.startswith(SQLITE_PREFIX):
        conn = sqlite3.connect(
            url.removeprefix(SQLITE_PREFIX),
            timeout=BUSY_TIMEOUT_MS / 1000,
            isolation_level=None,  # autocommit
            check_same_thread=False,  # used by one thread at a time, under a lock
        )
        # As webhooks.storage.db: WAL, an fsync per commit, bounded lock waits.
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        return conn
    return psycopg.connect(url, autocommit=True)


def prepare_minimal_store(url: str) -> None:
    """Create the baseline table (once, before gunicorn forks its workers)."""
    conn = connect(url)
    try:
        ddl = _SQLITE_DDL if isinstance(conn, sqlite3.Connection) else _POSTGRES_DDL
        conn.execute(ddl)
        conn.commit()
    finally:
        conn.close()
