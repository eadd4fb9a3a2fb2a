"""Stripe mapping rules that matter most, asserted directly (beyond the golden sweep)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from mappers.actions import SubscriptionState, Track
from mappers.base import StoredDelivery
from mappers.errors import MappingError
from mappers.money import stripe_amount
from mappers.stripe_fields import StripeConfig
from tests.mappers.golden import FIXTURES, map_with
from webhooks.stage1.mapping import UNMAPPED

STRIPE = FIXTURES / "stripe"


def load(case: str, **changes: Any) -> StoredDelivery:
    """The fixture's event as a StoredDelivery, as the worker would build it."""
    fixture = json.loads((STRIPE / f"{case}.json").read_text())
    event = fixture["body"]
    return (
        StoredDelivery(
            provider="stripe",
            account=event.get("account") or "platform",
            event_type=event["type"],
            payload=event,
            occurred_at=datetime.fromtimestamp(event["created"], UTC),
            api_version=event.get("api_version"),
            enrichment=fixture.get("enrichment", {}),
        )
        if not changes
        else StoredDelivery(**{**load(case).__dict__, **changes})
    )


def tracks(delivery: StoredDelivery, config: StripeConfig | None = None) -> list[Track]:
    return [a for a in map_with(delivery, config) if isinstance(a, Track)]


def keys(*cases: str) -> set[str]:
    return {t.semantic_key for case in cases for t in tracks(load(case))}


def test_one_purchase_is_one_fact_across_checkout_and_payment_intent() -> None:
    assert keys("checkout_session_completed_paid", "payment_intent_succeeded_from_checkout") == {
        "order_completed:stripe:platform:pi_3TestPay01"
    }


def test_unpaid_session_then_async_success_is_one_order() -> None:
    assert keys("checkout_session_completed_unpaid") == set()
    assert keys("checkout_session_async_payment_succeeded") == {
        "order_completed:stripe:platform:pi_3TestAsync77"
    }


def test_invoiced_payment_intent_defers_to_the_invoice() -> None:
    assert tracks(load("payment_intent_succeeded_for_invoice_pre_basil")) == []
    # From basil on, the worker's enrichment names the invoice instead of the payload.
    enriched = load("payment_intent_succeeded_standalone", enrichment={"invoice": "in_1"})
    assert tracks(enriched) == []


def test_payment_intent_events_are_opt_in() -> None:
    # Off by default: the Checkout Session reports the purchase, with cart and totals.
    assert tracks(load("payment_intent_succeeded_from_checkout")) == []
    assert tracks(load("payment_intent_payment_failed")) == []
    on = StripeConfig(payment_intent_events=True)
    [order] = tracks(load("payment_intent_succeeded_standalone"), on)
    assert order.semantic_key == "order_completed:stripe:platform:pi_3TestSolo02"


def test_basil_subscription_purchase_is_one_order_with_default_settings() -> None:
    # Subscription-mode Checkout, its invoice and its PaymentIntent (which on basil does
    # not name the invoice): one key, the invoice's.
    session = load(
        "checkout_session_completed_paid",
        payload={
            **load("checkout_session_completed_paid").payload,
            "data": {
                "object": {
                    **load("checkout_session_completed_paid").payload["data"]["object"],
                    "mode": "subscription",
                    "invoice": "in_1TestFirst05",
                    "payment_intent": None,
                    "subscription": "sub_1TestBox",
                }
            },
        },
    )
    basil_pi = load("payment_intent_succeeded_standalone")
    keys = {
        t.semantic_key
        for d in (session, load("invoice_paid_subscription_create_basil"), basil_pi)
        for t in tracks(d)
    }
    assert keys == {"order_completed:stripe:platform:in_1TestFirst05"}


def test_failed_or_canceled_refund_is_not_money_back() -> None:
    delivery = load("refund_created_partial")
    obj = {**delivery.payload["data"]["object"], "status": "failed"}
    assert (
        tracks(
            load("refund_created_partial", payload={**delivery.payload, "data": {"object": obj}})
        )
        == []
    )


def test_a_failed_refund_listed_on_an_old_charge_is_not_money_back() -> None:
    # API versions before 2022-11-15 list the charge's refunds, each with its status.
    delivery = load("charge_refunded_with_refund_list_2020")
    charge = delivery.payload["data"]["object"]
    [listed] = charge["refunds"]["data"]
    failed = {**listed, "id": "re_failed", "status": "failed"}
    obj = {**charge, "refunds": {**charge["refunds"], "data": [listed, failed]}}
    payload = {**delivery.payload, "data": {**delivery.payload["data"], "object": obj}}
    found = tracks(load("charge_refunded_with_refund_list_2020", payload=payload))
    assert [t.properties.refund_id for t in found] == [listed["id"]]  # type: ignore[attr-defined]


def test_refund_delta_needs_the_previous_total() -> None:
    delivery = load("charge_refunded_second_partial_2023")
    payload = {**delivery.payload, "data": {"object": delivery.payload["data"]["object"]}}
    with pytest.raises(MappingError, match="previous_attributes"):
        map_with(load("charge_refunded_second_partial_2023", payload=payload))


def test_scheduled_cancel_and_its_deletion_are_one_fact() -> None:
    scheduled, deleted = (
        tracks(load(case))[0]
        for case in (
            "subscription_updated_scheduled_cancel",
            "subscription_deleted_after_scheduled_cancel",
        )
    )
    assert scheduled.semantic_key == deleted.semantic_key
    assert scheduled.payload()["cancel_at_period_end"] is True
    assert deleted.payload()["cancel_at_period_end"] is False


def test_refund_is_one_fact_whichever_event_reports_it() -> None:
    # API 2024-10-28+: refund.created carries the id; charge.refunded steps aside.
    assert tracks(load("charge_refunded_partial_acacia")) == []
    [refund] = tracks(load("refund_created_partial"))
    assert refund.payload()["amount"] == 15
    # Older API listing refunds on the charge: the same key refund.created would give.
    [listed] = tracks(load("charge_refunded_with_refund_list_2020"))
    assert listed.semantic_key == "refund_issued:stripe:platform:re_3TestOld01"


def test_refund_without_id_uses_the_cumulative_amount_and_the_delta() -> None:
    [refund] = tracks(load("charge_refunded_second_partial_2023"))
    assert refund.semantic_key.endswith(":ch_3TestPay01:2500")
    assert refund.properties.amount == Decimal("10.00")  # 25.00 refunded so far - 15.00


@pytest.mark.parametrize(
    ("minor", "currency", "major"),
    [
        (4950, "USD", "49.50"),
        (6578, "JPY", "6578"),
        (5124, "KWD", "5.124"),
        (5120, "BHD", "5.120"),
        (500, "ISK", "5"),  # sent as two-decimal with 00
        (500, "UGX", "5"),
        (550, "ISK", "5.5"),  # off the 00 rule: kept exact, never rounded
        (1999, "HUF", "19.99"),
        (0, "EUR", "0.00"),
    ],
)
def test_stripe_minor_units_become_exact_major_units(minor: int, currency: str, major: str) -> None:
    amount = stripe_amount(minor, currency, "x")
    assert amount == Decimal(major)
    assert str(amount) == major  # the currency's own number of decimals


def test_jpy_and_kwd_amounts_reach_the_event_unscaled_and_scaled() -> None:
    [jpy] = tracks(load("checkout_session_completed_jpy"))
    assert jpy.payload()["total"] == 6578
    [kwd] = tracks(load("invoice_paid_kwd"))
    assert kwd.payload()["total"] == 5.12
    assert kwd.payload()["currency"] == "KWD"


def test_connect_account_scopes_the_key() -> None:
    on = StripeConfig(payment_intent_events=True)
    [order] = tracks(load("payment_intent_succeeded_connect_account"), on)
    assert order.semantic_key == "order_completed:stripe:acct_1TestMerchant:pi_3TestConnect"
    assert order.person.account == "acct_1TestMerchant"


def test_internal_id_comes_from_the_configured_metadata_key() -> None:
    delivery = load("customer_created")
    [identify] = map_with(delivery)
    assert identify.person.internal_id == "user_8842"
    [other] = map_with(delivery, StripeConfig(internal_id_metadata_key="app_user"))
    assert other.person.internal_id is None


def test_event_time_is_the_provider_time_not_now() -> None:
    [order] = tracks(load("invoice_paid_renewal_pre_basil"))
    assert (
        order.timestamp
        == json.loads((STRIPE / "invoice_paid_renewal_pre_basil.json").read_text())["body"][
            "created"
        ]
    )


def test_unknown_type_maps_to_nothing_and_is_counted() -> None:
    delivery = load("customer_created", event_type="issuing_card.created")
    before = UNMAPPED.labels("stripe", "issuing_card.created")._value.get()
    assert map_with(delivery) == []
    assert UNMAPPED.labels("stripe", "issuing_card.created")._value.get() == before + 1


@pytest.mark.parametrize(
    ("case", "broken", "reason"),
    [
        ("refund_created_partial", {"data": {}}, "data.object is missing"),
        (
            "checkout_session_completed_paid",
            {"data": {"object": {"payment_status": "paid", "currency": "usd"}}},
            "id is missing",
        ),
        (
            "invoice_paid_kwd",
            {"data": {"object": {"id": "in_1", "amount_paid": 5, "currency": "xx"}}},
            "currency",
        ),
    ],
)
def test_unmappable_payload_raises_the_mapping_error_with_a_reason(
    case: str, broken: dict[str, Any], reason: str
) -> None:
    delivery = load(case)
    delivery = load(case, payload={**delivery.payload, **broken})
    with pytest.raises(MappingError) as caught:
        map_with(delivery)
    assert reason in caught.value.reason


def _subscription_without_metadata_id(**changes: Any) -> StoredDelivery:
    """subscription_created_basil without the merchant's id in its metadata."""
    delivery = load("subscription_created_basil")
    sub = {**delivery.payload["data"]["object"], "metadata": {"tier": "gold"}, **changes}
    payload = {**delivery.payload, "data": {"object": sub}}
    return load("subscription_created_basil", payload=payload)


ADA_LOOKED_UP = {"id": "cus_TestAda01", "metadata": {"customer_id": "user_8842"}}


@pytest.mark.parametrize(
    ("looked_up", "config", "internal_id"),
    [
        (None, StripeConfig(), None),
        (ADA_LOOKED_UP, StripeConfig(), "user_8842"),
        # The lookup of another customer (a stale or misfiled enrichment) names nobody here.
        ({"id": "cus_Other", "metadata": {"customer_id": "user_1"}}, StripeConfig(), None),
        ({"id": "cus_TestAda01", "metadata": {}}, StripeConfig(), None),
        (
            {"id": "cus_TestAda01", "metadata": {"customer_id": "x", "app_user": "u7"}},
            StripeConfig(internal_id_metadata_key="app_user"),
            "u7",
        ),
    ],
)
def test_internal_id_from_the_looked_up_customer_when_the_payload_lacks_it(
    looked_up: dict[str, Any] | None, config: StripeConfig, internal_id: str | None
) -> None:
    delivery = _subscription_without_metadata_id()
    if looked_up is not None:
        delivery = StoredDelivery(**{**delivery.__dict__, "enrichment": {"customer": looked_up}})
    [created] = tracks(delivery, config)
    assert created.person.internal_id == internal_id
    assert created.person.customer_id == "cus_TestAda01"


def test_the_payloads_own_metadata_wins_over_the_lookup() -> None:
    # The event's metadata is as of the event; the lookup is as of today.
    later = {"id": "cus_TestAda01", "metadata": {"customer_id": "later"}}
    [created] = tracks(load("subscription_created_basil", enrichment={"customer": later}))
    assert created.person.internal_id == "user_8842"


def test_an_expanded_customers_metadata_names_the_person() -> None:
    customer = {"id": "cus_TestAda01", "object": "customer", "metadata": {"customer_id": "e1"}}
    [created] = tracks(_subscription_without_metadata_id(customer=customer))
    assert created.person.internal_id == "e1"
    assert created.person.customer_id == "cus_TestAda01"


def test_a_status_only_update_reports_the_new_status_and_no_event() -> None:
    delivery = load("subscription_updated_pause_collection")
    event = json.loads(json.dumps(delivery.payload))
    event["data"]["object"]["status"] = "past_due"
    event["data"]["previous_attributes"] = {"status": "active"}
    actions = map_with(load("subscription_updated_pause_collection", payload=event))
    [change] = [a for a in actions if isinstance(a, SubscriptionState)]
    assert (change.subscription_id, change.status) == (
        event["data"]["object"]["id"],
        "past_due",
    )
    assert change.timestamp == event["created"]
    assert [a for a in actions if isinstance(a, Track)] == []


def test_an_expired_session_without_a_currency_still_goes_out_without_amounts() -> None:
    # Stripe allows currency null (a setup-mode session always has it); amounts are null
    # then too. The event and the identify must not be lost for a missing optional field.
    event = json.loads((STRIPE / "checkout_session_expired_with_recovery.json").read_text())
    event = event["body"]
    session = event["data"]["object"]
    session.update(mode="setup", currency=None, amount_subtotal=None, amount_total=None)
    session.pop("total_details", None)
    actions = map_with(load("checkout_session_expired_with_recovery", payload=event))
    [expired] = [a for a in actions if isinstance(a, Track)]
    assert expired.event.value == "checkout_expired"
    sent = expired.payload()
    assert sent["cart_id"] == session["id"]
    assert not {"currency", "total", "subtotal", "items"} & set(sent)
    assert sent["items_complete"] is False
    assert any(not isinstance(a, Track) for a in actions)  # the identify is kept


def test_two_prices_of_one_product_list_the_product_once() -> None:
    event = json.loads((STRIPE / "subscription_created_basil.json").read_text())["body"]
    items = event["data"]["object"]["items"]["data"]
    add_on = json.loads(json.dumps(items[0]))
    add_on["id"] = "si_Test2"
    add_on["price"]["id"] = "price_MonthlyBoxExtra"
    items.append(add_on)
    [created] = tracks(load("subscription_created_basil", payload=event))
    assert created.payload()["product_ids"] == ["prod_MonthlyBox"]


def test_a_free_trial_through_checkout_is_not_a_purchase() -> None:
    # Stripe's trial flow: a subscription-mode session reported "paid" with nothing paid.
    # Like the $0 invoice.paid of the same trial, it is no order_completed.
    event = json.loads((STRIPE / "checkout_session_completed_paid.json").read_text())["body"]
    session = event["data"]["object"]
    session.update(
        mode="subscription",
        payment_status="paid",
        amount_total=0,
        amount_subtotal=0,
        subscription="sub_TestTrial1",
        payment_intent=None,
    )
    assert tracks(load("checkout_session_completed_paid", payload=event)) == []
    assert map_with(load("checkout_session_completed_paid", payload=event))  # the identify
    session["amount_total"] = 2900  # the same session with a first charge is a purchase
    [order] = tracks(load("checkout_session_completed_paid", payload=event))
    assert order.event.value == "order_completed"
