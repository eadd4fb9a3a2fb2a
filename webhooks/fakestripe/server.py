"""The fake Stripe API on a real socket: the server, its handler, the control API."""

from __future__ import annotations

import base64
import binascii
import contextlib
import hmac
import json
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType, TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit

from webhooks.fakestripe import api
from webhooks.fakestripe.state import FakeState, Faults

DEFAULT_API_KEY = "sk_test_fake"
MAX_CONTROL_BYTES = 16 * 1024 * 1024  # fixtures are loaded through the control API
_IDLE_TIMEOUT = 60.0  # above httpx's 5 s pool expiry, so a client never reuses a closing socket


class Server(ThreadingHTTPServer):
    """A threading HTTP server that can cut its open connections when it stops."""

    allow_reuse_address = True
    daemon_threads = True

    def __init__(self, address: tuple[str, int], fake: FakeStripe) -> None:
        self.fake = fake
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, Handler)

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
        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)

    def cut_connections(self) -> None:
        """Shut every open connection, so a stopped fake answers nothing on kept-alive ones."""
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)


class Handler(BaseHTTPRequestHandler):
    """One connection: the API (GET) behind auth and faults, the control API under /_fake/."""

    server: Server
    protocol_version = "HTTP/1.1"  # keep-alive, as Stripe and httpx use it
    server_version = "FakeStripe/1"
    sys_version = ""
    timeout = _IDLE_TIMEOUT
    disable_nagle_algorithm = True  # no 40 ms Nagle/delayed-ACK stall per response

    def log_message(self, format: str, *args: Any) -> None:
        """Stay quiet: the request log is served at /_fake/requests instead."""

    def do_GET(self) -> None:
        """The API, or a control read."""
        url = urlsplit(self.path)
        if url.path.startswith("/_fake/"):
            self._send(self._control(url.path, b""))
        else:
            self._api(url.path, parse_qs(url.query, keep_blank_values=True))

    def do_POST(self) -> None:
        """Control writes (the fake's API part only reads)."""
        url = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        if not 0 <= length <= MAX_CONTROL_BYTES:
            self.close_connection = True
            self._send(api.error_reply(413, "request too large"))
            return
        body = self.rfile.read(length)
        if url.path.startswith("/_fake/"):
            self._send(self._control(url.path, body))
        else:
            self._send(api.error_reply(404, f"Unrecognized request URL (POST: {url.path})."))

    def _send(self, reply: api.Reply) -> None:
        data = json.dumps(reply.body).encode()
        self.send_response(reply.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Request-Id", f"req_fake_{time.monotonic_ns()}")
        for name, value in reply.headers:
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)

    def _authorized(self) -> bool:
        """Bearer <key>, or Basic with the key as user name (both as Stripe accepts)."""
        scheme, _, token = self.headers.get("Authorization", "").partition(" ")
        expected = self.server.fake.api_key.encode()
        if scheme.lower() == "bearer":
            return hmac.compare_digest(token.strip().encode(), expected)
        if scheme.lower() == "basic":
            try:
                user = base64.b64decode(token.strip(), validate=True).partition(b":")[0]
            except (binascii.Error, ValueError):
                return False
            return hmac.compare_digest(user, expected)
        return False

    def _api(self, path: str, query: dict[str, list[str]]) -> None:
        started = time.time()
        state = self.server.fake.state
        account = self.headers.get("Stripe-Account") or None
        entry: dict[str, Any] = {
            "method": self.command,
            "path": path,
            "query": {name: values[-1] for name, values in query.items()},
            "account": account,
            "fault": None,
        }
        faults = state.decide()
        if faults.latency_ms:
            time.sleep(faults.latency_ms / 1000)
        if faults.down:
            state.log_request({**entry, "status": None, "fault": "down"}, started)
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            return
        if faults.status is not None:
            reply = api.fault_reply(faults.status, faults.retry_after, faults.should_retry)
            entry["fault"] = "status"
        elif not self._authorized():
            reply = api.UNAUTHORIZED
        else:
            reply = api.handle(self.command, path, query, account, state)
        state.log_request({**entry, "status": reply.status}, started)
        self._send(reply)

    def _control(self, path: str, body: bytes) -> api.Reply:
        """The control API (no auth: it only ever listens where the tests run)."""
        state = self.server.fake.state
        try:
            match self.command, path.rstrip("/"):
                case "GET", "/_fake/requests":
                    return api.Reply(200, state.requests())
                case "GET", "/_fake/faults":
                    return api.Reply(200, state.faults().as_dict())
                case "POST", "/_fake/faults":
                    faults = Faults.from_json(json.loads(body or b"{}"))
                    state.set_faults(faults)
                    return api.Reply(200, faults.as_dict())
                case "POST", "/_fake/fixtures":
                    state.load(json.loads(body or b"{}"))
                    return api.Reply(200, {})
                case "POST", "/_fake/reset":
                    state.reset()
                    return api.Reply(200, {})
        except ValueError as exc:  # JSONDecodeError is a ValueError too
            return api.error_reply(400, str(exc))
        return api.error_reply(404, f"no control endpoint {self.command} {path}")


class FakeStripe:
    """A fake Stripe API (Checkout line items, customers) served from a background thread."""

    def __init__(
        self, host: str = "127.0.0.1", port: int = 0, api_key: str = DEFAULT_API_KEY
    ) -> None:
        self.host = host
        self.port = port
        self.api_key = api_key
        self.state = FakeState()
        self._server: Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The base URL, `http://host:port` (the real port once started on port 0)."""
        return f"http://{self.host}:{self.port}"

    def start(self) -> FakeStripe:
        """Bind and serve in a daemon thread; after a stop, restart on the same port."""
        if self._server is not None:
            raise RuntimeError("the fake Stripe is already running")
        server = Server((self.host, self.port), self)
        self.port = int(server.server_address[1])
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"fake-stripe-{self.port}",
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
        if thread is not None:
            thread.join(timeout=5)
        self._server = self._thread = None

    def __enter__(self) -> FakeStripe:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def add_line_items(
        self, session_id: str, items: list[dict[str, Any]], account: str | None = None
    ) -> None:
        """Set a Checkout Session's line items in `account` (None: the platform)."""
        self.state.add_line_items(session_id, items, account)

    def add_customer(self, customer: dict[str, Any], account: str | None = None) -> None:
        """Add or replace a customer in `account` (None: the platform)."""
        self.state.add_customer(customer, account)

    def set_faults(self, **faults: Any) -> None:
        """Replace the faults: latency_ms, status, retry_after, should_retry, down, times."""
        self.state.set_faults(Faults.from_json(faults))

    def requests(self) -> list[dict[str, Any]]:
        """The API request log, oldest first (control requests are not logged)."""
        return self.state.requests()

    def clear_requests(self) -> None:
        """Forget the request log, keep objects and faults."""
        self.state.clear_requests()

    def reset(self) -> None:
        """Forget objects, requests and faults."""
        self.state.reset()


def serve_until_signalled(fake: FakeStripe, announce: Callable[[str], None]) -> None:
    """Run `fake` in the foreground until SIGTERM or SIGINT, announcing its URL once."""
    stop = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    # Installed before the announcement, so a parent that signals right after reading it is heard.
    previous = {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        fake.start()
        announce(f"fake Stripe listening on {fake.url} (api key {fake.api_key})")
        while not stop.wait(0.5):
            pass
    finally:
        fake.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
