"""The HTTP layer of the fake Customer.io: the server, its handler, faults and the control API."""

from __future__ import annotations

import base64
import binascii
import contextlib
import hmac
import json
import socket
import time
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from webhooks.fakes.customerio import api
from webhooks.fakes.customerio.state import Faults
from webhooks.fakes.customerio.validation import MAX_REQUEST_BYTES
from webhooks.fakes.http import TrackingServer, send_json

if TYPE_CHECKING:
    from webhooks.fakes.customerio.server import FakeCustomerIO

# An oversized body up to this size is read and answered 413; a bigger one just closes the socket.
_DRAIN_LIMIT = 16 * 1024 * 1024
# Idle keep-alive connections close after this; above httpx's 5 s pool expiry, so a client never
# reuses a connection the fake is closing.
_IDLE_TIMEOUT = 60.0
_TOO_LARGE = api.error_reply(413, "request entity too large")


class _BodyTooLarge(Exception):
    pass


class Server(TrackingServer):
    """The fake Customer.io's server: cuts its open connections when it stops."""

    request_queue_size = 128  # benchmarks open many connections at once

    def __init__(self, address: tuple[str, int], fake: FakeCustomerIO) -> None:
        self.fake = fake
        super().__init__(address, Handler)


class Handler(BaseHTTPRequestHandler):
    """One connection: the Track API behind the faults, and the control API under /_fake/."""

    server: Server
    protocol_version = "HTTP/1.1"  # keep-alive, as the real API and httpx use it
    server_version = "FakeCustomerIO/1"
    sys_version = ""
    timeout = _IDLE_TIMEOUT
    # Headers and body go out in two writes; without TCP_NODELAY, Nagle plus the client's delayed
    # ACK would add ~40 ms to every response on a kept-alive connection.
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:
        """Stay quiet: the request log is served at /_fake/requests instead."""

    def do_GET(self) -> None:
        """Dispatch a GET."""
        self._dispatch()

    def do_POST(self) -> None:
        """Dispatch a POST."""
        self._dispatch()

    def do_PUT(self) -> None:
        """Dispatch a PUT."""
        self._dispatch()

    def do_DELETE(self) -> None:
        """Dispatch a DELETE."""
        self._dispatch()

    # --- plumbing -----------------------------------------------------------------------------

    def _dispatch(self) -> None:
        path = urlsplit(self.path).path
        body: bytes | None
        try:
            body = self._read_body()
        except _BodyTooLarge:
            body = None  # answered 413, after the faults and auth like any API request
        except ValueError:
            self.close_connection = True  # the stream position is unknown now
            self._send(api.error_reply(400, "bad Content-Length or chunked encoding"))
            return
        if path.startswith("/_fake/"):
            self._send(self._control(path, body) if body is not None else _TOO_LARGE)
        else:
            self._api(path, body)

    def _read_body(self) -> bytes:
        """The request body; raises _BodyTooLarge past MAX_REQUEST_BYTES, ValueError if garbled."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._read_chunked()
        length = int(self.headers.get("Content-Length") or 0)
        if length < 0:
            raise ValueError("negative Content-Length")
        if length > _DRAIN_LIMIT:
            self.close_connection = True  # not worth reading; the rest of the stream is garbage
            raise _BodyTooLarge
        body = self.rfile.read(length)
        if length > MAX_REQUEST_BYTES:
            raise _BodyTooLarge  # read first, so the client sees the 413 and not a reset
        return body

    def _read_chunked(self) -> bytes:
        chunks: list[bytes] = []
        total = 0
        while True:
            size = int(self.rfile.readline(1024).split(b";")[0].strip(), 16)
            if size == 0:
                while self.rfile.readline(1024).strip():
                    pass  # trailers
                break
            total += size
            if total > _DRAIN_LIMIT:
                self.close_connection = True
                raise _BodyTooLarge
            chunks.append(self.rfile.read(size))
            self.rfile.readline(1024)
        if total > MAX_REQUEST_BYTES:
            raise _BodyTooLarge
        return b"".join(chunks)

    def _send(self, reply: api.Reply) -> None:
        send_json(self, reply.status, reply.body, reply.headers)

    def _drop(self) -> None:
        """Close the connection without a response, like a crashed or unreachable server."""
        self.close_connection = True
        with contextlib.suppress(OSError):  # the client has gone already
            self.connection.shutdown(socket.SHUT_RDWR)

    def _authorized(self) -> bool:
        scheme, _, token = self.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            credentials = base64.b64decode(token.strip(), validate=True)
        except (binascii.Error, ValueError):
            return False
        return hmac.compare_digest(credentials, self.server.fake.credentials)

    # --- the Track API, behind the faults -----------------------------------------------------

    def _api(self, path: str, body: bytes | None) -> None:
        started = time.time()
        fake = self.server.fake
        recorder = fake.recorder
        decision = recorder.decide()
        if decision.latency_s:
            time.sleep(decision.latency_s)
        if decision.down:
            recorder.log_request(self.command, path, None, started=started, fault="down")
            self._drop()
            return
        if decision.timeout:
            # Logged before holding, so the log shows the request while it hangs.
            recorder.log_request(self.command, path, None, started=started, fault="timeout")
            decision.release.wait(fake.hold_seconds)
            self._drop()
            return
        if decision.status is not None:
            reply = _fault_reply(decision.status, decision.retry_after)
        elif not self._authorized():
            reply = api.UNAUTHORIZED
        elif body is None:
            reply = _TOO_LARGE
        else:
            host = self.headers.get("Host")
            base_url = f"http://{host}" if host else fake.url
            reply = api.handle(self.command, path, body, recorder, base_url)
        fault = "status" if decision.status is not None else None
        recorder.log_request(self.command, path, reply.status, started=started, fault=fault)
        self._send(reply)

    # --- the control API (no auth: it only ever listens where the tests run) -------------------

    def _control(self, path: str, body: bytes) -> api.Reply:
        fake = self.server.fake
        match self.command, path.rstrip("/"):
            case "GET", "/_fake/operations":
                return api.Reply(200, fake.operations())
            case "GET", "/_fake/requests":
                return api.Reply(200, fake.requests())
            case "GET", "/_fake/stats":
                return api.Reply(200, fake.stats())
            case "GET", "/_fake/people":
                return api.Reply(200, fake.people())
            case "GET", "/_fake/faults":
                return api.Reply(200, fake.recorder.faults().as_dict())
            case "POST", "/_fake/reset":
                fake.reset()
                return api.Reply(200, {})
            case "POST", "/_fake/faults":
                try:
                    faults = Faults.from_json(json.loads(body or b"{}"))
                except ValueError as exc:  # JSONDecodeError is a ValueError too
                    return api.error_reply(400, str(exc))
                fake.recorder.set_faults(faults)
                return api.Reply(200, faults.as_dict())
        return api.NOT_FOUND


def _fault_reply(status: int, retry_after: int | None) -> api.Reply:
    headers = (("Retry-After", str(retry_after)),) if retry_after is not None else ()
    if status == 401:
        return api.Reply(401, api.UNAUTHORIZED.body, headers)
    return api.Reply(status, {"meta": {"error": f"fake fault: HTTP {status}"}}, headers)
