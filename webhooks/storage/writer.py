"""Turns for writing SQLite among the web processes of one host, without busy sleeps.

SQLite takes one writer at a time, and a writer that finds it busy waits in SQLite's
busy handler, which sleeps 1, 2, 5 ... up to 100 ms between tries. Two processes of
64 threads each writing at once made that the ack time: one process's threads handed
the lock to each other while the other's slept through the gaps (ingest p99 from
40 ms to a second). So a process's threads queue on a thread lock, and the one at the
front takes an exclusive `flock` on a file beside the database, trying every half
millisecond until its timeout. The kernel drops a flock when its process dies, so a
worker killed mid-insert cannot leave the others locked out (a semaphore shared by
the forks would stay taken). PostgreSQL needs none of this.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

POLL = 0.0005  # seconds between tries of a file lock another process holds

_threads = threading.Lock()  # one thread of this process at a time tries the file lock
_files: dict[tuple[int, str], int] = {}  # (pid, lock path) -> descriptor of this process


@contextmanager
def turn(
    database: str, timeout: float, unneeded: Callable[[], bool] = lambda: False
) -> Iterator[bool]:
    """Hold the writer turn of `database` (a file path); TimeoutError when it is not free
    within `timeout`.

    Yields True while holding it. When `unneeded()` says, once this process's threads
    let this one through, that there is nothing left to write (webhooks.storage.group:
    another thread stored its rows), yields False without waiting for other processes.
    """
    deadline = time.monotonic() + timeout
    if not _threads.acquire(timeout=timeout):
        raise TimeoutError("no SQLite writer turn within the database timeout")
    try:
        if unneeded():
            yield False
            return
        if database in ("", ":memory:"):  # one process's own database: threads only
            yield True
            return
        fd = _descriptor(database + "-writer.lock")
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise TimeoutError(
                        "no SQLite writer turn within the database timeout"
                    ) from None
                time.sleep(POLL)
        try:
            yield True
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        _threads.release()


def _descriptor(path: str) -> int:
    # Opened per process: a descriptor inherited across fork shares one lock between
    # the processes, which would let both in at once.
    key = (os.getpid(), path)
    fd = _files.get(key)
    if fd is None:
        for stale in [k for k in _files if k[0] != key[0]]:
            with contextlib.suppress(OSError):
                os.close(_files.pop(stale))
        fd = _files[key] = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    return fd
