"""End to end over real HTTP: `webhooks serve` (gunicorn, 2 workers) under concurrent load."""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from tests.conftest import (
    SHOPIFY_SECRET,
    STRIPE_OLD_SECRET,
    STRIPE_SECRET,
    shopify_headers,
    shopify_order,
    stripe_event,
)
from tests.integration.service import run_cli, serve, service_env
from webhooks.providers.stripe.signature import sign
from webhooks.storage.db import create_db_engine
from webhooks.storage.schema import inbox

UNIQUE_STRIPE = 200
UNIQUE_SHOPIFY = 50
COPIES = 50


@pytest.fixture
def service(database_url: str, tmp_path: Path) -> Iterator[str]:
    """The real service on `database_url`, migrated the way each backend is deployed."""
    env = service_env(
        database_url,
        STRIPE_WEBHOOK_SECRET=f"{STRIPE_SECRET},{STRIPE_OLD_SECRET}",
        SHOPIFY_WEBHOOK_SECRET=SHOPIFY_SECRET,
        MAX_BODY_BYTES="65536",
    )
    if not database_url.startswith("sqlite"):
        # PostgreSQL deployments migrate in the release phase; SQLite needs no step.
        result = run_cli(["db", "upgrade"], env, tmp_path)
        assert result.returncode == 0, result.stderr
    with serve(env, tmp_path) as base:
        yield base


def _requests() -> list[tuple[str, bytes, dict[str, str]]]:
    """Unique Stripe and Shopify deliveries plus 50 copies of one Stripe event, shuffled."""
    out: list[tuple[str, bytes, dict[str, str]]] = []
    for n in range(UNIQUE_STRIPE):
        body = stripe_event(event_id=f"evt_unique_{n:04d}", event_type="invoice.paid")
        out.append(("stripe", body, {"Stripe-Signature": sign(body, STRIPE_SECRET)}))
    for n in range(UNIQUE_SHOPIFY):
        body = shopify_order(order_id=1000 + n)
        out.append(("shopify", body, shopify_headers(body, webhook_id=f"wh-{n}")))
    duplicate = stripe_event(event_id="evt_sent_fifty_times")
    for n in range(COPIES):
        # Retries carry fresh signatures, some with the secret being rotated out.
        secret = STRIPE_SECRET if n % 2 else STRIPE_OLD_SECRET
        out.append(("stripe", duplicate, {"Stripe-Signature": sign(duplicate, secret)}))
    random.Random(7).shuffle(out)
    return out


def test_concurrent_deliveries_are_stored_exactly_once(service: str, database_url: str) -> None:
    requests = _requests()
    with httpx.Client(base_url=service, timeout=10) as client:

        def post(item: tuple[str, bytes, dict[str, str]]) -> tuple[bytes, int, str]:
            provider, body, headers = item
            response = client.post(f"/webhooks/{provider}", content=body, headers=headers)
            return body, response.status_code, response.json()["status"]

        with ThreadPoolExecutor(max_workers=32) as pool:
            results = list(pool.map(post, requests))

    assert Counter(status for _, status, _ in results) == {200: len(requests)}
    dup_outcomes = Counter(outcome for body, _, outcome in results if b"fifty_times" in body)
    assert dup_outcomes == {"accepted": 1, "duplicate": COPIES - 1}
    others = Counter(outcome for body, _, outcome in results if b"fifty_times" not in body)
    assert others == {"accepted": UNIQUE_STRIPE + UNIQUE_SHOPIFY}

    engine = create_db_engine(database_url)
    with engine.connect() as conn:
        stored = list(conn.execute(sa.select(inbox.c.provider, inbox.c.delivery_id, inbox.c.body)))
    engine.dispose()
    assert len(stored) == UNIQUE_STRIPE + UNIQUE_SHOPIFY + 1
    assert Counter(row.provider for row in stored) == {
        "stripe": UNIQUE_STRIPE + 1,
        "shopify": UNIQUE_SHOPIFY,
    }
    sent = {body for _, body, _ in requests}
    assert {row.body for row in stored} == sent


def test_real_server_contract(service: str, tmp_path: Path) -> None:
    with httpx.Client(base_url=service, timeout=10) as client:
        assert client.get("/readyz").json()["status"] == "ok"
        body = stripe_event()
        ok = client.post(
            "/webhooks/stripe",
            content=body,
            headers={"Stripe-Signature": sign(body, STRIPE_SECRET)},
        )
        assert (ok.status_code, ok.json()) == (200, {"status": "accepted"})
        bad = client.post(
            "/webhooks/stripe", content=body, headers={"Stripe-Signature": sign(body, "whsec_nope")}
        )
        assert (bad.status_code, bad.json()["error"]) == (401, "invalid_signature")
        assert client.put("/webhooks/stripe", content=body).status_code == 405

        # Declared too large: refused from the headers alone.
        big = b'{"id": "evt_big", "type": "x", "pad": "' + b"x" * 70_000 + b'"}'
        too_big = client.post(
            "/webhooks/stripe", content=big, headers={"Stripe-Signature": sign(big, STRIPE_SECRET)}
        )
        assert (too_big.status_code, too_big.json()["error"]) == (413, "body_too_large")

    # Chunked, no Content-Length: the limit still holds while streaming.
    def chunks() -> Iterator[bytes]:
        for _ in range(100):
            yield b"x" * 4096

    with httpx.Client(base_url=service, timeout=10) as client:
        chunked = client.post(
            "/webhooks/stripe",
            content=chunks(),
            headers={"Stripe-Signature": sign(b"x", STRIPE_SECRET)},
        )
        assert chunked.status_code == 413
        # A chunked delivery within the limit is read whole and verified.
        body = stripe_event(event_id="evt_chunked")
        small = client.post(
            "/webhooks/stripe",
            content=iter([body[:100], body[100:]]),
            headers={"Stripe-Signature": sign(body, STRIPE_SECRET)},
        )
        assert (small.status_code, small.json()) == (200, {"status": "accepted"})

    logs = [
        json.loads(line)
        for path in tmp_path.glob("serve-*.log")
        for line in path.read_text().splitlines()
        if line.startswith("{")
    ]
    received = [entry for entry in logs if entry.get("event") == "webhook_received"]
    assert {entry["outcome"] for entry in received} >= {"accepted", "invalid_signature"}
    assert not any("buyer@example.test" in json.dumps(entry) for entry in logs)


def test_an_error_answer_closes_the_connection_and_a_success_keeps_it(service: str) -> None:
    # gunicorn's threaded worker drains at most 64 KB of a body the app did not read;
    # a kept-alive connection after a refused 400 KB body would vanish under the
    # client's next request. An error answer closes it; an accepted one does not.
    with httpx.Client(base_url=service, timeout=10) as client:
        body = stripe_event(event_id="evt_keepalive")
        ok = client.post(
            "/webhooks/stripe",
            content=body,
            headers={"Stripe-Signature": sign(body, STRIPE_SECRET)},
        )
        assert ok.headers.get("connection", "keep-alive").lower() != "close"
        too_big = client.post(
            "/webhooks/stripe",
            content=iter([b"x" * 4096] * 100),
            headers={"Stripe-Signature": sign(b"x", STRIPE_SECRET)},
        )
        assert (too_big.status_code, too_big.headers["connection"].lower()) == (413, "close")
        # The client opens a new connection for what comes next, and it is answered.
        again = client.post(
            "/webhooks/stripe",
            content=body,
            headers={"Stripe-Signature": sign(body, STRIPE_SECRET)},
        )
        assert again.json() == {"status": "duplicate"}


def _sized_event(size: int, event_id: str) -> bytes:
    """A signed-able Stripe event body of exactly `size` bytes."""
    head = b'{"id": "' + event_id.encode() + b'", "type": "x", "created": 1, "pad": "'
    body = head + b"x" * (size - len(head) - 2) + b'"}'
    assert len(body) == size
    return body


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_body_limit_boundary(service: str, chunked: bool) -> None:
    limit = 65536  # MAX_BODY_BYTES of the service fixture
    with httpx.Client(base_url=service, timeout=10) as client:
        for size, expected in ((limit, 200), (limit + 1, 413)):
            body = _sized_event(size, f"evt_size_{size}_{chunked}")
            content: bytes | Iterator[bytes] = iter([body[:1000], body[1000:]]) if chunked else body
            response = client.post(
                "/webhooks/stripe",
                content=content,
                headers={"Stripe-Signature": sign(body, STRIPE_SECRET)},
            )
            assert response.status_code == expected, (size, response.text)
