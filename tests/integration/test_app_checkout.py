"""End to end: the backend's checkout_started and Stripe's webhook for the same Checkout
Session, through real gunicorn, the worker and the fake Customer.io, in both orders."""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import APP_SECRET, STRIPE_SECRET
from tests.integration.cio import fake_customerio_process, wait_for
from tests.integration.service import serve, service_env, upgrade
from tests.integration.settle import wait_until_settled
from tests.mappers.golden import FIXTURES
from webhooks.fakes.customerio import FakeCustomerIOClient
from webhooks.providers.app.signature import sign as app_sign
from webhooks.providers.stripe import signature as stripe


@pytest.fixture
def fake() -> Iterator[FakeCustomerIOClient]:
    with fake_customerio_process() as client:
        yield client


@pytest.fixture
def service(database_url: str, fake: FakeCustomerIOClient, tmp_path: Path) -> Iterator[str]:
    env = service_env(
        database_url,
        STRIPE_WEBHOOK_SECRET=STRIPE_SECRET,
        APP_WEBHOOK_SECRET=APP_SECRET,
        CUSTOMERIO_SITE_ID="fake-site",
        CUSTOMERIO_API_KEY="fake-key",
        CUSTOMERIO_TRACK_URL=fake.url,
        WORKER_POLL_INTERVAL="0.05",
    )
    if not database_url.startswith("sqlite"):
        upgrade(env)
    with serve(env, tmp_path) as base:
        yield base


def fixture_body(provider: str, case: str) -> dict[str, Any]:
    path = FIXTURES / provider / f"{case}.json"
    body: dict[str, Any] = copy.deepcopy(json.loads(path.read_text())["body"])
    return body


def backend_checkout(session: str) -> dict[str, Any]:
    """What the backend sends as it creates Checkout Session `session`."""
    event = fixture_body("app", "checkout_started_stripe_session")
    event.update(id=f"evt_app_{session}", timestamp=int(time.time()))
    event["properties"]["cart_id"] = session
    return event


def post_app(base: str, payload: dict[str, Any]) -> httpx.Response:
    body = json.dumps(payload).encode()
    headers = {**app_sign(body, APP_SECRET), "Content-Type": "application/json"}
    return httpx.post(f"{base}/webhooks/app", content=body, headers=headers)


def post_stripe_completed(base: str, session: str) -> None:
    """Stripe's checkout.session.completed for `session`, naming only the Stripe customer
    (no metadata, no client_reference_id): the checkout itself must lead to the person."""
    event = fixture_body("stripe", "checkout_session_completed_paid")
    event.update(id=f"evt_{session}", created=int(time.time()))
    obj = event["data"]["object"]
    obj.update(id=session, payment_intent=f"pi_{session}", metadata={}, client_reference_id=None)
    body = json.dumps(event).encode()
    headers = {"Stripe-Signature": stripe.sign(body, STRIPE_SECRET)}
    answer = httpx.post(f"{base}/webhooks/stripe", content=body, headers=headers)
    assert answer.json() == {"status": "accepted"}


def sent_events(fake: FakeCustomerIOClient) -> list[dict[str, Any]]:
    """Every event the fake accepted: (name, who, cart_id)."""
    out = []
    for entry in fake.operations():
        op = entry["operation"]
        if op.get("action") == "event":
            out.append((op["name"], op["identifiers"], op["attributes"].get("cart_id")))
        elif entry["endpoint"] == "POST /api/v1/events":
            out.append((op["name"], {"anonymous_id": op["anonymous_id"]}, op["data"]["cart_id"]))
    return out


def test_a_backend_checkout_and_stripes_order_for_one_session_in_either_order(
    service: str, fake: FakeCustomerIOClient, database_url: str
) -> None:
    person = {"id": "user_8842"}
    # 0. What a sender with a bug sees: 422 and each field's error, nothing stored.
    bad = backend_checkout("cs_test_bad")
    bad["properties"]["total"] = "a lot"
    answer = post_app(service, bad)
    assert answer.status_code == 422
    assert answer.json()["errors"] == [
        {"path": "properties.total", "message": "Input should be a valid decimal"}
    ]
    # 1. The backend creates session A (in a batch, beside a product view), the buyer
    #    pays minutes later: abandonment starts, and the order of the same cart exits it.
    view = fixture_body("app", "product_viewed") | {"timestamp": int(time.time())}
    batch = {"events": [view, backend_checkout("cs_test_forward")]}
    answer = post_app(service, batch)
    assert answer.status_code == 200, answer.text
    assert answer.json()["accepted"] == 2
    wait_for(
        lambda: ("checkout_started", person, "cs_test_forward") in sent_events(fake),
        what="the backend's checkout_started",
    )
    post_stripe_completed(service, "cs_test_forward")
    wait_for(
        lambda: ("order_completed", person, "cs_test_forward") in sent_events(fake),
        what="Stripe's order, for the same person and cart",
    )

    # 2. Stripe's webhook for session B comes first (the backend's report was late):
    #    the late checkout_started must not start an abandonment journey.
    post_stripe_completed(service, "cs_test_reverse")
    wait_for(
        lambda: ("order_completed", person, "cs_test_reverse") in sent_events(fake),
        what="the order of session B",
    )
    assert post_app(service, backend_checkout("cs_test_reverse")).json() == {"status": "accepted"}
    # A retry of the same event is a duplicate (dedup by the sender's id).
    assert post_app(service, backend_checkout("cs_test_reverse")).json() == {"status": "duplicate"}
    wait_until_settled(database_url, fake, finished={"done"})

    assert sorted(sent_events(fake), key=lambda e: (e[2] or "", e[0])) == [
        ("product_viewed", person, None),
        ("checkout_started", person, "cs_test_forward"),
        ("order_completed", person, "cs_test_forward"),
        ("order_completed", person, "cs_test_reverse"),
    ]
    # One profile holds it all: the checkout linked Stripe's customer to the backend's id.
    people = fake.people()["people"]
    assert [p["identifier"] for p in people] == [person]
    assert people[0]["attributes"]["email"] == "ada@example.test"
