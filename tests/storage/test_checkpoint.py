"""The worker's WAL checkpoints run on a thread, not inside its commits (SQLite)."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path

import sqlalchemy as sa
import structlog
from sqlalchemy.engine import Engine

from webhooks.storage import checkpoint
from webhooks.storage.db import create_db_engine

ROW = "x" * 3000  # about one page a row


def _autocheckpoint(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar_one())


def _write_pages(engine: Engine, rows: int) -> None:
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE IF NOT EXISTS filler (body TEXT)")
    for _ in range(rows // 100):
        with engine.begin() as conn:
            conn.exec_driver_sql("INSERT INTO filler VALUES (?)", [(ROW,)] * 100)


def _wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


def test_an_engine_that_owns_its_checkpoints_never_checkpoints_in_a_commit(
    sqlite_url: str,
) -> None:
    own = create_db_engine(sqlite_url, own_checkpoints=True)
    default = create_db_engine(sqlite_url)
    try:
        assert _autocheckpoint(own) == 0
        # Web processes keep SQLite's own checkpoint: the fallback with no worker.
        assert _autocheckpoint(default) == 1000
        # Without the thread nothing is copied back: 2,000 pages stay in the log,
        # past the 1,000 at which a default connection's commit would have copied.
        _write_pages(own, 2000)
        wal = Path(f"{sa.make_url(sqlite_url).database}-wal")
        assert wal.stat().st_size > 2000 * 4096
    finally:
        own.dispose()
        default.dispose()


def test_the_thread_copies_the_log_back_while_writers_commit(sqlite_url: str) -> None:
    engine = create_db_engine(sqlite_url, own_checkpoints=True)
    try:
        with checkpoint.background(engine, every=0.05) as checkpointer:
            assert checkpointer is not None
            _write_pages(engine, 1500)
            # Caught up: every frame the writers committed is in the database file.
            assert _wait_for(lambda: checkpointer.last[0] > 0)
            assert _wait_for(lambda: checkpointer.last[0] == checkpointer.last[1])
            assert checkpointer.failures == 0
        with engine.connect() as conn:
            rows = conn.exec_driver_sql("SELECT count(*) FROM filler").scalar_one()
        assert rows == 1500
    finally:
        engine.dispose()


def test_a_database_that_goes_away_is_logged_once_and_checkpointed_again_after(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "db"
    engine = create_db_engine(f"sqlite:///{folder / 'gone.db'}", own_checkpoints=True)
    shutil.rmtree(folder)  # the file cannot be opened: every pass fails
    try:
        with (
            structlog.testing.capture_logs() as logs,
            checkpoint.background(engine, every=0.02) as checkpointer,
        ):
            assert checkpointer is not None
            assert _wait_for(lambda: checkpointer.failures >= 3)
            folder.mkdir()
            assert _wait_for(lambda: checkpointer.passes >= 1)
    finally:
        engine.dispose()
    events = [entry["event"] for entry in logs]
    assert events.count("checkpoint_failed") == 1
    assert "checkpoint_recovered" in events
    failed = next(entry for entry in logs if entry["event"] == "checkpoint_failed")
    assert failed["error"] == "OperationalError"


def test_postgresql_checkpoints_by_itself(postgres_url: str) -> None:
    engine = create_db_engine(postgres_url, own_checkpoints=True)
    try:
        with checkpoint.background(engine) as checkpointer:
            assert checkpointer is None
    finally:
        engine.dispose()
