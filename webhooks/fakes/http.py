"""What the fakes (Customer.io, Stripe) share: a stdlib server in a thread, and its lifecycle."""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import sys
import threading
from collections.abc import Callable, Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType, TracebackType
from typing import Any, Self


class TrackingServer(ThreadingHTTPServer):
    """A threading HTTP server that can cut its open connections when it stops."""

    allow_reuse_address = True
    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler]) -> None:
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        """Track the connection, then serve it in a thread."""
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        """Forget the connection, then close it."""
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Stay quiet when a client goes away mid-request; print a traceback for anything else."""
        if not isinstance(sys.exc_info()[1], OSError):  # BrokenPipe, ConnectionReset, timeouts
            super().handle_error(request, client_address)

    def cut_connections(self) -> None:
        """Shut every open connection, so a stopped fake answers nothing on kept-alive ones."""
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):  # already closed by the peer
                connection.shutdown(socket.SHUT_RDWR)


def send_json(
    handler: BaseHTTPRequestHandler, status: int, body: Any, headers: Iterable[tuple[str, str]]
) -> None:
    """Write one JSON response on `handler`'s connection, saying so when it will close."""
    data = json.dumps(body).encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(data)))
    for name, value in headers:
        handler.send_header(name, value)
    if handler.close_connection:
        handler.send_header("Connection", "close")
    handler.end_headers()
    handler.wfile.write(data)


class BackgroundFake:
    """A fake served from a daemon thread: `start()`/`stop()`, or a `with` block.

    A subclass names itself (`label`, `thread_prefix`), binds its own server in `_bind()` and may
    let go of anything it holds in `_after_stop()`.
    """

    label = "fake"  # as in "the fake Stripe is already running"
    thread_prefix = "fake"  # the thread is `<prefix>-<port>`

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self._server: TrackingServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The base URL, `http://host:port` (the real port once started on port 0)."""
        return f"http://{self.host}:{self.port}"

    def _bind(self) -> TrackingServer:
        """A new server bound to `(host, port)`, not yet serving."""
        raise NotImplementedError

    def _after_stop(self) -> None:
        """Called once the server is closed and its connections cut; nothing by default."""

    def start(self) -> Self:
        """Bind and serve in a daemon thread; after a stop, restart on the same port."""
        if self._server is not None:
            raise RuntimeError(f"the {self.label} is already running")
        server = self._bind()
        # Keep the real port, so a stop() then start() comes back where clients expect it.
        self.port = int(server.server_address[1])
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},  # the longest stop() waits for the loop
            name=f"{self.thread_prefix}-{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening and cut open connections."""
        server, thread = self._server, self._thread
        if server is None:
            return
        server.shutdown()
        server.server_close()
        server.cut_connections()
        self._after_stop()
        if thread is not None:
            thread.join(timeout=5)
        self._server = self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def serve_until_signalled(fake: BackgroundFake, on_started: Callable[[], None]) -> None:
    """Run `fake` in the foreground until SIGTERM or SIGINT; call `on_started` once it listens."""
    stop = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    # Installed before the announcement, so a parent that signals right after reading it is heard.
    previous = {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        fake.start()
        on_started()
        while not stop.wait(0.5):
            pass
    finally:
        fake.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
