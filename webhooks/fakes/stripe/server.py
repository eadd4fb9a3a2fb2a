"""The fake Stripe API on a real socket: the server, its handler, the control API."""

from __future__ import annotations

import base64
import binascii
import contextlib
import hmac
import json
import socket
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlsplit

from webhooks.fakes import http as fakehttp
from webhooks.fakes.http import BackgroundFake, TrackingServer, send_json
from webhooks.fakes.stripe import api
from webhooks.fakes.stripe.state import FakeState, Faults

DEFAULT_API_KEY = "sk_test_fake"
MAX_CONTROL_BYTES = 16 * 1024 * 1024  # fixtures are loaded through the control API
_IDLE_TIMEOUT = 60.0  # above httpx's 5 s pool expiry, so a client never reuses a closing socket


class Server(TrackingServer):
    """The fake Stripe's server: cuts its open connections when it stops."""

    def __init__(self, address: tuple[str, int], fake: FakeStripe) -> None:
        self.fake = fake
        super().__init__(address, Handler)


class Handler(BaseHTTPRequestHandler):
    """One connection: the API behind auth and faults, the control API under /_fake/."""

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
        """API writes (webhook endpoints, form-encoded) and control writes."""
        url = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        if not 0 <= length <= MAX_CONTROL_BYTES:
            self.close_connection = True
            self._send(api.error_reply(413, "request too large"))
            return
        body = self.rfile.read(length)
        if url.path.startswith("/_fake/"):
            self._send(self._control(url.path, body))
        else:  # Stripe's API writes are form-encoded
            self._api(url.path, parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True))

    def _send(self, reply: api.Reply) -> None:
        request_id = ("Request-Id", f"req_fake_{time.monotonic_ns()}")
        send_json(self, reply.status, reply.body, [request_id, *reply.headers])

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


class FakeStripe(BackgroundFake):
    """A fake Stripe API (Checkout line items, customers) served from a background thread."""

    label = "fake Stripe"
    thread_prefix = "fake-stripe"

    def __init__(
        self, host: str = "127.0.0.1", port: int = 0, api_key: str = DEFAULT_API_KEY
    ) -> None:
        super().__init__(host, port)
        self.api_key = api_key
        self.state = FakeState()

    def _bind(self) -> Server:
        return Server((self.host, self.port), self)

    def add_line_items(
        self, session_id: str, items: list[dict[str, Any]], account: str | None = None
    ) -> None:
        """Set a Checkout Session's line items in `account` (None: the platform)."""
        self.state.add_line_items(session_id, items, account)

    def add_customer(self, customer: dict[str, Any], account: str | None = None) -> None:
        """Add or replace a customer in `account` (None: the platform)."""
        self.state.add_customer(customer, account)

    def add_invoice_payment(self, payment: dict[str, Any], account: str | None = None) -> None:
        """Add or replace an invoice payment in `account` (None: the platform)."""
        self.state.add_invoice_payment(payment, account)

    def add_event(self, event: dict[str, Any], account: str | None = None) -> None:
        """Add or replace an event in `account`'s Events API (None: the platform)."""
        self.state.add_event(event, account)

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
    fakehttp.serve_until_signalled(
        fake, lambda: announce(f"fake Stripe listening on {fake.url} (api key {fake.api_key})")
    )
