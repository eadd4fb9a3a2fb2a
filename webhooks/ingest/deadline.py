"""A deadline for receiving a request body, enforced on the socket itself.

A blocking read cannot be given an overall deadline: a socket timeout applies to each
recv(), and a client trickling a byte a second satisfies every one of them. So one
watchdog thread per web process holds the pending deadlines and, when one passes,
shuts the read side of that socket: the blocked recv() returns end-of-file at once,
the read fails as a short body, and the request path answers 408 on the still-open
write side. The thread looks every LOOK_EVERY, or at the nearest deadline if that
comes sooner; a request that finishes first only marks its entry done, cleared away
at the next look.
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
from dataclasses import dataclass

LOOK_EVERY = 1.0  # seconds between the watchdog's looks when no deadline comes sooner


@dataclass(eq=False)
class Watch:
    """One request's deadline; `expired` says the watchdog cut its socket."""

    deadline: float
    sock: socket.socket | None
    done: bool = False
    expired: bool = False


class BodyDeadlines:
    """Pending body deadlines of one process and the thread that enforces them."""

    def __init__(self) -> None:
        # (deadline, sequence, watch): compared in C, never by the Watch itself.
        self._heap: list[tuple[float, int, Watch]] = []
        self._cond = threading.Condition()
        self._seq = itertools.count()
        self._thread: threading.Thread | None = None
        self._wake_at = 0.0  # when the watchdog looks next, unless woken sooner

    @contextmanager
    def watch(self, sock: socket.socket | None, seconds: float) -> Iterator[Watch]:
        """Cut `sock`'s read side if the block has not finished within `seconds`."""
        entry = Watch(time.monotonic() + seconds, sock)
        if sock is None:  # no real socket (a test client): nothing to cut
            yield entry
            return
        with self._cond:
            self._ensure_thread()
            heapq.heappush(self._heap, (entry.deadline, next(self._seq), entry))
            # The watchdog looks at least every LOOK_EVERY, and a body's deadline is
            # later than that (BODY_TIMEOUT_SECONDS): it is woken only for a shorter
            # one. (Waking it on every request cost a fifth of the web process's time
            # in thread switches.)
            if entry.deadline < self._wake_at:
                self._wake_at = entry.deadline
                self._cond.notify()
        try:
            yield entry
        finally:
            with self._cond:
                entry.done = True
                entry.sock = None  # the heap keeps finished entries until the next look

    def _ensure_thread(self) -> None:
        # Started on first use, so it lives in the gunicorn worker that serves requests,
        # never in a master that forks (a thread does not survive fork).
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._run, name="body-deadlines", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        with self._cond:
            while True:
                now = time.monotonic()
                while self._heap and (self._heap[0][2].done or self._heap[0][0] <= now):
                    first = heapq.heappop(self._heap)[2]
                    if not first.done:  # its deadline passed with the body unread
                        first.expired = True
                        _cut(first.sock)
                # Never asleep for long: a request whose deadline comes after the next
                # look needs no wake-up call (see watch).
                self._wake_at = now + LOOK_EVERY
                if self._heap:
                    self._wake_at = min(self._wake_at, self._heap[0][0])
                self._cond.wait(self._wake_at - now)


def _cut(sock: socket.socket | None) -> None:
    if sock is None:
        return
    with contextlib.suppress(OSError):  # already closed by the client or the server
        # The plain socket's shutdown even under TLS: ssl.SSLSocket.shutdown would also
        # unwrap it, and the 408 would then go out unencrypted.
        socket.socket.shutdown(sock, socket.SHUT_RD)


# One per process: every request thread of a gunicorn worker shares it.
deadlines = BodyDeadlines()
