"""Enrichment of claimed inbox rows (Stripe's), against the fake Stripe and a real database."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from structlog.testing import capture_logs

from mappers.actions import Track
from mappers.base import StoredDelivery
from mappers.stripe_fields import StripeConfig
from tests.conftest import make_settings, shopify_order
from tests.mappers.golden import configs, parse
from tests.pipeline import inbox_rows
from webhooks.fakes.stripe import DEFAULT_API_KEY, FakeStripe
from webhooks.providers.stripe.api import StripeAPI
from webhooks.providers.stripe.api.limits import MAX_ATTEMPTS
from webhooks.providers.stripe.enrich import Lookup, StripeEnricher, lookup
from webhooks.stage1 import enrich, setup
from webhooks.stage1.enrich import DEADLINE, DEFER_DEFAULT, DEFER_MAX, EnrichResult
from webhooks.stage1.mapping import map_row
from webhooks.storage.inbox import store_delivery
from webhooks.storage.queue import DEFAULT_LEASE, claim, utcnow
from webhooks.storage.schema import InboxState, inbox

OWNER = "worker-1"
CONFIG = StripeConfig()
ADA = {
    "id": "cus_Ada",
    "email": "ada@example.test",
    "name": "Ada Lovelace",
    # Only the internal-id key is kept of a looked-up customer's metadata: merchants
    # keep all sorts of things there, and the inbox keeps enrichment indefinitely.
    "metadata": {"customer_id": "user_8842", "delivery_note": "leave with neighbour"},
}
_events = iter(range(1, 10_000))


def line_items(count: int) -> list[dict[str, Any]]:
    return [
        {
            "id": f"li_{i:03}",
            "object": "item",
            "description": f"Item {i}",
            "quantity": 1,
            "amount_total": 500,
            "price": {"id": f"price_{i}", "product": f"prod_{i}", "unit_amount": 500},
        }
        for i in range(count)
    ]


def session(session_id: str = "cs_test_1", **fields: Any) -> dict[str, Any]:
    """A paid Checkout Session as its webhook carries it: no line items."""
    return {
        "id": session_id,
        "object": "checkout.session",
        "mode": "payment",
        "payment_status": "paid",
        "currency": "usd",
        "amount_subtotal": 2500,
        "amount_total": 2500,
        "customer": "cus_Ada",
        "customer_details": {"email": "ada@example.test"},
        "payment_intent": f"pi_{session_id}",
        "metadata": {"customer_id": "user_8842"},
        **fields,
    }


def subscription(sub_id: str, customer: str | None = "cus_Ada", **fields: Any) -> dict[str, Any]:
    """A subscription whose own metadata does not name the merchant's id."""
    return {
        "id": sub_id,
        "object": "subscription",
        "customer": customer,
        "status": "active",
        "currency": "usd",
        "items": {"object": "list", "has_more": False, "data": []},
        "metadata": {},
        **fields,
    }


def store(
    engine: Engine,
    event_type: str,
    resource: dict[str, Any],
    *,
    account: str | None = None,
    received_at: datetime | None = None,
) -> None:
    """Store a Stripe event about `resource` in the inbox, as the web endpoint would."""
    event: dict[str, Any] = {
        "id": f"evt_test_{next(_events)}",
        "object": "event",
        "api_version": "2025-03-31.basil",
        "created": 1764320000,
        "type": event_type,
        "data": {"object": resource},
    }
    if account:
        event["account"] = account
    store_delivery(engine, parse("stripe", json.dumps(event).encode(), {}), received_at)


def claim_all(engine: Engine) -> list[sa.Row[Any]]:
    queues = [[inbox.c.state == InboxState.PENDING], [inbox.c.state == InboxState.FAILED]]
    return claim(engine, inbox, OWNER, 100, DEFAULT_LEASE, queues, [inbox.c.id])


def stripe_client(
    fake: FakeStripe, sleeps: list[float] | None = None, *, key: str = DEFAULT_API_KEY, **kw: Any
) -> StripeAPI:
    """A client of the fake whose waits are recorded (or dropped), never slept."""
    options: dict[str, Any] = {"max_rps": 1000.0, "rng": random.Random(2), **kw}
    sleep = sleeps.append if sleeps is not None else (lambda _seconds: None)
    return StripeAPI.create(key, base_url=fake.url, sleep=sleep, **options)


def enrich_rows(
    engine: Engine,
    owner: str,
    rows: list[sa.Row[Any]],
    api: StripeAPI | None,
    config: StripeConfig,
    **options: Any,
) -> EnrichResult:
    """Stage 1's enrichment with the Stripe enricher over `api` (none when `api` is None)."""
    enrichers = {} if api is None else {"stripe": StripeEnricher(api, config)}
    return enrich.enrich_rows(engine, owner, rows, enrichers, **options)


def tracks(row: sa.Row[Any], enrichment: dict[str, Any] | None) -> list[Track]:
    """Map `row` with `enrichment`, as stage 1 does after the lookups."""
    actions = map_row(row, configs(), enrichment)
    return [action for action in actions if isinstance(action, Track)]


def order(row: sa.Row[Any], result: EnrichResult) -> dict[str, Any]:
    [track] = tracks(row, result.enrichment.get(row.id))
    return track.payload()


@contextmanager
def statements(engine: Engine) -> Iterator[list[str]]:
    """Every SQL statement `engine` runs inside the block."""
    seen: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen.append(statement)

    sa.event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        sa.event.remove(engine, "before_cursor_execute", record)


# --- fetching and storing ---------------------------------------------------------------------


def test_line_items_are_fetched_across_pages_and_stored_with_the_row(
    engine: Engine, fake_stripe: FakeStripe
) -> None:
    fake_stripe.add_line_items("cs_test_1", line_items(25))
    store(engine, "checkout.session.completed", session())
    [row] = claim_all(engine)
    result = enrich_rows(engine, OWNER, [row], stripe_client(fake_stripe, page_size=10), CONFIG)
    assert result.deferred == []
    assert result.enrichment == {row.id: {"line_items": line_items(25)}}
    assert len(fake_stripe.requests()) == 3  # three pages; the metadata names the person
    [stored] = inbox_rows(engine)
    assert stored.enrichment == {"line_items": line_items(25)}
    assert stored.lease_owner == OWNER  # still ours, to map
    placed = order(row, result)
    assert placed["items_complete"] is True
    assert len(placed["items"]) == 25
    assert placed["items"][0] == {
        "product_id": "prod_0",
        "variant_id": "price_0",
        "name": "Item 0",
        "quantity": 1,
        "price": 5,
    }


def test_a_stored_enrichment_is_reused_without_asking_stripe(
    engine: Engine, fake_stripe: FakeStripe
) -> None:
    fake_stripe.add_line_items("cs_test_1", line_items(3))
    store(engine, "checkout.session.completed", session())
    api = stripe_client(fake_stripe)
    enrich_rows(engine, OWNER, claim_all(engine), api, CONFIG)
    fake_stripe.clear_requests()
    fake_stripe.add_line_items("cs_test_1", line_items(1))  # Stripe's answer today differs
    [replayed] = inbox_rows(engine)  # the row as a replay reads it, enrichment included
    for client in (api, None):  # with the key, and after it was removed
        result = enrich_rows(engine, OWNER, [replayed], client, CONFIG)
        assert result.enrichment == {replayed.id: {"line_items": line_items(3)}}
        assert len(order(replayed, result)["items"]) == 3
    assert fake_stripe.requests() == []


def test_one_customer_is_fetched_once_for_many_rows(
    engine: Engine, fake_stripe: FakeStripe
) -> None:
    fake_stripe.add_customer(ADA)
    for n in range(5):
        store(engine, "customer.subscription.created", subscription(f"sub_{n}"))
    named = subscription("sub_named", metadata=ADA["metadata"])
    store(engine, "customer.subscription.created", named)
    store(engine, "customer.subscription.created", subscription("sub_guest", customer=None))
    rows = claim_all(engine)
    result = enrich_rows(engine, OWNER, rows, stripe_client(fake_stripe), CONFIG)
    assert [entry["path"] for entry in fake_stripe.requests()] == ["/v1/customers/cus_Ada"]
    looked_up = {"customer": {"id": "cus_Ada", "metadata": {"customer_id": "user_8842"}}}
    assert result.enrichment == {row.id: looked_up for row in rows[:5]}
    stored = inbox_rows(engine)
    assert [row.enrichment for row in stored] == [looked_up] * 5 + [None, None]
    assert "ada@example.test" not in json.dumps([row.enrichment for row in stored])
    [created] = tracks(rows[0], result.enrichment[rows[0].id])
    assert created.person.internal_id == "user_8842"
    [without] = tracks(rows[0], None)
    assert without.person.internal_id is None  # the lookup is what named them


def test_connected_accounts_are_looked_up_in_their_account(
    engine: Engine, fake_stripe: FakeStripe
) -> None:
    fake_stripe.add_line_items("cs_test_1", line_items(2), account="acct_1Conn")
    store(engine, "checkout.session.completed", session(), account="acct_1Conn")
    [row] = claim_all(engine)
    result = enrich_rows(engine, OWNER, [row], stripe_client(fake_stripe), CONFIG)
    assert result.enrichment[row.id] == {"line_items": line_items(2)}
    assert [entry["account"] for entry in fake_stripe.requests()] == ["acct_1Conn"]


def test_what_stripe_does_not_have_is_stored_as_looked_up(
    engine: Engine, fake_stripe: FakeStripe
) -> None:
    # The session is known, its customer is not (deleted): the items are kept, and a
    # replay asks for neither again.
    fake_stripe.add_line_items("cs_test_1", line_items(1))
    store(engine, "checkout.session.completed", session(metadata={}, customer="cus_Gone"))
    store(engine, "checkout.session.expired", session("cs_test_unknown", metadata={}))
    rows = claim_all(engine)
    result = enrich_rows(engine, OWNER, rows, stripe_client(fake_stripe), CONFIG)
    assert [row.enrichment for row in inbox_rows(engine)] == [{"line_items": line_items(1)}, {}]
    assert result.enrichment == {rows[0].id: {"line_items": line_items(1)}, rows[1].id: {}}
    assert order(rows[1], result)["items_complete"] is False


# --- Stripe failing ---------------------------------------------------------------------------


def test_a_429_is_retried_after_its_retry_after(engine: Engine, fake_stripe: FakeStripe) -> None:
    fake_stripe.add_line_items("cs_test_1", line_items(2))
    fake_stripe.set_faults(status=429, retry_after=1, times=1)
    store(engine, "checkout.session.completed", session())
    [row] = claim_all(engine)
    sleeps: list[float] = []
    result = enrich_rows(engine, OWNER, [row], stripe_client(fake_stripe, sleeps), CONFIG)
    assert sleeps == [1.0]  # Retry-After honoured, and the test did not wait for it
    assert result.deferred == []
    assert [entry["status"] for entry in fake_stripe.requests()] == [429, 200]
    assert order(row, result)["items_complete"] is True


def test_persistent_5xx_defers_rows_until_their_deadline_then_maps_them_without_items(
    engine: Engine, fake_stripe: FakeStripe
) -> None:
    fake_stripe.set_faults(status=503)
    for n in range(3):
        store(engine, "checkout.session.completed", session(f"cs_test_{n}"))
    rows = claim_all(engine)
    api = stripe_client(fake_stripe, [])
    now = utcnow()
    with capture_logs() as logs:
        result = enrich_rows(engine, OWNER, rows, api, CONFIG, now=now)
    assert result == EnrichResult({}, [row.id for row in rows])
    # One retried lookup told us Stripe is down; the other rows did not ask again.
    assert len(fake_stripe.requests()) == MAX_ATTEMPTS
    assert [entry["event"] for entry in logs if entry["log_level"] == "warning"] == [
        "stripe_unavailable",
        "stripe_enrichment_deferred",
    ]
    for stored in inbox_rows(engine):
        assert stored.enrichment is None
        assert stored.lease_owner == OWNER
        assert stored.lease_until == pytest.approx(now + DEFER_DEFAULT, abs=timedelta(seconds=1))
        assert stored.state == InboxState.PENDING
    assert claim_all(engine) == []  # nobody maps them before they are due

    late = now + DEADLINE + timedelta(seconds=1)
    fake_stripe.clear_requests()
    with capture_logs() as logs:
        result = enrich_rows(engine, OWNER, inbox_rows(engine), api, CONFIG, now=late)
    assert result == EnrichResult({}, [])
    skipped = [entry for entry in logs if entry["event"] == "stripe_enrichment_skipped"]
    assert [entry["inbox_id"] for entry in skipped] == [row.id for row in rows]
    assert {entry["log_level"] for entry in skipped} == {"warning"}
    assert skipped[0]["missing"] == ["line_items"]
    for row in inbox_rows(engine):
        assert row.enrichment is None  # a replay once Stripe is back fetches them
        placed = order(row, result)
        assert placed["items_complete"] is False
        assert "items" not in placed


def test_a_deferral_follows_retry_after_within_bounds_and_never_passes_the_deadline(
    engine: Engine, fake_stripe: FakeStripe
) -> None:
    fake_stripe.set_faults(status=429, retry_after=3600)  # too long to wait in the call
    now = utcnow()
    store(engine, "checkout.session.completed", session("cs_test_new"), received_at=now)
    almost = now - DEADLINE + timedelta(seconds=20)
    store(engine, "checkout.session.completed", session("cs_test_old"), received_at=almost)
    rows = claim_all(engine)
    result = enrich_rows(engine, OWNER, rows, stripe_client(fake_stripe, []), CONFIG, now=now)
    assert result.deferred == [row.id for row in rows]
    new, old = inbox_rows(engine)
    assert new.lease_until == pytest.approx(now + DEFER_MAX, abs=timedelta(seconds=1))
    assert old.lease_until == pytest.approx(almost + DEADLINE, abs=timedelta(seconds=1))
    assert len(fake_stripe.requests()) == 1  # a long Retry-After is not retried in the call


def test_a_refused_key_is_logged_with_a_hint_and_rows_go_out_without(
    engine: Engine, fake_stripe: FakeStripe
) -> None:
    fake_stripe.add_line_items("cs_test_0", line_items(1))
    for n in range(3):
        store(engine, "checkout.session.completed", session(f"cs_test_{n}"))
    rows = claim_all(engine)
    api = stripe_client(fake_stripe, [], key="sk_test_revoked")
    with capture_logs() as logs:
        result = enrich_rows(engine, OWNER, rows, api, CONFIG)
    assert result == EnrichResult({}, [])  # not deferred: waiting will not fix a key
    [error] = [entry for entry in logs if entry["log_level"] == "error"]
    assert error["event"] == "stripe_unauthorized"
    assert "STRIPE_API_KEY" in error["hint"]
    assert "sk_test_revoked" not in json.dumps(logs, default=str)
    assert len(fake_stripe.requests()) == 1
    assert [row.enrichment for row in inbox_rows(engine)] == [None] * 3
    assert order(rows[0], result)["items_complete"] is False


def test_rows_past_the_lookup_budget_go_to_the_next_pass(
    engine: Engine, fake_stripe: FakeStripe
) -> None:
    store(engine, "checkout.session.completed", session())
    [row] = claim_all(engine)
    now = utcnow()
    api = stripe_client(fake_stripe)
    result = enrich_rows(engine, OWNER, [row], api, CONFIG, now=now, budget=0)
    assert result.deferred == [row.id]
    assert fake_stripe.requests() == []
    [stored] = inbox_rows(engine)
    assert stored.lease_until == pytest.approx(now, abs=timedelta(seconds=1))  # free at once
    assert [again.id for again in claim_all(engine)] == [row.id]


def test_a_row_whose_lease_was_lost_is_not_written(engine: Engine, fake_stripe: FakeStripe) -> None:
    fake_stripe.add_line_items("cs_test_1", line_items(1))
    store(engine, "checkout.session.completed", session())
    [row] = claim_all(engine)
    with engine.begin() as conn:
        conn.execute(sa.update(inbox).values(lease_owner="someone-else"))
    enrich_rows(engine, OWNER, [row], stripe_client(fake_stripe), CONFIG)
    assert inbox_rows(engine)[0].enrichment is None


# --- nothing to do ----------------------------------------------------------------------------


def test_without_a_key_nothing_is_fetched_and_the_event_says_items_are_incomplete(
    engine: Engine, fake_stripe: FakeStripe, database_url: str
) -> None:
    fake_stripe.add_line_items("cs_test_1", line_items(2))
    store(engine, "checkout.session.completed", session())
    [row] = claim_all(engine)
    # The worker's stage 1 for settings with STRIPE_API_BASE but no STRIPE_API_KEY.
    stage1 = setup.build(make_settings(database_url, stripe_api_base=fake_stripe.url))
    assert stage1.enrichers == {}
    with statements(engine) as seen:
        result = enrich.enrich_rows(engine, OWNER, [row], stage1.enrichers)
    assert result == EnrichResult({}, [])
    assert seen == []
    assert fake_stripe.requests() == []
    placed = order(row, result)
    assert placed["items_complete"] is False
    assert "items" not in placed
    assert placed["total"] == 25


def test_rows_that_need_nothing_cost_no_query_and_no_call(
    engine: Engine, fake_stripe: FakeStripe
) -> None:
    complete = {"object": "list", "has_more": False, "data": line_items(1)}
    store(engine, "checkout.session.completed", session(line_items=complete))
    store(engine, "customer.updated", {"id": "cus_Ada", "object": "customer", "metadata": {}})
    store(engine, "issuing_card.created", {"id": "ic_1", "customer": "cus_Ada"})
    headers = {"x-shopify-topic": "orders/create", "x-shopify-shop-domain": "s.myshopify.com"}
    headers["x-shopify-webhook-id"] = "w1"
    store_delivery(engine, parse("shopify", shopify_order(), headers))
    rows = claim_all(engine)
    assert len(rows) == 4
    with statements(engine) as seen:
        result = enrich_rows(engine, OWNER, rows, stripe_client(fake_stripe), CONFIG)
    assert result == EnrichResult({}, [])
    assert seen == []
    assert fake_stripe.requests() == []


@pytest.mark.parametrize(
    ("event_type", "resource", "config", "need"),
    [
        ("checkout.session.completed", session(), CONFIG, Lookup("cs_test_1")),
        ("checkout.session.expired", session(metadata={}), CONFIG, Lookup("cs_test_1", "cus_Ada")),
        (
            "checkout.session.completed",
            session(line_items={"object": "list", "has_more": True, "data": line_items(10)}),
            CONFIG,
            Lookup("cs_test_1"),
        ),
        (
            "checkout.session.completed",
            session(line_items={"object": "list", "has_more": False, "data": []}),
            CONFIG,
            None,
        ),
        (
            "checkout.session.async_payment_failed",
            session(metadata={}),
            CONFIG,
            Lookup(None, "cus_Ada"),
        ),
        ("customer.subscription.created", subscription("sub_1"), CONFIG, Lookup(None, "cus_Ada")),
        (
            "customer.subscription.created",
            subscription("sub_1", metadata={"app_user": "u1"}),
            StripeConfig(internal_id_metadata_key="app_user"),
            None,
        ),
        (
            "customer.subscription.created",
            subscription("sub_1", customer={"id": "cus_Ada", "metadata": ADA["metadata"]}),
            CONFIG,
            None,
        ),
        ("customer.subscription.created", subscription("sub_1", customer="gcus_1"), CONFIG, None),
        (
            "invoice.paid",
            {
                "id": "in_1",
                "customer": "cus_Ada",
                "parent": {"subscription_details": {"metadata": ADA["metadata"]}},
            },
            CONFIG,
            None,
        ),
        ("invoice.paid", {"id": "in_1", "customer": "cus_Ada"}, CONFIG, Lookup(None, "cus_Ada")),
        ("payment_intent.succeeded", {"id": "pi_1", "customer": "cus_Ada"}, CONFIG, None),
        (
            # API 2025-03-31+: no `invoice` field, so whether one reports it is asked.
            "payment_intent.succeeded",
            {"id": "pi_1", "customer": "cus_Ada"},
            StripeConfig(payment_intent_events=True),
            Lookup(None, "cus_Ada", payment_intent_id="pi_1"),
        ),
        (
            "payment_intent.succeeded",
            {"id": "pi_1", "customer": "cus_Ada", "invoice": None},
            StripeConfig(payment_intent_events=True),
            Lookup(None, "cus_Ada"),
        ),
        ("customer.created", {"id": "cus_Ada", "metadata": {}}, CONFIG, None),
        (
            "checkout.session.completed",
            session(customer=None, metadata={}),
            CONFIG,
            Lookup("cs_test_1"),  # a guest: the items only
        ),
        (
            "checkout.session.completed",
            session("not_a_session", metadata={}),
            CONFIG,
            Lookup(None, "cus_Ada"),
        ),
    ],
)
def test_which_rows_need_which_lookups(
    event_type: str, resource: dict[str, Any], config: StripeConfig, need: Lookup | None
) -> None:
    delivery = StoredDelivery(
        provider="stripe",
        account="platform",
        event_type=event_type,
        payload={"type": event_type, "data": {"object": resource}},
        occurred_at=None,
    )
    assert lookup(delivery, config) == need


def test_a_body_that_is_not_json_needs_nothing(engine: Engine) -> None:
    row = SimpleNamespace(
        provider="stripe", event_type="invoice.paid", body=b"{not json", enrichment=None, id=1
    )
    enricher = StripeEnricher(StripeAPI.create("sk_test_unused"), CONFIG)
    assert enrich.enrich_rows(engine, OWNER, [row], {"stripe": enricher}) == EnrichResult()  # type: ignore[list-item]


# --- API 2025-03-31+: invoices and their PaymentIntents -----------------------------------


def basil_invoice(invoice_id: str = "in_Basil1", **fields: Any) -> dict[str, Any]:
    """A paid Basil invoice: no `payment_intent` field, the subscription under `parent`."""
    return {
        "id": invoice_id,
        "object": "invoice",
        "customer": "cus_Ada",
        "currency": "usd",
        "amount_paid": 2900,
        "total": 2900,
        "status": "paid",
        "billing_reason": "subscription_cycle",
        "parent": {
            "type": "subscription_details",
            "subscription_details": {"subscription": "sub_1", "metadata": {}},
        },
        "lines": {"object": "list", "has_more": False, "data": []},
        **fields,
    }


def invoice_payment(invoice_id: str, intent_id: str, status: str = "paid") -> dict[str, Any]:
    """An invoice payment as Stripe's API reference shows one."""
    return {
        "id": f"inpay_{intent_id}",
        "amount_paid": 2900 if status == "paid" else None,
        "amount_requested": 2900,
        "currency": "usd",
        "invoice": invoice_id,
        "is_default": True,
        "livemode": False,
        "payment": {"type": "payment_intent", "payment_intent": intent_id},
        "status": status,
        "status_transitions": {"canceled_at": None, "paid_at": 1764320000},
    }


def test_a_basil_invoice_learns_the_payment_intent_that_paid_it(
    engine: Engine, fake_stripe: FakeStripe
) -> None:
    fake_stripe.add_invoice_payment(invoice_payment("in_Basil1", "pi_Failed", status="canceled"))
    fake_stripe.add_invoice_payment(invoice_payment("in_Basil1", "pi_Paid"))
    fake_stripe.add_customer(ADA)
    store(engine, "invoice.paid", basil_invoice())
    [row] = claim_all(engine)
    result = enrich_rows(engine, OWNER, [row], stripe_client(fake_stripe), CONFIG)
    assert result.enrichment[row.id]["payment_intent"] == "pi_Paid"
    # Refunds name the PaymentIntent: the order carries it so they find the invoice.
    assert order(row, result)["payment_id"] == "pi_Paid"
    [asked] = [e["query"] for e in fake_stripe.requests() if e["path"] == "/v1/invoice_payments"]
    assert (asked["invoice"], asked["status"]) == ("in_Basil1", "paid")


def test_a_pre_basil_invoice_or_a_zero_one_asks_nothing_about_payments() -> None:
    older = {**basil_invoice(), "payment_intent": None}  # the field exists, even when null
    free = basil_invoice(amount_paid=0)
    for resource in (older, free):
        delivery = StoredDelivery(
            "stripe", "platform", "invoice.paid", {"data": {"object": resource}}, None
        )
        need = lookup(delivery, StripeConfig(internal_id_metadata_key="nothing"))
        assert need is None or need.invoice_id is None


def test_a_basil_payment_intent_of_an_invoice_defers_to_the_invoice(
    engine: Engine, fake_stripe: FakeStripe
) -> None:
    # With STRIPE_PAYMENT_INTENT_EVENTS=true a renewal's payment_intent.succeeded and
    # its invoice.paid would be two orders; the lookup says the invoice reports it.
    config = StripeConfig(payment_intent_events=True)
    fake_stripe.add_invoice_payment(invoice_payment("in_Renewal", "pi_Renewal"))
    intent = {
        "id": "pi_Renewal",
        "object": "payment_intent",
        "amount": 2900,
        "amount_received": 2900,
        "currency": "usd",
        "customer": "cus_Ada",
        "metadata": {"customer_id": "user_8842"},
        "status": "succeeded",
    }
    store(engine, "payment_intent.succeeded", intent)
    store(engine, "payment_intent.succeeded", {**intent, "id": "pi_OneOff"})
    renewal, one_off = claim_all(engine)
    result = enrich_rows(engine, OWNER, [renewal, one_off], stripe_client(fake_stripe), config)
    assert result.enrichment[renewal.id] == {"invoice": "in_Renewal"}
    assert result.enrichment[one_off.id] == {}  # looked up: no invoice (kept, not asked again)
    with_events = configs(stripe_payment_intent_events=True)
    renewal_actions = map_row(renewal, with_events, result.enrichment.get(renewal.id))
    one_off_actions = map_row(one_off, with_events, result.enrichment.get(one_off.id))
    assert [a.event for a in renewal_actions if isinstance(a, Track)] == []
    assert [a.event.value for a in one_off_actions if isinstance(a, Track)] == ["order_completed"]
