"""Turns for writing SQLite among the web processes of one server, in arrival order.

SQLite takes one writer at a time, and a writer that finds it busy waits in SQLite's
busy handler, which sleeps 1, 2, 5 ... up to 100 ms between tries. Two processes of
64 threads each writing at once made that the ack time: one process's threads handed
the lock to each other while the other's slept through the gaps (ingest p99 from
40 ms to a second). A semaphore shared by the server's forks queues writers instead,
and wakes the next as soon as one finishes. gunicorn's master creates it before it
forks (`share`); elsewhere (the Flask test client, one process) a thread lock does.
PostgreSQL needs none of this: concurrent inserts do not block each other.
"""

from __future__ import annotations

import multiprocessing
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

_turn: Any = threading.Lock()


def share() -> None:
    """Make the turns span processes forked after this call (gunicorn's master)."""
    global _turn
    _turn = multiprocessing.get_context("fork").Lock()


@contextmanager
def turn(timeout: float) -> Iterator[None]:
    """Hold the one writer turn; TimeoutError when it is not free within `timeout`."""
    if not _turn.acquire(timeout=timeout):
        raise TimeoutError("no SQLite writer turn within the database timeout")
    try:
        yield
    finally:
        _turn.release()
