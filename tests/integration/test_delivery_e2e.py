"""End to end: signed webhooks into real gunicorn, a real worker, a fake Customer.io process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from itertools import pairwise
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from mappers.actions import Person
from tests.conftest import SHOPIFY_SECRET, STRIPE_SECRET
from tests.integration.cio import fake_customerio_process, wait_for
from tests.integration.service import serve, service_env, upgrade
from tests.integration.settle import pipeline_state, wait_until_settled
from tests.mappers.golden import FIXTURES, REFUND_LISTED_ON_THE_2020_CHARGE
from webhooks.core.ids import op_ulid
from webhooks.fakes.customerio import FakeCustomerIOClient
from webhooks.providers.shopify import signature as shopify
from webhooks.providers.stripe import signature as stripe
from webhooks.providers.stripe.signature import StripeReceiver
from webhooks.stage1.state.identity import IdentityPolicy, direct_identity
from webhooks.storage.db import create_db_engine
from webhooks.storage.inbox import store_delivery


@pytest.fixture
def fake() -> Iterator[FakeCustomerIOClient]:
    """The fake Customer.io, in its own process."""
    with fake_customerio_process() as client:
        yield client


def stack_env(database_url: str, fake: FakeCustomerIOClient) -> dict[str, str]:
    """The service's settings: both providers, Customer.io = the fake, short waits."""
    return service_env(
        database_url,
        STRIPE_WEBHOOK_SECRET=STRIPE_SECRET,
        SHOPIFY_WEBHOOK_SECRET=SHOPIFY_SECRET,
        CUSTOMERIO_SITE_ID="fake-site",
        CUSTOMERIO_API_KEY="fake-key",
        CUSTOMERIO_TRACK_URL=fake.url,
        WORKER_POLL_INTERVAL="0.05",
        WORKER_LEASE_SECONDS="2",
    )


@pytest.fixture
def service(database_url: str, fake: FakeCustomerIOClient, tmp_path: Path) -> Iterator[str]:
    """`webhooks serve` (gunicorn and its worker) talking to the fake."""
    env = stack_env(database_url, fake)
    if not database_url.startswith("sqlite"):
        upgrade(env)
    with serve(env, tmp_path) as base:
        yield base


def send(base: str, provider: str, case: str, **body_changes: Any) -> dict[str, Any]:
    """Post a golden fixture's delivery, signed as its provider signs; return the fixture."""
    fixture = json.loads((FIXTURES / provider / f"{case}.json").read_text())
    body = json.dumps({**fixture["body"], **body_changes}).encode()
    headers = dict(fixture.get("headers", {}))
    if provider == "stripe":
        headers["Stripe-Signature"] = stripe.sign(body, STRIPE_SECRET)
    else:
        headers["X-Shopify-Hmac-Sha256"] = shopify.sign(body, SHOPIFY_SECRET)
    response = httpx.post(f"{base}/webhooks/{provider}", content=body, headers=headers)
    assert response.status_code == 200, response.text
    return fixture


def expected_events(
    provider: str, case: str, orders: dict[str, list[tuple[int, str]]] | None = None
) -> list[dict[str, Any]]:
    """The Customer.io event items a golden fixture's expected Tracks must become.

    `orders`: each person's orders processed so far (cases are processed in the order
    given), from which the service numbers the next one.
    """
    expected = json.loads((FIXTURES / provider / f"{case}.expected.json").read_text())
    orders = {} if orders is None else orders
    items = []
    for action in expected:
        if action["kind"] != "track":
            continue
        who = direct_identity(Person(**action["person"]), IdentityPolicy())
        assert who is not None
        pid = who.person_id
        when = action["timestamp"]
        items.append(
            {
                "type": "person",
                "identifiers": {"id": pid},
                "action": "event",
                "name": action["event"],
                "timestamp": when,
                "attributes": action["properties"] | numbered(action, pid, orders),
                "id": op_ulid(action["semantic_key"], datetime.fromtimestamp(when, UTC)),
            }
        )
    return items


def numbered(
    action: dict[str, Any], pid: str, orders: dict[str, list[tuple[int, str]]]
) -> dict[str, Any]:
    """What the service adds to an order: its place by date among the person's orders
    processed so far."""
    if action["event"] != "order_completed":
        return {}
    mine = orders.setdefault(pid, [])
    this = (action["timestamp"], action["properties"]["order_id"])
    mine.append(this)
    place = sum(1 for other in mine if other <= this)
    return {"is_first_order": place == 1, "order_count": place}


def probe(n: int) -> dict[str, Any]:
    """Body changes making a Stripe delivery of a type nothing maps: a new row, no operation."""
    return {"id": f"evt_probe{n:04d}", "type": "balance.available"}


def all_done(database_url: str) -> bool:
    """Every stored delivery mapped (done)."""
    states, _ = pipeline_state(database_url)
    return states == {"done"}


def events(fake: FakeCustomerIOClient) -> list[dict[str, Any]]:
    """Event operations the fake accepted."""
    return [op["operation"] for op in fake.operations() if op["operation"].get("action") == "event"]


# Cases that need no Stripe API lookup (the service here runs without STRIPE_API_KEY).
CASES = [
    ("stripe", "checkout_session_completed_jpy"),
    ("stripe", "invoice_paid_subscription_create_basil"),
    ("stripe", "subscription_updated_scheduled_cancel"),
    ("shopify", "order_create"),
    ("shopify", "checkout_create_customer"),
]


def test_webhooks_in_exactly_the_expected_operations_out(
    service: str, fake: FakeCustomerIOClient, database_url: str
) -> None:
    for provider, case in CASES:
        send(service, provider, case)
    # The Shopify checkout arrives after the order placed from it (same token): its
    # checkout_started must not start a recovery journey for a completed purchase.
    orders: dict[str, list[tuple[int, str]]] = {}
    want = [
        item
        for provider, case in CASES
        for item in expected_events(provider, case, orders)
        if item["name"] != "checkout_started"
    ]
    wait_for(lambda: len(events(fake)) >= len(want), what="all events delivered")
    # Everything mapped and sent: a wrongly sent checkout_started is among what arrived.
    wait_until_settled(database_url, fake)
    got = {item["id"]: item for item in events(fake)}
    assert set(got) == {item["id"] for item in want}
    for item in want:
        sent = got[item["id"]]
        differs = {
            name: (sent["attributes"].get(name), value)
            for name, value in item["attributes"].items()
            if sent["attributes"].get(name) != value
        }
        assert sent == item, differs
    identifies = [
        op["operation"] for op in fake.operations() if op["operation"].get("action") == "identify"
    ]
    assert {i["identifiers"]["id"] for i in identifies} >= {"user_8842"}
    assert all(isinstance(i["timestamp"], int) for i in identifies)


def test_duplicates_and_overlaps_become_one_operation_each(
    service: str, fake: FakeCustomerIOClient, database_url: str
) -> None:
    for _ in range(5):
        send(service, "stripe", "checkout_session_completed_paid")
    send(service, "shopify", "order_create")
    send(service, "shopify", "order_paid")
    send(service, "stripe", "charge_refunded_with_refund_list_2020")
    send(
        service,
        "stripe",
        "refund_created_partial",
        **REFUND_LISTED_ON_THE_2020_CHARGE,
    )
    wait_for(lambda: len(events(fake)) >= 3, what="three events")
    wait_until_settled(database_url, fake)  # any duplicate has been sent by now
    got = events(fake)
    assert Counter(e["name"] for e in got) == {"order_completed": 2, "refund_issued": 1}
    assert len({e["id"] for e in got}) == 3
    assert fake.stats()["duplicates_ignored"] == 0  # ours, not Customer.io's, caught them


def test_outage_then_recovery_delivers_everything_once_without_a_hot_loop(
    service: str, fake: FakeCustomerIOClient, database_url: str
) -> None:
    wait_for(lambda: fake.requests(), what="the worker's start-up check")
    fake.set_faults(down=True)
    send(service, "stripe", "checkout_session_completed_paid")
    send(service, "shopify", "order_create")

    def refused() -> list[dict[str, Any]]:
        return [r for r in fake.requests() if r.get("fault") == "down"]

    during = wait_for(lambda: len(refused()) >= 3 and refused(), what="three tries in the outage")
    # One worker-wide backoff with equal jitter: after the n-th failure in a row the
    # worker waits at least half of 2**(n-1) s (0.5-1 s, 1-2 s, 2-4 s ...). A hot loop,
    # or a pass that tries each operation in turn, would come back within a poll.
    gaps = [later["time"] - earlier["time"] for earlier, later in pairwise(during[:3])]
    assert gaps[0] >= 0.5 * 0.95, f"retries follow the backoff, not a hot loop: {gaps}"
    assert gaps[1] >= 1.0 * 0.95, f"the backoff doubles: {gaps}"
    fake.set_faults()
    want = {
        item["id"]
        for case in [("stripe", "checkout_session_completed_paid"), ("shopify", "order_create")]
        for item in expected_events(*case)
    }
    wait_for(lambda: {e["id"] for e in events(fake)} >= want, timeout=30, what="recovery")
    wait_until_settled(database_url, fake)
    assert sorted(e["id"] for e in events(fake)) == sorted(want)


def test_bad_credentials_pause_delivery_then_it_resumes(
    service: str, fake: FakeCustomerIOClient, database_url: str
) -> None:
    wait_for(lambda: fake.requests(), what="the worker's start-up check")
    fake.set_faults(status=401)
    send(service, "stripe", "checkout_session_completed_paid")
    wait_for(lambda: any(r["status"] == 401 for r in fake.requests()), what="the refused delivery")
    # Mapping goes on while delivery is paused. A probe the worker maps (to nothing)
    # proves a pass ran; a second one, that the first probe's pass ran to its end,
    # delivery step included. Delivery retrying every poll would have sent by then.
    for n in (1, 2):
        send(service, "stripe", "checkout_session_completed_paid", **probe(n))
        wait_for(lambda: all_done(database_url), what=f"probe {n} mapped during the pause")
    requests = fake.requests()
    first = next(i for i, r in enumerate(requests) if r["status"] == 401)
    sent_since = [r["path"] for r in requests[first + 1 :]]
    # At most the one credentials check that ends the first 5 s pause, no delivery.
    assert set(sent_since) <= {"/api/v1/accounts/region"}, "paused, not retrying every poll"
    assert len(sent_since) <= 1, "paused, not retrying every poll"
    assert events(fake) == []
    fake.set_faults()
    wait_for(lambda: events(fake), timeout=20, what="delivery after the pause")
    assert [e["name"] for e in events(fake)] == ["order_completed"]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_worker_killed_mid_batch_loses_nothing_and_keeps_ids(
    database_url: str, fake: FakeCustomerIOClient, tmp_path: Path
) -> None:
    env = {**stack_env(database_url, fake), "CUSTOMERIO_MAX_RPS": "1000"}
    upgrade(env)
    engine = create_db_engine(database_url)
    template = json.loads(
        (FIXTURES / "stripe" / "checkout_session_completed_paid.json").read_text()
    )["body"]
    for n in range(40):
        obj = {
            **template["data"]["object"],
            "id": f"cs_kill_{n:03d}",
            "payment_intent": f"pi_kill_{n:03d}",
        }
        body = json.dumps({**template, "id": f"evt_kill_{n:03d}", "data": {"object": obj}})
        store_delivery(engine, StripeReceiver(["whsec_x"]).parse(body.encode(), {}))
    engine.dispose()
    # The fake holds every request unanswered: the first worker dies with a batch in
    # flight that Customer.io never accepted.
    fake.set_faults(timeout=True)

    def start() -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-m", "webhooks", "worker"],
            env=env,
            cwd=tmp_path,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    first = start()
    wait_for(
        lambda: any(r["path"] == "/api/v2/batch" for r in fake.requests()), what="a batch in flight"
    )
    first.kill()  # SIGKILL mid-batch: its leases must lapse, not vanish
    first.wait()
    fake.set_faults()
    assert events(fake) == []  # nothing of the killed worker's batch was accepted
    sent_before = len(fake.requests())
    second = start()
    try:
        wait_for(
            lambda: len({e["id"] for e in events(fake)}) >= 40,
            timeout=30,
            what="all orders after the restart",
        )
    finally:
        second.terminate()
        second.wait(timeout=20)
    assert any(r["path"] == "/api/v2/batch" for r in fake.requests()[sent_before:])
    got = events(fake)
    assert {e["attributes"]["order_id"] for e in got} == {f"pi_kill_{n:03d}" for n in range(40)}
    for event in got:  # resent operations keep their original, deterministic id
        key = f"order_completed:stripe:platform:{event['attributes']['order_id']}"
        assert event["id"] == op_ulid(key, datetime.fromtimestamp(event["timestamp"], UTC))


def test_guest_checkout_goes_out_as_an_anonymous_event(
    service: str, fake: FakeCustomerIOClient
) -> None:
    fixture = send(service, "shopify", "checkout_create_guest")
    token = fixture["body"]["token"]

    def anonymous() -> list[dict[str, Any]]:
        return [
            op["operation"] for op in fake.operations() if op["endpoint"] == "POST /api/v1/events"
        ]

    [event] = wait_for(anonymous, what="the anonymous checkout_started")
    assert event["name"] == "checkout_started"
    assert event["anonymous_id"] == f"shopify:{token}"
    assert event["data"]["cart_id"] == token


def live_workers(database_url: str) -> list[str]:
    """Owners (host:pid:random) of the workers whose heartbeat is in the database."""
    from webhooks.storage.schema import worker_heartbeats

    engine = create_db_engine(database_url)
    try:
        with engine.connect() as conn:
            return list(conn.execute(sa.select(worker_heartbeats.c.owner)).scalars())
    finally:
        engine.dispose()


def test_a_killed_worker_is_restarted_and_delivers(
    service: str, database_url: str, fake: FakeCustomerIOClient
) -> None:
    first = wait_for(lambda: live_workers(database_url), what="the worker's first heartbeat")
    ready = httpx.get(f"{service}/readyz", timeout=5).json()
    assert ready["workers"]["live"] == 1  # visible from any host that reads the database
    pid = int(first[0].split(":")[1])
    os.kill(pid, signal.SIGKILL)
    # The supervisor restarts it (after a 1 s backoff); the new one beats under its pid.
    second = wait_for(
        lambda: [o for o in live_workers(database_url) if o not in first],
        timeout=30,
        what="a restarted worker",
    )
    assert int(second[0].split(":")[1]) != pid
    send(service, "stripe", "checkout_session_completed_paid")
    wait_for(lambda: events(fake), timeout=30, what="delivery by the restarted worker")
