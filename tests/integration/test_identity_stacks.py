"""The three worked examples of docs/identity.md, end to end.

Signed webhooks go into real gunicorn (`webhooks serve`); its real worker (on PostgreSQL
with three more `webhooks worker` processes) races to map and deliver them; the fake
Customer.io runs in its own process. Every assertion is on what that fake's people view
adds up to (`FakeCustomerIOClient.people()`): the profiles a merchant would see in
Customer.io, with their attributes and their activity.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

from tests.conftest import SHOPIFY_SECRET, STRIPE_SECRET
from tests.integration.cio import wait_for
from tests.integration.service import serve, upgrade, worker_processes
from tests.integration.settle import wait_until_settled
from tests.integration.test_delivery_e2e import fake, stack_env
from tests.stage1.state.stacks import (
    BEANS,
    GRACE,
    MUG,
    TOKEN,
    Hook,
    as_user,
    grace_contact,
    guest_checkout,
    shopify,
    stripe,
    untagged,
    with_user,
)
from webhooks.fakes.customerio import FakeCustomerIOClient
from webhooks.providers.shopify import signature as shopify_provider
from webhooks.providers.stripe import signature as stripe_provider
from webhooks.storage.db import create_db_engine
from webhooks.storage.schema import inbox, outbox

__all__ = ["fake"]  # the fake Customer.io process fixture, shared with the e2e tests

CUS = "stripe:cus_TestAda01"
RACING_WORKERS = 3
HOLD_SECONDS = 5  # CART_UPDATE_HOLD_SECONDS here: ample time for the order to follow


@contextmanager
def running(
    database_url: str, fake: FakeCustomerIOClient, tmp_path: Path, **settings: str
) -> Iterator[str]:
    """`webhooks serve` against the fake, with these settings (environment variables)."""
    env = {**stack_env(database_url, fake), **settings}
    if not database_url.startswith("sqlite"):
        upgrade(env)
    # On PostgreSQL, three workers besides serve's own: four racing over the one person
    # of each stack under the per-person locks (SQLite has one writer; its racing is
    # tests/stage1/state/test_racing.py's).
    racing = 0 if database_url.startswith("sqlite") else RACING_WORKERS
    with serve(env, tmp_path) as base, worker_processes(env, tmp_path, racing):
        yield base


def post(base: str, hook: Hook) -> None:
    """Send the delivery signed as its provider signs it; the service must accept it."""
    body = json.dumps(hook.body).encode()
    headers = dict(hook.headers)
    if hook.provider == "stripe":
        headers["Stripe-Signature"] = stripe_provider.sign(body, STRIPE_SECRET)
    else:
        headers["X-Shopify-Hmac-Sha256"] = shopify_provider.sign(body, SHOPIFY_SECRET)
    response = httpx.post(f"{base}/webhooks/{hook.provider}", content=body, headers=headers)
    assert response.status_code == 200, response.text


def person(fake: FakeCustomerIOClient, person_id: str) -> dict[str, Any] | None:
    """The profile the fake holds for `person_id`, if any."""
    for profile in fake.people()["people"]:
        if profile["identifier"] == {"id": person_id}:
            return profile
    return None


def has_event(fake: FakeCustomerIOClient, person_id: str, name: str) -> dict[str, Any] | None:
    """The profile, once it holds an event called `name`."""
    profile = person(fake, person_id)
    if profile and any(event["name"] == name for event in profile["events"]):
        return profile
    return None


def event(profile: dict[str, Any], name: str) -> dict[str, Any]:
    """The profile's one event called `name`."""
    [found] = [e for e in profile["events"] if e["name"] == name]
    return found


def all_done(database_url: str) -> bool:
    """True when the worker has mapped every delivery stored so far."""
    engine = create_db_engine(database_url)
    try:
        with engine.connect() as conn:
            states = set(conn.execute(sa.select(inbox.c.state)).scalars())
    finally:
        engine.dispose()
    return states == {"done"}


def outbox_row(database_url: str, op_key_prefix: str) -> Any:
    """The outbox row whose op_key starts with `op_key_prefix`, if written yet."""
    engine = create_db_engine(database_url)
    try:
        with engine.connect() as conn:
            query = sa.select(outbox).where(outbox.c.op_key.startswith(op_key_prefix))
            return conn.execute(query).first()
    finally:
        engine.dispose()


def test_shopify_only_store_guest_checkout_then_order_then_refund(
    database_url: str, fake: FakeCustomerIOClient, tmp_path: Path
) -> None:
    """A guest's cart, their order as customer 8100000000001, a refund naming the order."""
    started = guest_checkout(
        "started", "checkouts/create", TOKEN, "2026-05-04T15:20:06Z", [(MUG, 2)]
    )
    update = guest_checkout(
        "update",
        "checkouts/update",
        TOKEN,
        "2026-05-04T15:22:00Z",
        [(MUG, 3), (BEANS, 1)],
        **grace_contact("Portland"),
    )
    order = shopify("orders-create", "order_create", "2026-05-04T15:26:43Z")
    refund = shopify("refund", "refund_create_partial", "2026-05-08T14:00:01Z")
    settings = {"CART_UPDATE_HOLD_SECONDS": str(HOLD_SECONDS)}
    with running(database_url, fake, tmp_path, **settings) as base:
        post(base, started)
        # The guest is nobody yet: an anonymous event, waiting for a profile to claim it.
        [guest] = wait_for(lambda: fake.people()["anonymous_events"], what="anonymous event")
        assert (guest["anonymous_id"], guest["name"]) == (f"shopify:{TOKEN}", "checkout_started")
        assert fake.people()["people"] == []

        post(base, update)
        held = wait_for(lambda: outbox_row(database_url, "cart_updated:"), what="cart_updated")
        # Held, not sent: an order within the hold must still be able to withdraw it.
        assert (held.state, held.next_attempt_at > datetime.now(UTC)) == ("pending", True)

        post(base, order)
        grace = wait_for(lambda: has_event(fake, GRACE, "order_completed"), what="the order")
        # One profile, holding the guest's checkout_started through its anonymous_id; a
        # second profile (or the event left unattached) would split the buyer's journey.
        assert [p["identifier"] for p in fake.people()["people"]] == [{"id": GRACE}]
        assert fake.people()["anonymous_events"] == []
        assert f"shopify:{TOKEN}" in grace["anonymous_ids"]
        assert [e["name"] for e in grace["events"]] == ["checkout_started", "order_completed"]
        placed = event(grace, "order_completed")["data"]
        # The welcome journey's trigger and the cart journey's exit.
        assert (placed["is_first_order"], placed["order_count"]) == (True, 1)
        assert placed["cart_id"] == TOKEN
        assert grace["attributes"]["order_count"] == 1
        assert grace["attributes"]["lifetime_value"] == 56.04
        # The order's creation time (created_at), not the webhook's.
        assert grace["attributes"]["first_order_date"] == 1777908402
        assert grace["attributes"]["email"] == "grace.buyer@example.test"

        post(base, refund)  # names only order_id: the order's link finds Grace
        grace = wait_for(
            lambda: (
                (p := has_event(fake, GRACE, "refund_issued"))
                and p["attributes"]["lifetime_value"] != 56.04
                and p
            ),
            what="the refund and the lowered lifetime_value",
        )
        assert [p["identifier"] for p in fake.people()["people"]] == [{"id": GRACE}]
        assert event(grace, "refund_issued")["data"]["amount"] == 17.5
        # What a VIP segment on lifetime_value reads: the order less the refund.
        assert grace["attributes"]["lifetime_value"] == 38.54
        assert grace["attributes"]["order_count"] == 1  # a refund is not an order

        # A cart_updated the order did not withdraw would still be pending, and go out
        # once its hold ends (a cart-recovery mail to someone who has already paid):
        # settled means it was either sent by then or never will be.
        wait_until_settled(database_url, fake, timeout=HOLD_SECONDS + 15)
        names = [e["name"] for e in wait_for(lambda: person(fake, GRACE))["events"]]
        assert "cart_updated" not in names
        withdrawn = outbox_row(database_url, "cart_updated:")
        assert (withdrawn.state, withdrawn.last_error) == (
            "suppressed",
            "its checkout was already completed by an order",
        )


def test_stripe_only_subscription_business(
    database_url: str, fake: FakeCustomerIOClient, tmp_path: Path
) -> None:
    """No metadata anywhere: everything lands on stripe:cus_..., status ends canceled."""
    customer = untagged(stripe("customer-created", "customer_created"))
    created = untagged(stripe("subscription-created", "subscription_created_basil"))
    invoice = untagged(
        stripe("invoice-paid", "invoice_paid_subscription_create_basil", created=1764320100)
    )
    renamed = untagged(stripe("customer-updated", "customer_updated"))  # ada.l@, 1764320500
    deleted = untagged(
        stripe("subscription-deleted", "subscription_deleted_after_scheduled_cancel")
    )
    # Stripe does not promise order. Delivered last, two older reports: the scheduled
    # cancel (status still active) and an email change made before the newest one.
    late_cancel = untagged(stripe("subscription-updated", "subscription_updated_scheduled_cancel"))
    late_email = stripe("customer-updated-earlier", "customer_updated", id="evt_1TestCusUpdOld")
    late_email.body.update(created=1764320200)
    late_email.body["data"]["object"].update(email="ada.old@example.test", metadata={})
    with running(database_url, fake, tmp_path) as base:
        for hook in (customer, created, invoice, renamed, deleted):
            post(base, hook)
        ada = wait_for(
            lambda: (
                (p := has_event(fake, CUS, "subscription_canceled"))
                and len(p["events"]) == 3
                and p["attributes"].get("subscription_status") == "canceled"
                and p
            ),
            what="three events on stripe:cus_TestAda01",
        )
        assert [p["identifier"] for p in fake.people()["people"]] == [{"id": CUS}]
        # In time order: what journeys run on. The cancel was requested 29 days before
        # the deletion that reports it first; Customer.io triggers no campaign for an
        # event older than 72 hours, so it is timed by the deletion.
        assert [(e["name"], e["timestamp"]) for e in ada["events"]] == [
            ("subscription_created", 1764320000),
            ("order_completed", 1764320100),
            ("subscription_canceled", 1766912000),
        ]
        assert event(ada, "order_completed")["data"]["order_id"] == "in_1TestFirst05"
        attributes = ada["attributes"]
        assert (attributes["email"], attributes["first_name"]) == ("ada.l@example.test", "Ada")
        assert (attributes["order_count"], attributes["lifetime_value"]) == (1, 29)

        sent = len(fake.operations())
        post(base, late_cancel)
        post(base, late_email)
        wait_for(lambda: all_done(database_url), what="the late reports mapped")
        wait_until_settled(database_url, fake)  # anything they caused is delivered by now
        ada = person(fake, CUS)
        assert ada is not None
        # An older report must not bring `active` back: a win-back segment would lose her.
        assert ada["attributes"]["subscription_status"] == "canceled"
        # Nor an older address: mail would go to the mailbox she moved away from.
        assert ada["attributes"]["email"] == "ada.l@example.test"
        # Same fact as the deletion (same canceled_at): no second cancellation event.
        assert [e["name"] for e in ada["events"]].count("subscription_canceled") == 1
        # Neither changed anything, so nothing more was sent (the identify is skipped
        # when the attributes are what was last sent).
        assert len(fake.operations()) == sent


def test_app_with_its_own_ids_on_both_providers(
    database_url: str, fake: FakeCustomerIOClient, tmp_path: Path
) -> None:
    """user_1 on Stripe (metadata) and Shopify (metafield): one profile, both stores."""
    invoice = untagged(
        stripe("invoice-paid", "invoice_paid_subscription_create_basil", created=1764320100)
    )
    customer = as_user(stripe("customer-created", "customer_created"), "user_1")
    order = with_user(shopify("orders-create", "order_create", "2026-05-04T15:26:43Z"), "user_1")
    # A merge waits MERGE_DELAY_SECONDS after its primary's identify (60 s by default).
    settings = {"SHOPIFY_INTERNAL_ID_METAFIELD": "app.user_id", "MERGE_DELAY_SECONDS": "1"}
    with running(database_url, fake, tmp_path, **settings) as base:
        post(base, invoice)
        # Nothing has shown cus_TestAda01 beside user_1 yet: the invoice goes to the
        # customer-id profile, and Customer.io really holds that profile.
        wait_for(lambda: has_event(fake, CUS, "order_completed"), what="stripe:cus profile")

        post(base, customer)  # metadata customer_id=user_1 beside cus_TestAda01
        user = wait_for(
            lambda: person(fake, CUS) is None and has_event(fake, "user_1", "order_completed"),
            what="stripe:cus_TestAda01 merged into user_1",
        )
        merges = [
            op["operation"] for op in fake.operations() if op["operation"].get("action") == "merge"
        ]
        assert [(m["primary"], m["secondary"]) for m in merges] == [({"id": "user_1"}, {"id": CUS})]
        assert user["attributes"]["order_count"] == 1  # the invoice, carried over

        post(base, order)  # the Shopify customer's metafield app.user_id says user_1
        user = wait_for(
            lambda: (
                (p := person(fake, "user_1"))
                and len([e for e in p["events"] if e["name"] == "order_completed"]) == 2
                and p["attributes"]["order_count"] == 2
                and p
            ),
            what="the Shopify order on user_1",
        )
        # One profile for one human: no stripe:cus_..., no shopify:... beside it.
        assert [p["identifier"] for p in fake.people()["people"]] == [{"id": "user_1"}]
        orders = [e["data"] for e in user["events"] if e["name"] == "order_completed"]
        assert [(o["source"], o["order_id"]) for o in orders] == [
            ("stripe", "in_1TestFirst05"),
            ("shopify", "6200000000001"),
        ]
        # Counted across both stores: the Shopify order is the second, not a first order
        # (a welcome mail to an existing subscriber otherwise).
        assert (orders[1]["order_count"], orders[1]["is_first_order"]) == (2, False)
        assert user["attributes"]["lifetime_value"] == 85.04  # 29 + 56.04
