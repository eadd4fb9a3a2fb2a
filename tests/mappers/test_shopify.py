"""The Shopify rules that matter most, asserted by hand beyond the golden sweep."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest

from mappers.actions import Action, Identify, Track
from mappers.errors import MappingError
from mappers.shopify_fields import ShopifyConfig
from mappers.taxonomy import EventName
from tests.mappers.golden import FIXTURES, as_json, configs, map_with, parse
from webhooks.stage1.mapping import stored_delivery

Patch = Callable[[dict[str, Any]], object]
PAID_CONFIG = ShopifyConfig(order_completed_topic="orders/paid")


def run(
    case: str,
    *,
    topic: str | None = None,
    patch: Patch | None = None,
    config: ShopifyConfig | None = None,
) -> list[Action]:
    """Map a Shopify fixture (its own config unless one is given), maybe patched."""
    fixture = json.loads((FIXTURES / "shopify" / f"{case}.json").read_text())
    body = copy.deepcopy(fixture["body"])
    if patch is not None:
        patch(body)
    headers = {key.lower(): value for key, value in fixture["headers"].items()}
    if topic is not None:
        headers["x-shopify-topic"] = topic
    delivery = parse("shopify", json.dumps(body).encode(), headers)
    config = config or configs(**fixture.get("config", {}))["shopify"]
    return map_with(stored_delivery(delivery), config)


def tracks(actions: list[Action], event: EventName | None = None) -> list[Track]:
    """The Track actions, optionally only those of `event`."""
    return [
        action
        for action in actions
        if isinstance(action, Track) and (event is None or action.event is event)
    ]


def only_track(actions: list[Action], event: EventName) -> Track:
    """The single Track of `event`."""
    found = tracks(actions, event)
    assert len(found) == 1, found
    return found[0]


# -- checkouts ------------------------------------------------------------------------


def test_checkout_started_has_one_key_per_token_from_create_or_update() -> None:
    created = only_track(run("checkout_create_guest"), EventName.CHECKOUT_STARTED)
    updated = only_track(run("checkout_update_contact"), EventName.CHECKOUT_STARTED)
    assert created.semantic_key == updated.semantic_key
    assert created.semantic_key.endswith(":5e1c0a9d2b7f4e3aa0c4d1e2f3a4b5c6")


def test_update_without_contact_details_gives_no_checkout_started() -> None:
    def anonymous(body: dict[str, Any]) -> None:
        body["email"] = None

    actions = run("checkout_update_contact", patch=anonymous)
    assert tracks(actions, EventName.CHECKOUT_STARTED) == []
    assert len(tracks(actions, EventName.CART_UPDATED)) == 1


def test_address_only_update_repeats_the_cart_updated_key_and_an_item_change_does_not() -> None:
    before = only_track(run("checkout_update_contact"), EventName.CART_UPDATED)
    address = only_track(run("checkout_update_address_only"), EventName.CART_UPDATED)
    items = only_track(run("checkout_update_items"), EventName.CART_UPDATED)
    assert address.semantic_key == before.semantic_key
    assert items.semantic_key != address.semantic_key
    token, digest = items.semantic_key.split(":")[-2:]
    assert token == "5e1c0a9d2b7f4e3aa0c4d1e2f3a4b5c6"
    assert len(digest) == 16
    int(digest, 16)


def test_a_discount_code_change_is_material() -> None:
    def add_code(body: dict[str, Any]) -> None:
        body["discount_codes"] = [{"code": "spring5", "amount": "0.00", "type": "fixed_amount"}]

    plain = only_track(run("checkout_update_contact"), EventName.CART_UPDATED)
    coded = only_track(run("checkout_update_contact", patch=add_code), EventName.CART_UPDATED)
    assert coded.semantic_key != plain.semantic_key


def test_completed_checkout_update_gives_identify_and_no_track() -> None:
    actions = run("checkout_update_completed")
    assert tracks(actions) == []
    assert [type(action) for action in actions] == [Identify]


def test_cart_token_loses_its_key_suffix() -> None:
    started = only_track(run("checkout_create_guest"), EventName.CHECKOUT_STARTED)
    assert started.person.cart_token is not None
    assert "?" not in started.person.cart_token


def test_checkout_amounts_are_labelled_with_the_presentment_currency() -> None:
    started = only_track(run("checkout_create_presentment_currency"), EventName.CHECKOUT_STARTED)
    payload = started.payload()
    assert payload["currency"] == "EUR"
    assert payload["total"] == 60
    assert "presentment_currency" not in payload


def test_checkout_checkboxes_only_ever_grant_consent() -> None:
    # An unticked box is the default, not a withdrawal: it must not overwrite a
    # subscription the consent topics reported. A ticked box with no address is nothing.
    def unticked_box_no_email(body: dict[str, Any]) -> None:
        body["email"] = None
        body["phone"] = "+15555550100"
        body["buyer_accepts_marketing"] = True
        body["buyer_accepts_sms_marketing"] = False

    actions = run("checkout_update_contact", patch=unticked_box_no_email)
    (identify,) = [action for action in actions if isinstance(action, Identify)]
    assert identify.attributes.email_consent is None
    assert identify.attributes.sms_consent is None

    def ticked(body: dict[str, Any]) -> None:
        body["buyer_accepts_marketing"] = True

    actions = run("checkout_update_contact", patch=ticked)
    (identify,) = [action for action in actions if isinstance(action, Identify)]
    assert identify.attributes.email_consent is True


def test_missing_checkout_token_names_the_path() -> None:
    def no_token(body: dict[str, Any]) -> None:
        del body["token"]

    with pytest.raises(MappingError, match="token"):
        run("checkout_create_guest", patch=no_token)


# -- orders ---------------------------------------------------------------------------


def test_orders_create_and_orders_paid_are_one_fact() -> None:
    created = only_track(run("order_create"), EventName.ORDER_COMPLETED)
    paid = only_track(run("order_paid"), EventName.ORDER_COMPLETED)
    assert created.semantic_key == paid.semantic_key
    assert (
        created.semantic_key == "order_completed:shopify:example-shop.myshopify.com:6200000000001"
    )
    assert created.payload() == paid.payload()


def test_order_links_back_to_its_checkout() -> None:
    completed = only_track(run("order_create"), EventName.ORDER_COMPLETED)
    started = only_track(run("checkout_create_customer"), EventName.CHECKOUT_STARTED)
    assert completed.payload()["cart_id"] == started.payload()["cart_id"]


def test_paid_config_ignores_an_unpaid_orders_create() -> None:
    actions = run("order_create_pending_paid_config")
    assert tracks(actions) == []
    assert [type(action) for action in actions] == [Identify]


def test_paid_config_counts_an_orders_create_that_arrives_paid_with_the_same_key() -> None:
    created = only_track(run("order_create", config=PAID_CONFIG), EventName.ORDER_COMPLETED)
    paid = only_track(run("order_paid", config=PAID_CONFIG), EventName.ORDER_COMPLETED)
    assert created.semantic_key == paid.semantic_key


def test_paid_config_maps_orders_paid_and_default_config_maps_a_pending_create() -> None:
    paid = run("order_create_pending_paid_config", topic="orders/paid", config=PAID_CONFIG)
    assert len(tracks(paid, EventName.ORDER_COMPLETED)) == 1
    pending_default = run("order_create_pending_paid_config", config=ShopifyConfig())
    assert len(tracks(pending_default, EventName.ORDER_COMPLETED)) == 1


def test_presentment_currency_beside_shop_money() -> None:
    completed = only_track(run("order_paid_presentment_currency"), EventName.ORDER_COMPLETED)
    payload = completed.payload()
    assert payload["currency"] == "USD"
    assert payload["total"] == 75.6
    assert payload["subtotal"] == 64.8
    assert payload["items"][0]["price"] == 32.4
    assert payload["presentment_currency"] == "EUR"
    assert payload["presentment_total"] == 70


def test_no_presentment_fields_when_the_buyer_paid_in_shop_currency() -> None:
    payload = only_track(run("order_create"), EventName.ORDER_COMPLETED).payload()
    assert "presentment_currency" not in payload
    assert "presentment_total" not in payload


def test_jpy_amounts_have_zero_decimals() -> None:
    completed = only_track(run("order_create_jpy"), EventName.ORDER_COMPLETED)
    properties = completed.properties
    assert properties.total == Decimal("5300")  # type: ignore[attr-defined]
    assert properties.total.as_tuple().exponent == 0  # type: ignore[attr-defined]
    payload = completed.payload()
    assert payload["currency"] == "JPY"
    assert payload["total"] == 5300
    assert isinstance(payload["total"], int)
    assert isinstance(payload["items"][0]["price"], int)


def test_amounts_are_never_floats_in_the_model() -> None:
    completed = only_track(run("order_create"), EventName.ORDER_COMPLETED)
    assert completed.properties.total == Decimal("56.04")  # type: ignore[attr-defined]
    assert completed.properties.discount == Decimal("5.05")  # type: ignore[attr-defined]


def test_missing_order_id_is_a_mapping_error_naming_the_path() -> None:
    def no_id(body: dict[str, Any]) -> None:
        del body["id"]

    with pytest.raises(MappingError) as raised:
        run("order_create", patch=no_id)
    assert raised.value.reason.startswith("id ")


def test_a_broken_line_item_names_its_index() -> None:
    def no_quantity(body: dict[str, Any]) -> None:
        del body["line_items"][1]["quantity"]

    with pytest.raises(MappingError, match=r"line_items\[1\]\.quantity"):
        run("order_create", patch=no_quantity)


def test_cancelled_order_is_keyed_by_order_id() -> None:
    canceled = only_track(run("order_cancelled"), EventName.ORDER_CANCELED)
    assert (
        canceled.semantic_key == "order_canceled:shopify:example-shop.myshopify.com:6200000000001"
    )
    assert canceled.payload()["reason"] == "customer"
    assert canceled.payload()["total"] == 56.04


# -- refunds --------------------------------------------------------------------------


def test_refund_amount_sums_only_successful_refund_transactions() -> None:
    issued = only_track(run("refund_create_partial"), EventName.REFUND_ISSUED)
    assert issued.properties.amount == Decimal("17.50")  # type: ignore[attr-defined]
    assert issued.payload()["currency"] == "USD"


def test_pending_and_non_refund_transactions_do_not_count() -> None:
    def mixed(body: dict[str, Any]) -> None:
        body["transactions"][0].update(status="pending")
        body["transactions"][2].update(kind="sale")

    issued = only_track(run("refund_create_partial", patch=mixed), EventName.REFUND_ISSUED)
    assert issued.properties.amount == Decimal("12.50")  # type: ignore[attr-defined]


def test_refund_without_money_back_maps_to_nothing() -> None:
    assert run("refund_create_restock_only") == []


def test_refund_in_several_currencies_is_a_mapping_error() -> None:
    def two_currencies(body: dict[str, Any]) -> None:
        body["transactions"][2]["currency"] = "CAD"

    with pytest.raises(MappingError, match="several currencies"):
        run("refund_create_partial", patch=two_currencies)


def test_refund_without_id_is_a_mapping_error() -> None:
    def no_id(body: dict[str, Any]) -> None:
        del body["id"]

    with pytest.raises(MappingError, match=r"^id "):
        run("refund_create_restock_only", patch=no_id)


# -- consent, subscriptions, privacy --------------------------------------------------


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        ("subscribed", True),
        ("unsubscribed", False),
        ("not_subscribed", False),
        ("redacted", False),
        ("invalid", False),
        ("pending", None),
    ],
)
def test_email_consent_states(state: str, expected: bool | None) -> None:
    def set_state(body: dict[str, Any]) -> None:
        body["email_marketing_consent"]["state"] = state

    (identify,) = run("email_consent_update", patch=set_state)
    assert isinstance(identify, Identify)
    assert identify.attributes.email_consent is expected


def test_consent_update_naming_nobody_is_a_mapping_error() -> None:
    def nobody(body: dict[str, Any]) -> None:
        del body["id"]
        body["phone"] = None

    with pytest.raises(MappingError, match=r"no customer \(customer_id, id\) and no phone"):
        run("sms_consent_update", patch=nobody)


def test_sms_consent_under_either_spelling_reaches_the_customer() -> None:
    # The published topic names the customer by `id` and `phone`; a payload using the
    # email topic's spelling (customer_id, phone_number) still maps, never dead-letters.
    def other_spelling(body: dict[str, Any]) -> None:
        body["customer_id"] = body.pop("id")
        body["phone_number"] = body.pop("phone")

    for patch in (None, other_spelling):
        (identify,) = run("sms_consent_update", patch=patch)
        assert isinstance(identify, Identify)
        assert identify.person.customer_id == "8100000000001"
        assert identify.attributes.phone == "+15555550177"
        assert identify.attributes.sms_consent is True


def test_each_subscription_transition_is_keyed_by_revision() -> None:
    paused = only_track(run("subscription_contract_pause"), EventName.SUBSCRIPTION_PAUSED)
    assert paused.semantic_key.endswith(":29000000001:41000000002")
    resumed = only_track(run("subscription_contract_activate"), EventName.SUBSCRIPTION_RESUMED)
    assert resumed.semantic_key.endswith(":29000000001:41000000003")


def test_transition_without_revision_falls_back_to_the_event_time() -> None:
    def no_revision(body: dict[str, Any]) -> None:
        del body["revision_id"]

    paused = run("subscription_contract_pause", patch=no_revision)
    (track,) = tracks(paused, EventName.SUBSCRIPTION_PAUSED)
    assert track.semantic_key.endswith(f":29000000001:{track.timestamp}")


def test_billing_failure_invents_no_identity_but_names_the_contract() -> None:
    failed = only_track(run("billing_attempt_failure"), EventName.PAYMENT_FAILED)
    hints = failed.person.model_dump(exclude={"source", "account"}, exclude_none=True)
    assert hints == {"subscription_id": "29000000001"}  # linked to a person later
    assert failed.payload()["subscription_id"] == "29000000001"


def test_privacy_request_for_another_shop_is_refused() -> None:
    def other_shop(body: dict[str, Any]) -> None:
        body["shop_domain"] = "someone-else.myshopify.com"

    with pytest.raises(MappingError, match="shop_domain"):
        run("shop_redact", patch=other_shop)


def test_no_contact_details_leak_into_event_properties() -> None:
    for case in ("checkout_create_customer", "order_create", "order_cancelled"):
        for track in tracks(run(case)):
            text = json.dumps(track.payload())
            assert "@example.test" not in text
            assert "+1555" not in text
            assert "Grace" not in text


def test_unknown_topic_maps_to_nothing() -> None:
    assert run("order_create", topic="orders/fulfilled") == []


def test_every_action_is_json_ready() -> None:
    amounts = []
    for action in run("order_paid_presentment_currency"):
        data = json.loads(json.dumps(as_json(action)))
        assert data == as_json(action)  # survives the JSON round trip unchanged
        props = data.get("properties", {})
        amounts += [
            props[name] for name in ("total", "subtotal", "presentment_total") if name in props
        ]
    assert len(amounts) == 3
    assert all(isinstance(value, int | float) for value in amounts)  # numbers, never strings


def test_a_billing_attempt_with_a_null_id_is_keyed_by_its_idempotency_key() -> None:
    # Shopify's published samples of subscription_billing_attempts/failure (webhook
    # reference up to 2025-10) send "id": null and "admin_graphql_api_id": null.
    def unsaved(body: dict[str, Any]) -> None:
        body.update(id=None, admin_graphql_api_id=None)

    def unnamed(body: dict[str, Any]) -> None:
        body.update(id=None, admin_graphql_api_id=None, idempotency_key=None)

    failed = only_track(run("billing_attempt_failure", patch=unsaved), EventName.PAYMENT_FAILED)
    key = "renewal-29000000001-2026-08-04"
    assert failed.properties.payment_id == key  # type: ignore[attr-defined]
    assert failed.semantic_key.endswith(f":{key}")
    with pytest.raises(MappingError, match="idempotency_key"):
        run("billing_attempt_failure", patch=unnamed)


def test_an_order_is_timed_by_its_creation_unless_too_old_to_trigger_a_campaign() -> None:
    def placed(body: dict[str, Any]) -> None:
        body["created_at"] = "2026-05-04T11:26:42-04:00"  # 4 seconds before the webhook

    def paid_days_later(body: dict[str, Any]) -> None:
        # Cash on delivery: placed 2026-04-28, paid (and reported) on 2026-05-04.
        body["created_at"] = "2026-04-28T11:26:42-04:00"

    fresh = only_track(
        run("order_paid", patch=placed, config=PAID_CONFIG), EventName.ORDER_COMPLETED
    )
    assert fresh.timestamp == 1777908402  # created_at: the same for orders/create
    late = only_track(
        run("order_paid", patch=paid_days_later, config=PAID_CONFIG), EventName.ORDER_COMPLETED
    )
    # Customer.io triggers no campaign for an event older than 72 hours: report time.
    assert late.timestamp == 1777908404
