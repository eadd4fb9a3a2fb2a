"""Waking an idle worker when there is work for it, instead of it polling hard.

Two topics. INBOX: the web processes wake the mapping workers after storing a new
delivery. OUTBOX: a worker that only maps (WORKER_STAGE=map) wakes the workers that
only send after it queued operations (a worker running both stages tells its own
senders in process). Either side wakes at most once per WAKE_EVERY (a woken worker
gathers that long before it looks, so what was stored meanwhile is taken in the same
pass). PostgreSQL: a NOTIFY on a channel named after the topic and the schema, sent in
its own autocommit statement, never inside the insert's transaction (a notifying
transaction holds a cluster-wide lock through its commit, so a trigger made every
ingest commit wait for the others); the worker LISTENs on a connection of its own, on
any host. SQLite: a datagram to each listening worker's socket in `<database>.wake/`
(the outbox topic: `<database>.wake-outbox/`), on the same host. A lost wake-up costs
only latency: workers still poll every WORKER_POLL_INTERVAL (and that is how backfills
and replays, which store from the command line, are found).
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any, Protocol

import sqlalchemy as sa
import structlog
from sqlalchemy.engine import Engine

log = structlog.get_logger("webhooks.storage.wake")
INBOX = "inbox"  # a delivery was stored: for the workers that map
OUTBOX = "outbox"  # operations were queued: for the workers that only send
REFRESH_EVERY = 1.0  # seconds between fresh listings of the worker sockets
SLICE = 0.5  # seconds: a LISTEN wait looks for interrupt() this often
WAKE_EVERY = 0.02  # seconds: a process wakes the workers of a topic at most this often


def channel(schema: str, topic: str = INBOX) -> str:
    """The NOTIFY channel of `topic` in `schema`."""
    return f"webhooks_{topic}:{schema}"


def socket_dir(engine: Engine, topic: str = INBOX) -> Path | None:
    """`<database>.wake/` beside a SQLite file (the outbox topic's: `.wake-outbox/`);
    None for PostgreSQL or in-memory SQLite."""
    database = engine.url.database
    if engine.dialect.name != "sqlite" or not database or database == ":memory:":
        return None
    return Path(f"{database}.wake" if topic == INBOX else f"{database}.wake-{topic}")


class Listener(Protocol):
    """What the worker waits on between passes."""

    def listen(self) -> None:
        """Start listening now, before the first look at the inbox: a wake-up sent
        between that look and the first wait would otherwise be lost."""
        ...

    def wait(self, timeout: float) -> bool:
        """Block until woken (True) or `timeout` seconds passed (False)."""
        ...

    def interrupt(self) -> None:
        """End a wait in progress now (stop; safe from a signal handler)."""
        ...

    def close(self) -> None:
        """Stop listening and let go of the socket or connection."""
        ...


# A socket path longer than this does not fit sockaddr_un (108 bytes on Linux, 104 on
# macOS, with the terminating NUL).
MAX_SOCKET_PATH = 100


def _abstract(directory: Path, marker: str) -> str:
    """The Linux abstract socket of `marker` in `directory`, named after the directory's
    identity (device and inode: the same for every process, however it spells the path)."""
    info = directory.stat()
    return f"\0webhooks-wake-{info.st_dev:x}-{info.st_ino:x}-{marker}"


class SocketListener:
    """A worker's datagram socket, listed in the SQLite database's wake directory.

    The socket is the listed file itself; where that path is too long for a socket (a
    deep data or temporary directory), it is an abstract socket and the listed file an
    empty marker naming it (Linux only; elsewhere such a worker polls).
    """

    def __init__(self, directory: Path) -> None:
        directory.mkdir(mode=0o700, exist_ok=True)
        self.path = directory / f"{os.getpid()}-{threading.get_ident():x}.sock"
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()  # left by a killed worker of the same pid
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        if len(str(self.path)) <= MAX_SOCKET_PATH:
            self.address = str(self.path)
            self._sock.bind(self.address)
        else:
            self.address = _abstract(directory, self.path.name)
            try:
                self._sock.bind(self.address)
            except OSError:
                self._sock.close()
                raise
            self.path.touch()  # listed only once it can be woken

    def listen(self) -> None:
        """Bound since construction: nothing to do."""

    def wait(self, timeout: float) -> bool:
        """Block until a datagram arrives or `timeout` passes; drain what queued up."""
        self._sock.settimeout(timeout)
        try:
            self._sock.recv(16)
        except OSError:  # timed out (TimeoutError is one), or closed by stop
            return False
        self._sock.setblocking(False)
        with contextlib.suppress(OSError):
            while self._sock.recv(16):
                pass
        return True

    def interrupt(self) -> None:
        """A datagram to itself: the wait in progress returns."""
        with contextlib.suppress(OSError):
            self._sock.sendto(b"0", self.address)

    def close(self) -> None:
        """Close and remove the socket."""
        self._sock.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


class NotifyListener:
    """A PostgreSQL connection of its own, LISTENing on a topic's channel."""

    def __init__(self, engine: Engine, topic: str = INBOX) -> None:
        self._engine = engine
        self._topic = topic
        self._conn: Any = None
        self._interrupted = threading.Event()

    def _connect(self) -> Any:
        import psycopg
        import psycopg.sql

        with self._engine.connect() as pooled:
            schema = pooled.execute(sa.text("SELECT current_schema()")).scalar_one()
        # The engine's own URL (its options, e.g. a search_path, included) for psycopg.
        url = self._engine.url.set(drivername="postgresql")
        listening = psycopg.connect(
            url.render_as_string(hide_password=False), autocommit=True, connect_timeout=5
        )
        name = channel(str(schema), self._topic)
        listening.execute(psycopg.sql.SQL("LISTEN {}").format(psycopg.sql.Identifier(name)))
        return listening

    def listen(self) -> None:
        """Connect and LISTEN now; if the database is away, wait() tries again."""
        try:
            if self._conn is None or self._conn.closed:
                self._conn = self._connect()
        except Exception as exc:
            log.warning("wake_listener_failed", error=type(exc).__name__)
            self.close()

    def wait(self, timeout: float) -> bool:
        """Block until a NOTIFY arrives or `timeout` passes; reconnect after a failure."""
        try:
            if self._conn is None or self._conn.closed:
                self._conn = self._connect()
            deadline = time.monotonic() + timeout
            # In slices, so interrupt() (stop) is heard within one.
            while not self._interrupted.is_set():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                for _ in self._conn.notifies(timeout=min(left, SLICE), stop_after=1):
                    return True
            return True
        except Exception as exc:  # the database away: poll until it is back
            log.warning("wake_listener_failed", error=type(exc).__name__)
            self.close()
            time.sleep(min(timeout, 1.0))
            return False

    def interrupt(self) -> None:
        """The wait in progress returns within a slice."""
        self._interrupted.set()

    def close(self) -> None:
        """Close the listening connection."""
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None


def listener(engine: Engine, topic: str = INBOX) -> Listener | None:
    """The way this worker can be woken about `topic` on this database, or None (poll
    only)."""
    if engine.dialect.name == "postgresql":
        return NotifyListener(engine, topic)
    directory = socket_dir(engine, topic)
    if directory is None:
        return None
    try:
        return SocketListener(directory)
    except OSError as exc:  # a read-only directory, a path too long for a socket
        log.warning("wake_socket_unavailable", error=type(exc).__name__)
        return None


class Waker:
    """Wakes the workers listening on `topic` (see the module)."""

    def __init__(self, engine: Engine, topic: str = INBOX) -> None:
        self._engine = engine
        self._topic = topic
        self._directory = socket_dir(engine, topic)
        self._channel: str | None = None
        self._sock: socket.socket | None = None
        self._targets: list[str] = []
        self._listed = float("-inf")
        self._woken = float("-inf")
        self._lock = threading.Lock()

    def wake(self) -> None:
        """Tell the workers, unless this process did in the last WAKE_EVERY; never raises."""
        now = time.monotonic()
        with self._lock:
            if now - self._woken < WAKE_EVERY:
                return
            self._woken = now
        try:
            if self._engine.dialect.name == "postgresql":
                self._notify()
            elif self._directory is not None:
                self._datagrams(now)
        except Exception as exc:  # the database away: the poll finds the delivery
            log.warning("wake_failed", error=type(exc).__name__)

    def _notify(self) -> None:
        with self._engine.connect() as conn:
            if self._channel is None:
                schema = conn.execute(sa.text("SELECT current_schema()")).scalar_one()
                self._channel = channel(str(schema), self._topic)
            conn.execute(sa.text("SELECT pg_notify(:channel, '')"), {"channel": self._channel})
            conn.commit()

    def _datagrams(self, now: float) -> None:
        assert self._directory is not None
        with self._lock:
            if now - self._listed >= REFRESH_EVERY:
                self._listed = now
                try:
                    self._targets = [
                        str(p) if p.is_socket() else _abstract(self._directory, p.name)
                        for p in self._directory.glob("*.sock")
                    ]
                except OSError:
                    self._targets = []
            targets = list(self._targets)
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                self._sock.setblocking(False)
            sock = self._sock
        for target in targets:
            # A full queue (the worker is busy: it will look anyway), a worker gone.
            with contextlib.suppress(OSError):
                sock.sendto(b"1", target)
