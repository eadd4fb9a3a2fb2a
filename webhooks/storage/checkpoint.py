"""SQLite: the write-ahead log copied back into the database on a thread of its own.

By default SQLite checkpoints inside the commit that takes the WAL past 1,000 pages:
that one commit copies every page back and waits for two fsyncs. In stage 1's
benchmark those commits were 9 % of its wall time, spent by the worker's only mapping
thread. The worker turns the automatic checkpoint off on its own connections
(`create_db_engine(..., own_checkpoints=True)`) and runs `background(engine)`: a
thread that asks for a PASSIVE checkpoint every EVERY seconds. A passive checkpoint
never waits for a writer or a reader, and Python's sqlite3 releases the GIL while it
copies, so the copying and the fsyncs overlap the mapping instead of interrupting it.

Web processes keep SQLite's automatic checkpoint: it is the fallback should no worker
run, and they seldom reach it while this thread keeps the log short (a writer starts
the WAL over once everything in it has been copied back). Durability is unchanged: a
commit is durable by the WAL's own sync (`PRAGMA synchronous`); a checkpoint only
moves committed pages, syncing the WAL before it copies and the database after.

PostgreSQL checkpoints by itself: `background` does nothing there.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import structlog
from sqlalchemy.engine import Engine
from sqlalchemy.pool import PoolProxiedConnection

log = structlog.get_logger("webhooks.storage.checkpoint")

# Seconds between checkpoints. At stage 1's rate on SQLite (a page or so a row) the
# log grows by a few hundred pages in that time; each checkpoint that copies anything
# costs two fsyncs, a handful a second at most, and nothing when idle.
EVERY = 0.2


@contextlib.contextmanager
def background(engine: Engine, every: float = EVERY) -> Iterator[Checkpointer | None]:
    """Checkpoint `engine`'s SQLite database on a thread while the block runs."""
    if engine.dialect.name != "sqlite":
        yield None
        return
    checkpointer = Checkpointer(engine, every)
    checkpointer.start()
    try:
        yield checkpointer
    finally:
        checkpointer.stop()


class Checkpointer:
    """A daemon thread with one connection of its own, checkpointing until stop()."""

    def __init__(self, engine: Engine, every: float = EVERY) -> None:
        self._engine = engine
        self._every = every
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="wal-checkpoint", daemon=True)
        self.passes = 0  # checkpoints that ran (tests and benchmarks read these)
        self.failures = 0
        self.last: tuple[int, int] = (0, 0)  # frames in the log, frames copied back

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop after the checkpoint in hand; one last one leaves the log short."""
        self._stopping.set()
        self._thread.join()

    def _run(self) -> None:
        connection: PoolProxiedConnection | None = None
        failing = False
        while True:
            stopping = self._stopping.wait(self._every)
            try:
                if connection is None:
                    connection = self._engine.raw_connection()
                self.last = checkpoint(connection)
            except Exception as exc:  # the database away or locked: try again later
                self.failures += 1
                if not failing:  # once per episode, not five lines a second
                    log.warning("checkpoint_failed", error=type(exc).__name__)
                failing = True
                if connection is not None:
                    with contextlib.suppress(Exception):
                        connection.invalidate()  # a fresh one next time
                connection = None
            else:
                if failing:
                    log.info("checkpoint_recovered")
                failing = False
                self.passes += 1
            if stopping:
                break
        if connection is not None:
            with contextlib.suppress(Exception):
                connection.close()


def checkpoint(connection: PoolProxiedConnection) -> tuple[int, int]:
    """One PASSIVE checkpoint: the frames in the log and how many of them are now
    copied back into the database (equal once it has caught up)."""
    cursor = connection.cursor()
    try:
        cursor.execute("PRAGMA wal_checkpoint(PASSIVE)")
        row = cursor.fetchone()
    finally:
        cursor.close()
    # (busy, frames in the log, frames checkpointed); -1s when not in WAL mode.
    return (int(row[1]), int(row[2])) if row else (0, 0)
