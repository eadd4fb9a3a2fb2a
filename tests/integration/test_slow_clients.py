"""Slow clients against the real server: a deadline on the body, and no starvation.

Raw sockets against `webhooks serve` (gunicorn's gthread workers): a body trickled
past BODY_TIMEOUT_SECONDS is answered 408 and nothing is stored; fifty clients
trickling bodies at once leave the service answering real deliveries and /healthz.
Timings here are functional bounds (answered at all while the slow clients hold their
connections), not speed targets; benchmarks/slow_clients.py measures the latencies.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from tests.conftest import STRIPE_SECRET, count_rows, stripe_event
from tests.integration.service import serve, service_env, upgrade
from webhooks.providers.stripe.signature import sign


def start_service(database_url: str, tmp_path: Path, body_timeout: float) -> Iterator[str]:
    env = service_env(
        database_url,
        STRIPE_WEBHOOK_SECRET=STRIPE_SECRET,
        BODY_TIMEOUT_SECONDS=str(body_timeout),
    )
    if not database_url.startswith("sqlite"):
        upgrade(env)
    with serve(env, tmp_path) as base:
        yield base


@pytest.fixture
def service(database_url: str, tmp_path: Path) -> Iterator[str]:
    yield from start_service(database_url, tmp_path, body_timeout=1)


def headers_of(body: bytes, *, chunked: bool = False) -> bytes:
    lines = [
        b"POST /webhooks/stripe HTTP/1.1",
        b"Host: localhost",
        b"Content-Type: application/json",
        b"Stripe-Signature: " + sign(body, STRIPE_SECRET).encode(),
        b"Transfer-Encoding: chunked" if chunked else f"Content-Length: {len(body)}".encode(),
    ]
    return b"\r\n".join(lines) + b"\r\n\r\n"


def connect(base: str) -> socket.socket:
    url = urlsplit(base)
    return socket.create_connection((url.hostname, url.port), timeout=15)


def read_answer(sock: socket.socket) -> tuple[int, dict[str, object]]:
    answer = b""
    while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
        chunk = sock.recv(65536)
        if not chunk:
            break
        answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert b"application/json" in head.lower(), head
    return int(head.split(b" ", 2)[1]), json.loads(body)


def trickle(sock: socket.socket, data: bytes, every: float) -> None:
    """Send `data` a byte at a time; stop quietly when the server has cut us off."""
    for byte in data:
        try:
            sock.sendall(bytes([byte]))
        except OSError:
            return
        time.sleep(every)


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_body_trickled_past_the_deadline_gets_408(
    service: str, database_url: str, tmp_path: Path, chunked: bool
) -> None:
    body = stripe_event("evt_slow_body")
    framed = f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n" if chunked else body
    with connect(service) as sock:
        sock.sendall(headers_of(body, chunked=chunked))
        started = time.monotonic()
        sender = threading.Thread(target=trickle, args=(sock, framed, 0.05), daemon=True)
        sender.start()
        status, answer = read_answer(sock)
        waited = time.monotonic() - started
    # The client sees a JSON 408 naming the setting, about one deadline after its headers,
    # long before its body (a byte each 50 ms) would have been complete.
    assert (status, answer["error"]) == (408, "body_timeout")
    assert "BODY_TIMEOUT_SECONDS" in str(answer["message"])
    assert 0.9 < waited < len(framed) * 0.05 / 2
    assert count_rows(database_url) == 0
    log = "".join(path.read_text() for path in tmp_path.glob("serve-*.log"))
    timeouts = [json.loads(line) for line in log.splitlines() if "body_timeout" in line]
    assert timeouts
    assert all(record["level"] == "warning" for record in timeouts)


def test_a_slow_body_within_the_deadline_is_accepted(service: str, database_url: str) -> None:
    body = stripe_event("evt_slow_but_in_time")
    with connect(service) as sock:
        sock.sendall(headers_of(body))
        half = len(body) // 2
        sock.sendall(body[:half])
        time.sleep(0.5)  # half the deadline, in one pause: slow, not stalled
        sock.sendall(body[half:])
        status, answer = read_answer(sock)
    assert (status, answer) == (200, {"status": "accepted"})
    assert count_rows(database_url) == 1


@pytest.fixture
def patient_service(database_url: str, tmp_path: Path) -> Iterator[str]:
    # A deadline longer than the slow clients take, so they hold their threads for
    # the whole test instead of being cut off first.
    yield from start_service(database_url, tmp_path, body_timeout=30)


def test_fifty_slow_clients_do_not_starve_real_deliveries(
    patient_service: str, database_url: str
) -> None:
    slow = [connect(patient_service) for _ in range(50)]
    bodies = [stripe_event(f"evt_slow_{n}") for n in range(50)]
    for sock, body in zip(slow, bodies, strict=True):
        sock.sendall(headers_of(body) + body[:10])
    stop = threading.Event()

    def keep_trickling() -> None:
        while not stop.wait(0.2):
            for sock in slow:
                with contextlib.suppress(OSError):
                    sock.sendall(b" ")  # whitespace inside the JSON: still mid-body

    trickler = threading.Thread(target=keep_trickling, daemon=True)
    trickler.start()
    try:
        time.sleep(0.5)  # every slow client is connected and mid-body
        answered = []
        with httpx.Client(base_url=patient_service, timeout=2) as http:
            for n in range(20):
                body = stripe_event(f"evt_real_{n}")
                started = time.monotonic()
                response = http.post(
                    "/webhooks/stripe",
                    content=body,
                    headers={"Stripe-Signature": sign(body, STRIPE_SECRET)},
                )
                answered.append(time.monotonic() - started)
                assert response.json() == {"status": "accepted"}
            assert http.get("/healthz").status_code == 200
        # Every slow client still holds its connection: the service answered around them.
        assert all(sock.fileno() != -1 for sock in slow)
        # With sync workers the first real delivery waited for a slow client to finish.
        assert max(answered) < 1.0, answered
        assert count_rows(database_url) == 20
    finally:
        stop.set()
        trickler.join()
        for sock in slow:
            sock.close()
