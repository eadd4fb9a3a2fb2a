"""A deadline for receiving a request body, enforced on the socket itself.

A blocking read cannot be given an overall deadline: a socket timeout applies to each
recv(), and a client trickling a byte a second satisfies every one of them. So one
watchdog thread per web process holds the pending deadlines and, when one passes,
shuts the read side of that socket: the blocked recv() returns end-of-file at once,
the read fails as a short body, and the request path answers 408 on the still-open
write side. The thread sleeps until the nearest deadline; a request that finishes
first only marks its entry done.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field


@dataclass(order=True)
class Watch:
    """One request's deadline; `expired` says the watchdog cut its socket."""

    deadline: float
    seq: int
    sock: socket.socket | None = field(compare=False)
    done: bool = field(default=False, compare=False)
    expired: bool = field(default=False, compare=False)


class BodyDeadlines:
    """Pending body deadlines of one process and the thread that enforces them."""

    def __init__(self) -> None:
        self._heap: list[Watch] = []
        self._cond = threading.Condition()
        self._seq = itertools.count()
        self._thread: threading.Thread | None = None

    @contextmanager
    def watch(self, sock: socket.socket | None, seconds: float) -> Iterator[Watch]:
        """Cut `sock`'s read side if the block has not finished within `seconds`."""
        entry = Watch(time.monotonic() + seconds, next(self._seq), sock)
        if sock is None:  # no real socket (a test client): nothing to cut
            yield entry
            return
        with self._cond:
            self._ensure_thread()
            heapq.heappush(self._heap, entry)
            if self._heap[0] is entry:
                self._cond.notify()
        try:
            yield entry
        finally:
            with self._cond:
                entry.done = True

    def _ensure_thread(self) -> None:
        # Started on first use, so it lives in the gunicorn worker that serves requests,
        # never in a master that forks (a thread does not survive fork).
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._run, name="body-deadlines", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        with self._cond:
            while True:
                while self._heap and self._heap[0].done:
                    heapq.heappop(self._heap)
                if not self._heap:
                    self._cond.wait()
                    continue
                first = self._heap[0]
                remaining = first.deadline - time.monotonic()
                if remaining > 0:
                    self._cond.wait(remaining)
                    continue
                heapq.heappop(self._heap)
                first.expired = True
                _cut(first.sock)


def _cut(sock: socket.socket | None) -> None:
    if sock is None:
        return
    with contextlib.suppress(OSError):  # already closed by the client or the server
        # The plain socket's shutdown even under TLS: ssl.SSLSocket.shutdown would also
        # unwrap it, and the 408 would then go out unencrypted.
        socket.socket.shutdown(sock, socket.SHUT_RD)


# One per process: every request thread of a gunicorn worker shares it.
deadlines = BodyDeadlines()
