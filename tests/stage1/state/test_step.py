"""The stateful step in the pipeline: waits, merges, person state and journey guards."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from structlog.testing import capture_logs

from tests.mappers.golden import FIXTURES, configs, parse
from tests.pipeline import ScriptedCustomerIO, inbox_rows, ingest, outbox_rows
from webhooks.stage1.process import process_batch
from webhooks.stage1.state.identity import IdentityPolicy
from webhooks.stage1.state.step import StateConfig
from webhooks.stage2.deliver import deliver_batch
from webhooks.storage.inbox import store_delivery
from webhooks.storage.schema import identity_links, outbox, person_facts, person_state

CONFIG = configs()
SHOP = "example-shop.myshopify.com"
GRACE = f"shopify:{SHOP}:8100000000001"


def body(provider: str, case: str) -> dict[str, Any]:
    return copy.deepcopy(json.loads((FIXTURES / provider / f"{case}.json").read_text())["body"])


def ingest_as(engine: Engine, case: str, event: dict[str, Any], webhook_id: str, at: str) -> None:
    """A Shopify delivery of `case`'s topic with its own body, webhook id and event time."""
    fixture = json.loads((FIXTURES / "shopify" / f"{case}.json").read_text())
    headers = {k.lower(): v for k, v in fixture["headers"].items()}
    headers.update({"x-shopify-webhook-id": webhook_id, "x-shopify-triggered-at": at})
    store_delivery(engine, parse("shopify", json.dumps(event).encode(), headers))


def run(engine: Engine, cio: ScriptedCustomerIO, state: StateConfig | None = None) -> None:
    """Map until nothing is pending (woken rows included), then deliver what is due."""
    while process_batch(engine, "w", CONFIG, state=state):
        pass
    deliver_batch(engine, "w", cio.client())


def sent(cio: ScriptedCustomerIO, action: str) -> list[dict[str, Any]]:
    return [item for b in cio.bodies() for item in b.get("batch", []) if item["action"] == action]


def state_of(engine: Engine, person_id: str) -> dict[str, Any]:
    with engine.connect() as conn:
        row = conn.execute(
            sa.select(person_state).where(person_state.c.person_id == person_id)
        ).one()
    return {name: value for name, (value, _) in row.attributes.items()}


def another_order(engine: Engine, order_id: int, placed: str, **changes: Any) -> None:
    """Grace's order_create fixture as another order of hers, placed at `placed` (the
    shop's local time, UTC-4) with no checkout, delivered as it is placed."""
    order = body("shopify", "order_create")
    order.update(id=order_id, checkout_token=None, created_at=f"{placed}-04:00", **changes)
    at = datetime.fromisoformat(f"{placed}-04:00").astimezone(UTC)
    ingest_as(engine, "order_create", order, f"wh-{order_id}", at.isoformat())


def redact_grace(engine: Engine, cio: ScriptedCustomerIO) -> None:
    """Grace orders, then the shop asks for her redaction (both mapped and delivered)."""
    ingest(engine, "shopify", "order_create")
    ingest(engine, "shopify", "customers_redact")
    run(engine, cio)


def test_a_refund_naming_only_its_order_waits_then_lowers_lifetime_value(
    engine: Engine, cio: ScriptedCustomerIO
) -> None:
    ingest(engine, "shopify", "refund_create_partial")  # arrives before its order
    run(engine, cio)
    assert [row.state for row in inbox_rows(engine)] == ["waiting"]
    assert cio.bodies() == []
    ingest(engine, "shopify", "order_create")
    run(engine, cio)
    assert [row.state for row in inbox_rows(engine)] == ["done", "done"]
    events = {item["name"]: item for item in sent(cio, "event")}
    assert set(events) == {"order_completed", "refund_issued"}
    assert {item["identifiers"]["id"] for item in events.values()} == {GRACE}
    assert events["order_completed"]["attributes"]["is_first_order"] is True
    refund = events["refund_issued"]["attributes"]["amount"]
    # The last identify holds the whole truth: one order, its total less the refund.
    last = sent(cio, "identify")[-1]
    assert last["identifiers"] == {"id": GRACE}
    assert last["attributes"]["order_count"] == 1
    assert last["attributes"]["lifetime_value"] == round(56.04 - refund, 2)


def test_a_later_order_of_the_same_person_is_counted_and_a_repeat_changes_nothing(
    engine: Engine, cio: ScriptedCustomerIO
) -> None:
    ingest(engine, "shopify", "order_create")
    another_order(engine, 6200000000002, "2026-06-01T10:00:00")
    ingest(engine, "shopify", "order_paid")  # the first order again: same fact
    run(engine, cio)
    orders = [i["attributes"] for i in sent(cio, "event") if i["name"] == "order_completed"]
    assert [(o["order_id"], o["order_count"], o["is_first_order"]) for o in orders] == [
        ("6200000000001", 1, True),
        ("6200000000002", 2, False),
    ]
    attributes = state_of(engine, GRACE)
    assert attributes["email"] == "grace.buyer@example.test"
    with engine.connect() as conn:
        facts = conn.execute(sa.select(person_facts.c.fact_key)).scalars().all()
    assert sorted(facts) == [
        f"order:shopify:{SHOP}:6200000000001",
        f"order:shopify:{SHOP}:6200000000002",
    ]


def test_cart_update_is_held_and_suppressed_by_the_order_that_follows(
    engine: Engine, cio: ScriptedCustomerIO
) -> None:
    ingest(engine, "shopify", "checkout_create_customer")
    run(engine, cio)
    assert [i["name"] for i in sent(cio, "event")] == ["checkout_started"]
    update = body("shopify", "checkout_create_customer")
    update["line_items"][0]["quantity"] += 1
    update["total_price"] = "999.00"
    update["updated_at"] = "2026-05-04T11:21:00-04:00"
    ingest_as(engine, "checkout_update_items", update, "wh-update", "2026-05-04T15:21:00Z")
    run(engine, cio)
    [held] = [row for row in outbox_rows(engine) if row.op_key.startswith("cart_updated:")]
    assert held.state == "pending"
    assert held.next_attempt_at > datetime.now(UTC)  # held, not sent yet
    ingest(engine, "shopify", "order_create")
    run(engine, cio)
    [held] = [row for row in outbox_rows(engine) if row.op_key.startswith("cart_updated:")]
    assert (held.state, held.last_error) == (
        "suppressed",
        "its checkout was already completed by an order",
    )
    assert [i["name"] for i in sent(cio, "event")] == ["checkout_started", "order_completed"]
    order = sent(cio, "event")[-1]["attributes"]
    assert order["cart_id"] == "9f8e7d6c5b4a39281706f5e4d3c2b1a0"


def test_an_update_with_the_started_content_is_not_a_change(
    engine: Engine, cio: ScriptedCustomerIO
) -> None:
    no_hold = StateConfig(cart_update_hold_seconds=0)
    ingest(engine, "shopify", "checkout_create_customer")
    same = body("shopify", "checkout_create_customer")
    same["shipping_address"] = {"city": "Elsewhere"}  # not a material change
    ingest_as(engine, "checkout_update_items", same, "wh-same", "2026-05-04T15:21:00Z")
    run(engine, cio, no_hold)
    [update] = [row for row in outbox_rows(engine) if row.op_key.startswith("cart_updated:")]
    assert (update.state, update.last_error) == (
        "suppressed",
        "no material change since checkout_started",
    )
    assert [i["name"] for i in sent(cio, "event")] == ["checkout_started"]


def test_checkout_started_after_its_order_is_suppressed(
    engine: Engine, cio: ScriptedCustomerIO
) -> None:
    ingest(engine, "shopify", "order_create")
    run(engine, cio)
    ingest(engine, "shopify", "checkout_create_customer")
    run(engine, cio)
    assert [i["name"] for i in sent(cio, "event")] == ["order_completed"]


def test_an_invoice_before_its_customer_is_merged_into_the_internal_id(
    engine: Engine, cio: ScriptedCustomerIO
) -> None:
    invoice = body("stripe", "invoice_paid_subscription_create_basil")
    _strip_metadata(invoice)
    ingest(engine, "stripe", "invoice_paid_subscription_create_basil", **invoice)
    run(engine, cio)
    assert {i["identifiers"]["id"] for i in sent(cio, "event")} == {"stripe:cus_TestAda01"}
    ingest(engine, "stripe", "customer_created")  # shows cus_TestAda01 beside user_8842
    run(engine, cio)
    # Held, so the primary's identify is applied before Customer.io sees the merge.
    assert sent(cio, "merge") == []
    [held] = [row for row in outbox_rows(engine) if row.kind == "merge"]
    assert (held.state, held.solo) == ("pending", True)
    assert held.next_attempt_at > datetime.now(UTC)
    with engine.begin() as conn:  # the delay passes
        conn.execute(sa.update(outbox).values(next_attempt_at=datetime.now(UTC)))
    run(engine, cio)
    [alone] = [b["batch"] for b in cio.bodies() if any(i["action"] == "merge" for i in b["batch"])]
    assert len(alone) == 1  # a merge travels alone
    [merge] = sent(cio, "merge")
    assert (merge["primary"], merge["secondary"]) == (
        {"id": "user_8842"},
        {"id": "stripe:cus_TestAda01"},
    )
    # The primary is identified before the merge, with the order the invoice reported.
    identifies = sent(cio, "identify")
    assert identifies[-1]["identifiers"] == {"id": "user_8842"}
    assert identifies[-1]["attributes"]["order_count"] == 1
    with engine.connect() as conn:
        owners = set(conn.execute(sa.select(identity_links.c.person_id)).scalars())
    assert owners == {"user_8842"}


def test_a_merge_repoints_operations_still_queued(engine: Engine, cio: ScriptedCustomerIO) -> None:
    invoice = body("stripe", "invoice_paid_subscription_create_basil")
    _strip_metadata(invoice)
    ingest(engine, "stripe", "invoice_paid_subscription_create_basil", **invoice)
    ingest(engine, "stripe", "customer_created")
    process_batch(engine, "w", CONFIG, limit=1)  # the invoice, as stripe:cus_...
    process_batch(engine, "w", CONFIG, limit=1)  # the customer: merge before delivery
    deliver_batch(engine, "w", cio.client())
    assert {i["identifiers"]["id"] for i in sent(cio, "event")} == {"user_8842"}


def test_a_redaction_forgets_everything_kept_about_the_person(
    engine: Engine, cio: ScriptedCustomerIO
) -> None:
    # A guest checkout before the account existed left an anonymous profile too.
    guest = _guest_checkout("tok-guest", "grace.buyer@example.test", phone="+15550001111")
    ingest_as(engine, "checkout_create_guest", guest, "g0", "2026-05-01T10:00:00Z")
    ingest(engine, "shopify", "order_create")
    run(engine, cio)
    ingest(engine, "shopify", "customers_redact")
    run(engine, cio)
    assert sent(cio, "delete")[0]["identifiers"] == {"id": GRACE}
    with engine.connect() as conn:
        for table in (person_state, person_facts):
            assert conn.execute(sa.select(sa.func.count()).select_from(table)).scalar() == 0
        assert GRACE not in set(conn.execute(sa.select(identity_links.c.person_id)).scalars())
        keys = set(conn.execute(sa.select(identity_links.c.key)).scalars())
    assert "email:grace.buyer@example.test" not in keys


@pytest.mark.parametrize(
    "shopify_format", ["shopify:{account}:{customer_id}", "{customer_id}", "sh-{customer_id}"]
)
def test_a_shop_redaction_erases_the_shops_state(
    engine: Engine, cio: ScriptedCustomerIO, shopify_format: str
) -> None:
    # Whatever the person-id format (one without {account} too), only the shop's own
    # customers are erased: never the other source's people, never another shop's.
    policy = IdentityPolicy(
        person_id_formats={"stripe": "stripe:{customer_id}", "shopify": shopify_format}
    )
    state = StateConfig(identity=policy)
    ingest(engine, "shopify", "order_create")
    fixture = json.loads((FIXTURES / "shopify" / "order_create.json").read_text())
    headers = {k.lower(): v for k, v in fixture["headers"].items()}
    headers.update({"x-shopify-shop-domain": "other-shop.myshopify.com"})
    other = fixture["body"]
    other["customer"]["id"] = 8100000000999
    store_delivery(engine, parse("shopify", json.dumps(other).encode(), headers))
    ingest(engine, "stripe", "customer_created")  # another source's person stays
    run(engine, cio, state)
    with engine.connect() as conn:
        before = set(conn.execute(sa.select(person_state.c.person_id)).scalars())
    ingest(engine, "shopify", "shop_redact")
    run(engine, cio, state)
    with engine.connect() as conn:
        keys = set(conn.execute(sa.select(identity_links.c.key)).scalars())
        people = set(conn.execute(sa.select(person_state.c.person_id)).scalars())
        facts = list(conn.execute(sa.select(person_facts.c.fact_key)).scalars())
    assert not any(key.startswith(f"shopify:{SHOP}:") for key in keys)
    ours = shopify_format.format(account=SHOP, customer_id=8100000000001)
    theirs = shopify_format.format(account="other-shop.myshopify.com", customer_id=8100000000999)
    assert before == {ours, theirs, "user_8842"}
    assert people == {theirs, "user_8842"}  # the other shop's and the other source's stay
    assert len(facts) == 1  # the other shop's order
    assert not any(f"shopify:{SHOP}:" in fact for fact in facts)
    # Customer.io is told too: the shop's customer deleted, nobody else.
    assert [item["identifiers"] for item in sent(cio, "delete")] == [{"id": ours}]


def test_a_redaction_of_a_shop_never_seen_sends_nothing_and_says_so(
    engine: Engine, cio: ScriptedCustomerIO
) -> None:
    ingest(engine, "stripe", "customer_created")
    run(engine, cio)
    with capture_logs() as logs:
        ingest(engine, "shopify", "shop_redact")
        run(engine, cio)
    assert sent(cio, "delete") == []
    assert [entry["event"] for entry in logs].count("account_redact_unknown") == 1
    with engine.connect() as conn:
        people = set(conn.execute(sa.select(person_state.c.person_id)).scalars())
    assert people == {"user_8842"}
    assert [r.state for r in inbox_rows(engine)] == ["done", "done"]


def _strip_metadata(event: dict[str, Any]) -> None:
    """An invoice that names only its customer (no internal id anywhere in it)."""
    text = json.dumps(event["data"]["object"]).replace('"user_8842"', "null")
    event["data"]["object"] = json.loads(text)


def _guest_checkout(token: str, email: str, phone: str | None = None) -> dict[str, Any]:
    guest = body("shopify", "checkout_create_guest")
    guest.update(token=token, email=email, phone=phone)
    return guest


def test_a_link_taken_over_by_a_customer_is_kept_for_later_guests(
    engine: Engine, cio: ScriptedCustomerIO
) -> None:
    # The email is first seen on a guest checkout (linked to the anonymous id), then on
    # the customer account: a later guest checkout with it is the customer's.
    email = "lin.newcomer@example.test"
    ingest_as(
        engine,
        "checkout_create_guest",
        _guest_checkout("tok1", email),
        "g1",
        "2026-05-01T10:00:00Z",
    )
    run(engine, cio)
    ingest(engine, "shopify", "customers_create")
    run(engine, cio)
    ingest_as(
        engine,
        "checkout_create_guest",
        _guest_checkout("tok2", email),
        "g2",
        "2026-05-02T10:00:00Z",
    )
    run(engine, cio)
    customer = f"shopify:{SHOP}:8100000000005"
    [second] = [i for i in sent(cio, "event") if i["attributes"]["cart_id"] == "tok2"]
    assert second["identifiers"] == {"id": customer}


def test_a_guest_typing_a_customers_email_changes_none_of_their_attributes(
    engine: Engine, cio: ScriptedCustomerIO
) -> None:
    ingest(engine, "shopify", "customers_create")
    run(engine, cio)
    before = state_of(engine, f"shopify:{SHOP}:8100000000005")
    intruder = _guest_checkout("tok9", "lin.newcomer@example.test", phone="+15559999999")
    intruder["billing_address"] = {"first_name": "Mallory", "last_name": "X"}
    ingest_as(engine, "checkout_create_guest", intruder, "g9", "2026-06-01T10:00:00Z")
    run(engine, cio)
    # The checkout event reaches the customer (the email is theirs), the name, phone
    # and consent the intruder typed do not.
    assert state_of(engine, f"shopify:{SHOP}:8100000000005") == before
    with engine.connect() as conn:
        linked = conn.execute(
            sa.select(identity_links.c.person_id).where(
                identity_links.c.key == f"shopify:{SHOP}:checkout:tok9"
            )
        ).scalar()
    assert linked is None  # the intruder's checkout token is not the customer's


def test_an_earlier_order_arriving_late_takes_its_place_by_date(
    engine: Engine, cio: ScriptedCustomerIO
) -> None:
    another_order(engine, 6200000000002, "2026-06-01T10:00:00")
    run(engine, cio)  # a separate batch: the totals are stored before the late one
    ingest(engine, "shopify", "order_create")  # placed 2026-05-04, arrives last
    run(engine, cio)
    orders = {
        i["attributes"]["order_id"]: i["attributes"]
        for i in sent(cio, "event")
        if i["name"] == "order_completed"
    }
    # The late one is the person's first by date, whatever the other event said.
    assert orders["6200000000001"]["order_count"] == 1
    assert orders["6200000000001"]["is_first_order"] is True
    assert orders["6200000000002"]["order_count"] == 1  # sent when it was the only one
    last = sent(cio, "identify")[-1]["attributes"]
    assert (last["order_count"], last["first_order_date"]) == (2, orders_date("2026-05-04"))


def orders_date(day: str) -> int:
    """The Unix time order_create's order was placed (its created_at)."""
    fixture = json.loads((FIXTURES / "shopify" / "order_create.json").read_text())
    at = fixture["body"]["created_at"]
    assert at.startswith(day)
    return int(datetime.fromisoformat(at).timestamp())


def test_state_saved_by_another_worker_meanwhile_makes_a_worker_compute_again(
    sqlite_url: str,
) -> None:
    """SQLite (one writer, no locks held while computing): the state epoch tells.
    PostgreSQL's step locks instead: tests/stage1/state/test_locks.py."""
    import pytest

    from webhooks.stage1.state.store import StateChanged, begin_state, begin_writes
    from webhooks.storage import migrate
    from webhooks.storage.db import create_db_engine

    engine = create_db_engine(sqlite_url, timeout=2)
    migrate.upgrade(engine)
    with engine.begin() as slow:
        seen = begin_state(slow)  # reads state without the write lock
        ingest(engine, "shopify", "order_create")
        assert process_batch(engine, "fast", CONFIG) == 1  # another worker saves state
        with pytest.raises(StateChanged):
            begin_writes(slow, seen)
    with engine.begin() as again:  # computing again from fresh reads succeeds
        begin_writes(again, begin_state(again))


def test_a_data_request_is_kept_open_with_the_person_it_names(
    engine: Engine, cio: ScriptedCustomerIO
) -> None:
    from webhooks.storage.schema import data_requests

    ingest(engine, "shopify", "order_create")
    run(engine, cio)
    with capture_logs() as logs:
        ingest(engine, "shopify", "customers_data_request")
        ingest(engine, "shopify", "customers_data_request")  # redelivered: kept once
        run(engine, cio)
    with engine.connect() as conn:
        [request] = conn.execute(sa.select(data_requests)).all()
    assert request.provider == "shopify"
    assert request.account == SHOP
    assert request.request_id == "7300000001"
    assert request.person_id == GRACE
    assert request.order_ids == ["6200000000001"]
    assert request.answered_at is None
    [logged] = [e for e in logs if e["event"] == "data_request_recorded"]
    assert logged["person_known"] is True
    assert "grace" not in str(logged).lower()  # ids only, never the person's data
    assert [r.state for r in inbox_rows(engine)] == ["done", "done"]


def last_identify(cio: ScriptedCustomerIO, person_id: str) -> dict[str, Any]:
    identifies = [i for i in sent(cio, "identify") if i["identifiers"] == {"id": person_id}]
    return dict(identifies[-1]["attributes"])


def test_a_refund_of_an_order_never_seen_is_sent_but_subtracts_nothing(
    engine: Engine, cio: ScriptedCustomerIO
) -> None:
    # A purchase made before go-live: the refund names a customer, so it is sent to
    # them, but the service never counted the order and must not count below zero.
    ingest(engine, "stripe", "charge_refunded_second_partial_2023")  # 10.00 of pi_3TestPay01
    run(engine, cio)
    assert [i["name"] for i in sent(cio, "event")] == ["refund_issued"]
    attributes = last_identify(cio, "stripe:cus_TestAda01")
    assert (attributes["order_count"], attributes["lifetime_value"]) == (0, 0)
    # When the order does arrive (here: a late webhook), the refund counts against it.
    ingest(engine, "stripe", "payment_intent_succeeded_from_checkout")
    while process_batch(engine, "w", configs(stripe_payment_intent_events=True)):
        pass
    deliver_batch(engine, "w", cio.client())
    attributes = last_identify(cio, "user_8842")
    assert (attributes["order_count"], attributes["lifetime_value"]) == (1, 39.5)


def test_a_cancelled_order_leaves_the_totals_and_its_refund_is_not_subtracted_twice(
    engine: Engine, cio: ScriptedCustomerIO
) -> None:
    ingest(engine, "shopify", "order_create")
    run(engine, cio)
    assert last_identify(cio, GRACE)["order_count"] == 1
    ingest(engine, "shopify", "order_cancelled")
    ingest(engine, "shopify", "refund_create_partial")  # the cancellation's refund
    run(engine, cio)
    names = [i["name"] for i in sent(cio, "event")]
    # What was sent stays sent; the cancellation and the refund follow it.
    assert names == ["order_completed", "order_canceled", "refund_issued"]
    attributes = last_identify(cio, GRACE)
    assert (attributes["order_count"], attributes["lifetime_value"]) == (0, 0)
    assert "first_order_date" not in attributes
    # A later order is the person's first that counts.
    another_order(engine, 6200000000002, "2026-06-01T10:00:00")
    run(engine, cio)
    [later] = [i for i in sent(cio, "event") if i["attributes"]["order_id"] == "6200000000002"]
    assert (later["attributes"]["order_count"], later["attributes"]["is_first_order"]) == (1, True)
    assert last_identify(cio, GRACE)["lifetime_value"] == 56.04


def test_an_order_reported_after_its_cancellation_starts_no_purchase_journey(
    engine: Engine, cio: ScriptedCustomerIO
) -> None:
    ingest(engine, "shopify", "order_cancelled")
    run(engine, cio)
    ingest(engine, "shopify", "order_paid")  # delivered late, after the cancellation
    run(engine, cio)
    assert [i["name"] for i in sent(cio, "event")] == ["order_canceled"]
    [completed] = [r for r in outbox_rows(engine) if r.op_key.startswith("order_completed:")]
    assert completed.state == "suppressed"
    assert "cancelled" in completed.last_error
    attributes = last_identify(cio, GRACE)
    assert (attributes["order_count"], attributes["lifetime_value"]) == (0, 0)


def test_the_box_ticked_at_checkout_never_outvotes_a_later_unsubscribe(
    engine: Engine, cio: ScriptedCustomerIO
) -> None:
    # API 2025-01+: an order's only consent is buyer_accepts_marketing, ticked when it
    # was placed. A cancellation reported after the buyer unsubscribed must not bring
    # the subscription back.
    ingest(engine, "shopify", "order_create")  # ticked, 2026-05-04
    ingest(engine, "shopify", "email_consent_update")  # unsubscribed, 2026-05-12
    run(engine, cio)
    cancelled = body("shopify", "order_cancelled")
    ingest_as(engine, "order_cancelled", cancelled, "wh-cancel", "2026-06-01T10:00:00Z")
    run(engine, cio)
    assert state_of(engine, GRACE)["email_consent"] is False
    assert last_identify(cio, GRACE)["email_consent"] is False


LATE_AFTER_REDACTION = [
    # (fixture, what it is): each names the erased customer, their email or an erased
    # order, and is dated before the redaction (2026-09-01) or about an erased order.
    ("order_paid", "orders/paid of an erased order"),
    ("refund_create_partial", "a refund naming only an erased order"),
    ("customers_update", "a customer update dated before the redaction"),
    ("email_consent_update", "an email consent change dated before it"),
    ("sms_consent_update", "an SMS consent change dated before it"),
    ("subscription_contract_create", "a subscription contract of the customer"),
    ("order_cancelled", "a cancellation of an erased order"),
]


@pytest.mark.parametrize(("case", "what"), LATE_AFTER_REDACTION)
def test_nothing_about_an_erased_customer_reaches_customerio_after_the_redaction(
    engine: Engine, cio: ScriptedCustomerIO, case: str, what: str
) -> None:
    ingest(engine, "shopify", "order_create")
    run(engine, cio)
    ingest(engine, "shopify", "customers_redact")
    run(engine, cio)
    before = len(cio.bodies())
    ingest(engine, "shopify", case)  # delivered late: a retry, a backlog, a replay
    run(engine, cio)
    assert cio.bodies()[before:] == [], what  # nothing recreates the profile
    assert [row.state for row in inbox_rows(engine)][-1] == "done"  # not waiting forever
    late = [r for r in outbox_rows(engine) if r.inbox_id == inbox_rows(engine)[-1].id]
    assert late, "what it would have sent is recorded"
    # Recorded as suppressed with the reason, and nothing of who it was about.
    assert {(r.state, r.last_error, r.person_id) for r in late} == {
        ("suppressed", "erased by a privacy redaction", None)
    }
    assert all(r.payload in ({}, {"id": r.op_id}) for r in late)
    # Keyed by a digest: no order id or token in clear, and the fact's own key stays
    # free for when the erasure has expired.
    assert all(r.op_key.startswith("erased:") and "620000000000" not in r.op_key for r in late)
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(person_state)).scalar() == 0


def test_erasures_are_kept_as_digests_never_in_clear(
    engine: Engine, cio: ScriptedCustomerIO
) -> None:
    from webhooks.storage.schema import erasures

    redact_grace(engine, cio)
    with engine.connect() as conn:
        rows = conn.execute(sa.select(erasures)).all()
    assert rows  # the person, their email, customer id, orders, tokens
    text = json.dumps([[str(v) for v in row] for row in rows])
    for secret in ("grace", "8100000000001", "6200000000001", "example-shop"):
        assert secret not in text
    assert all(len(row.digest) == 64 for row in rows)


def test_new_activity_after_a_redaction_is_new_data(
    engine: Engine, cio: ScriptedCustomerIO
) -> None:
    # The erased customer comes back and orders again after the redaction: a new order,
    # dated after it, is sent (a new profile); its earlier orders stay erased.
    redact_grace(engine, cio)
    another_order(engine, 6200000000009, "2026-10-01T10:00:00")
    run(engine, cio)
    [order] = [i for i in sent(cio, "event") if i["attributes"]["order_id"] == "6200000000009"]
    assert order["identifiers"] == {"id": GRACE}
    assert (order["attributes"]["order_count"], order["attributes"]["is_first_order"]) == (1, True)
    assert last_identify(cio, GRACE)["lifetime_value"] == 56.04  # the erased order is gone


def test_a_shop_redaction_is_remembered_for_every_person_of_the_shop(
    engine: Engine, cio: ScriptedCustomerIO
) -> None:
    ingest(engine, "shopify", "order_create")
    ingest(engine, "shopify", "shop_redact")
    run(engine, cio)
    before = len(cio.bodies())
    ingest(engine, "shopify", "order_paid")
    ingest(engine, "shopify", "customers_update")
    run(engine, cio)
    assert cio.bodies()[before:] == []


def test_a_deleted_subscription_is_canceled_whatever_was_reported_since_the_request(
    engine: Engine, cio: ScriptedCustomerIO
) -> None:
    # The cancel is requested, then the subscription is paused and resumed, then it
    # ends. Its subscription_canceled is one fact with the request, but the status
    # `canceled` is as of the deletion: the resume reported in between must not win.
    # All within a day of the request (so the deletion is timed by it, see TRIGGER_WINDOW).
    for case, created in (
        ("subscription_created_basil", 1764320000),
        ("subscription_updated_scheduled_cancel", 1764406400),  # the request
        ("subscription_paused", 1764410000),
        ("subscription_resumed", 1764420000),
        ("subscription_deleted_after_scheduled_cancel", 1764430000),
    ):
        ingest(engine, "stripe", case, created=created)
    run(engine, cio)
    assert last_identify(cio, "user_8842")["subscription_status"] == "canceled"
    cancels = [i for i in sent(cio, "event") if i["name"] == "subscription_canceled"]
    assert len(cancels) == 1  # the scheduled cancel and the deletion are one fact


def test_an_erasure_does_not_reach_another_customer_sharing_the_email(
    engine: Engine, cio: ScriptedCustomerIO
) -> None:
    # A family account: another customer of the shop uses the same address. Their
    # order names their own customer id: it is about them, not about the erased Grace.
    redact_grace(engine, cio)
    family = {**body("shopify", "order_create")["customer"], "id": 8100000000077}
    another_order(engine, 6200000000077, "2026-05-04T11:30:00", cart_token=None, customer=family)
    run(engine, cio)
    [order] = [i for i in sent(cio, "event") if i["attributes"]["order_id"] == "6200000000077"]
    assert order["identifiers"] == {"id": f"shopify:{SHOP}:8100000000077"}


def test_an_erasure_is_forgotten_after_its_retention(
    engine: Engine, cio: ScriptedCustomerIO
) -> None:
    from webhooks.storage.schema import erasures

    redact_grace(engine, cio)
    with engine.begin() as conn:  # ERASURE_RETENTION_DAYS later
        conn.execute(sa.update(erasures).values(expires_at=datetime(2020, 1, 1, tzinfo=UTC)))
    before = len(sent(cio, "identify"))
    ingest(engine, "shopify", "customers_update")  # dated before the redaction
    run(engine, cio)
    assert [i["identifiers"] for i in sent(cio, "identify")[before:]] == [{"id": GRACE}]
