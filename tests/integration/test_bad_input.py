"""Inputs anyone can send get a 4xx JSON answer from the real server, never a 500.

Raw sockets against `webhooks serve` (gunicorn): a signature header holding bytes
outside ASCII, broken chunked framing, and correctly signed JSON nested far deeper
than any webhook. Each answer says what was wrong; nothing is stored.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from urllib.parse import urlsplit

import pytest

from tests.conftest import (
    SHOPIFY_SECRET,
    STRIPE_SECRET,
    backend_params,
    count_rows,
    fresh_pg_schema,
    shopify_headers,
)
from tests.integration.service import serve, service_env, upgrade
from webhooks.providers.base import MAX_JSON_DEPTH
from webhooks.providers.stripe.signature import sign


@dataclass(frozen=True)
class Service:
    """The running service of this module and its database."""

    base: str
    url: str
    before: int  # rows stored when the test began

    def stored(self) -> int:
        """Rows stored since the test began."""
        return count_rows(self.url) - self.before


@pytest.fixture(scope="module", params=backend_params())
def running(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, str]]:
    """One `webhooks serve` per backend for the whole module: every test here sends
    input that must be refused, and starting a server each time cost most of the run."""
    tmp = tmp_path_factory.mktemp("bad-input")
    database: AbstractContextManager[str] = (
        nullcontext(f"sqlite:///{tmp / 'inbox.db'}")
        if request.param == "sqlite"
        else fresh_pg_schema()
    )
    with database as url:
        env = service_env(
            url, STRIPE_WEBHOOK_SECRET=STRIPE_SECRET, SHOPIFY_WEBHOOK_SECRET=SHOPIFY_SECRET
        )
        if request.param != "sqlite":
            upgrade(env)
        with serve(env, tmp) as base:
            yield base, url


@pytest.fixture
def service(running: tuple[str, str]) -> Service:
    base, url = running
    return Service(base, url, count_rows(url))


def exchange(base: str, raw: bytes, *, half_close: bool = False) -> tuple[int, dict[str, object]]:
    """Send `raw` as it is; return the answer's status and JSON body."""
    url = urlsplit(base)
    with socket.create_connection((url.hostname, url.port), timeout=10) as sock:
        sock.sendall(raw)
        if half_close:
            sock.shutdown(socket.SHUT_WR)  # the client stops sending mid-body
        answer = b""
        while chunk := sock.recv(65536):  # Connection: close: the server ends it
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    assert b"application/json" in head.lower(), head
    return status, json.loads(body)


def post(path: str, headers: dict[str, bytes], body: bytes, chunked: bool = False) -> bytes:
    lines = [f"POST {path} HTTP/1.1".encode(), b"Host: localhost", b"Connection: close"]
    lines += [name.encode() + b": " + value for name, value in headers.items()]
    if chunked:
        lines.append(b"Transfer-Encoding: chunked")
    else:
        lines.append(f"Content-Length: {len(body)}".encode())
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


EVENT = json.dumps({"id": "evt_edge_1", "type": "invoice.paid", "created": 1764320000}).encode()


@pytest.mark.parametrize(
    "signature",
    [b"t=1764320000,v1=\xe9\xe9", "t=1764320000,v1=\U0001f600".encode()],
    ids=["latin-1", "emoji"],
)
def test_a_signature_outside_ascii_is_malformed(service: Service, signature: bytes) -> None:
    raw = post(
        "/webhooks/stripe",
        {"Content-Type": b"application/json", "Stripe-Signature": signature},
        EVENT,
    )
    assert exchange(service.base, raw) == (
        400,
        {"error": "malformed_signature", "message": "Stripe-Signature header is not ASCII"},
    )
    assert service.stored() == 0


def test_a_bad_chunk_size_is_a_malformed_body(service: Service) -> None:
    headers = {"Stripe-Signature": sign(EVENT, STRIPE_SECRET).encode()}
    raw = post("/webhooks/stripe", headers, b"zz\r\n" + EVENT + b"\r\n0\r\n\r\n", chunked=True)
    status, answer = exchange(service.base, raw)
    assert (status, answer["error"]) == (400, "malformed_body")
    assert service.stored() == 0


def test_a_body_cut_off_mid_chunk_is_a_malformed_body(service: Service) -> None:
    headers = {"Stripe-Signature": sign(EVENT, STRIPE_SECRET).encode()}
    size = f"{len(EVENT):x}".encode()
    raw = post("/webhooks/stripe", headers, size + b"\r\n" + EVENT[:20], chunked=True)
    status, answer = exchange(service.base, raw, half_close=True)
    assert (status, answer["error"]) == (400, "malformed_body")
    assert service.stored() == 0


def test_a_body_shorter_than_its_content_length_is_malformed(service: Service) -> None:
    # The client declares the whole event, sends half and stops sending: a broken
    # request (400), not a signature that fails on the half (401).
    headers = {"Stripe-Signature": sign(EVENT, STRIPE_SECRET).encode()}
    raw = post("/webhooks/stripe", headers, EVENT)
    status, answer = exchange(service.base, raw[: len(raw) - len(EVENT) // 2], half_close=True)
    assert (status, answer["error"]) == (400, "malformed_body")
    assert "short body" in str(answer["message"])
    assert service.stored() == 0


def nested(levels: int) -> str:
    return "[" * levels + "]" * levels


@pytest.mark.parametrize("levels", [MAX_JSON_DEPTH + 1, 100_000])
@pytest.mark.parametrize("provider", ["stripe", "shopify"])
def test_correctly_signed_json_nested_too_deep_is_refused(
    service: Service, provider: str, levels: int
) -> None:
    body = (
        json.dumps({"id": "evt_deep", "type": "invoice.paid", "created": 1764320000, "deep": "@"})
        .replace('"@"', nested(levels - 1))
        .encode()
    )
    if provider == "stripe":
        headers = {"Stripe-Signature": sign(body, STRIPE_SECRET).encode()}
    else:
        headers = {k: v.encode() for k, v in shopify_headers(body, webhook_id="wh-deep").items()}
    status, answer = exchange(service.base, post(f"/webhooks/{provider}", headers, body))
    assert (status, answer["error"]) == (400, "json_too_deep")
    assert service.stored() == 0


def test_a_real_depth_of_nesting_is_accepted(service: Service) -> None:
    body = (
        json.dumps({"id": "evt_ok", "type": "invoice.paid", "created": 1764320000, "deep": "@"})
        .replace('"@"', nested(MAX_JSON_DEPTH - 2))
        .encode()
    )
    headers = {"Stripe-Signature": sign(body, STRIPE_SECRET).encode()}
    status, answer = exchange(service.base, post("/webhooks/stripe", headers, body))
    assert (status, answer) == (200, {"status": "accepted"})
    assert service.stored() == 1


def raw_status(base: str, raw: bytes) -> tuple[int, bytes]:
    url = urlsplit(base)
    with socket.create_connection((url.hostname, url.port), timeout=10) as sock:
        sock.sendall(raw)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head = answer.partition(b"\r\n\r\n")[0]
    return int(head.split(b" ", 2)[1]), head


def test_gunicorns_own_limits_are_the_documented_ones(service: Service) -> None:
    # A 6 KB path is within the request-line limit (8 KB): the app answers, in JSON.
    status, answer = exchange(service.base, post("/webhooks/" + "x" * 6000, {}, b"{}"))
    assert (status, answer["error"]) == (404, "provider_not_configured")
    # Past the limits gunicorn answers before the app runs (its own page, see README).
    assert raw_status(service.base, post("/webhooks/" + "x" * 9000, {}, b"{}"))[0] == 414
    many = {f"X-Extra-{n}": b"1" for n in range(101)}
    assert raw_status(service.base, post("/webhooks/stripe", many, b"{}"))[0] == 431
    huge = {"X-Extra": b"y" * 9000}
    assert raw_status(service.base, post("/webhooks/stripe", huge, b"{}"))[0] == 431
