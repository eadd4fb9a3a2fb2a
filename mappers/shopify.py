"""Shopify mapper: one webhook topic in, canonical actions out (pure, stateless).

Field reading lives in mappers.shopify_fields; this module says what each topic means.
Every Track's semantic key names the business fact, so overlapping or repeated
deliveries (orders/create and orders/paid, many checkouts/update) yield one event each.
"""

from __future__ import annotations

from typing import Any

from mappers.actions import Action, ExportPersonData, Person, RedactPerson, RedactShop
from mappers.base import Handler, StoredDelivery
from mappers.cart import material_digest
from mappers.common import identify, track
from mappers.errors import MappingError
from mappers.read import at, obj, opt_int, opt_text, opt_time, text
from mappers.shopify_fields import (
    SOURCE,
    ShopifyConfig,
    checkout_attributes,
    checkout_money,
    commerce_amounts,
    commerce_person,
    consent,
    customer_attributes,
    discount_codes,
    first_text,
    gid_id,
    id_list,
    internal_id,
    line_items,
    opt_currency,
    order_attributes,
    order_money,
    person,
    presentment,
    refunded,
)
from mappers.taxonomy import (
    CartUpdated,
    CheckoutStarted,
    EventName,
    OrderCanceled,
    OrderCompleted,
    PaymentFailed,
    PersonAttributes,
    RefundIssued,
    SubscriptionCanceled,
    SubscriptionCreated,
    SubscriptionPaused,
    SubscriptionResumed,
)

# -- checkouts ------------------------------------------------------------------------


def _checkout(
    delivery: StoredDelivery, config: ShopifyConfig
) -> tuple[str, Person, dict[str, Any]]:
    """The checkout token, its person, and its CommerceProperties fields."""
    payload = delivery.payload
    # 2026-04 removed the checkout `id`; the token is the checkout's identity.
    token = text(payload, "token")
    who = commerce_person(delivery, config, payload, checkout_token=token)
    money = checkout_money(payload)
    fields = {
        "source": SOURCE,
        "cart_id": token,
        "items": line_items(payload, money),
        **commerce_amounts(payload, money),
        "recovery_url": opt_text(payload, "abandoned_checkout_url"),
        "customer_id": who.customer_id,
    }
    return token, who, fields


def checkout_created(delivery: StoredDelivery, config: ShopifyConfig) -> list[Action]:
    """checkouts/create: checkout_started once per token, plus what the buyer revealed."""
    token, who, fields = _checkout(delivery, config)
    started = track(delivery, who, EventName.CHECKOUT_STARTED, CheckoutStarted(**fields), token)
    return [*identify(delivery, who, checkout_attributes(delivery.payload, who)), started]


def checkout_updated(delivery: StoredDelivery, config: ShopifyConfig) -> list[Action]:
    """checkouts/update: checkout_started if contactable, cart_updated per content."""
    token, who, fields = _checkout(delivery, config)
    actions: list[Action] = [*identify(delivery, who, checkout_attributes(delivery.payload, who))]
    if at(delivery.payload, "completed_at"):
        # A completed checkout became an order; the order topics report the purchase.
        return actions
    if who.email or who.phone:
        # Same key as checkouts/create: one checkout_started per token, whichever of
        # create or the first contactable update is mapped first.
        started = CheckoutStarted(**fields)
        actions.append(track(delivery, who, EventName.CHECKOUT_STARTED, started, token))
    # Keyed by the material content (mappers.cart), so an update that changed only the
    # address or the contact repeats the previous key and dedups downstream. Suppressing
    # an update whose content equals checkout_started's, and any update after the
    # order, needs state across deliveries: the journey guards (webhooks.stage1.state).
    updated = CartUpdated(**fields)
    codes = discount_codes(delivery.payload)
    # From the model's Decimals, not JSON numbers: only they keep the exact text of an
    # odd amount such as "844.20" JPY, which keys already queued were computed from.
    digest = material_digest(updated.model_dump(), codes)
    actions.append(track(delivery, who, EventName.CART_UPDATED, updated, token, digest))
    return actions


# -- orders ---------------------------------------------------------------------------


def _counts_as_purchase(topic: str, payload: Any, config: ShopifyConfig) -> bool:
    """Whether this order topic reports order_completed under the merchant's choice."""
    if config.order_completed_topic == "orders/create":
        # Every placed order counts; orders/paid of the same order is the same fact
        # (same key), so whichever of the two arrives first wins.
        return True
    # orders/paid: only paid orders count. An orders/create that arrives already paid
    # is that same fact and may be the first to arrive.
    return topic == "orders/paid" or at(payload, "financial_status") == "paid"


def order_placed(delivery: StoredDelivery, config: ShopifyConfig) -> list[Action]:
    """orders/create and orders/paid: order_completed keyed by order id, plus identify."""
    payload = delivery.payload
    order_id = text(payload, "id")
    who = commerce_person(delivery, config, payload, opt_text(payload, "checkout_token"))
    placed = delivery.event_type == "orders/create"
    actions: list[Action] = [*identify(delivery, who, order_attributes(payload, who, placed))]
    if not _counts_as_purchase(delivery.event_type, payload, config):
        return actions
    money = order_money(payload)
    completed = OrderCompleted(
        source=SOURCE,
        order_id=order_id,
        order_number=opt_text(payload, "name"),
        # The checkout token lets an abandonment journey exit on the purchase.
        cart_id=who.checkout_token,
        financial_status=opt_text(payload, "financial_status"),
        items=line_items(payload, money),
        **commerce_amounts(payload, money),
        **presentment(payload, money.currency),
        customer_id=who.customer_id,
    )
    placed_at = opt_time(payload, "created_at")
    return [
        *actions,
        track(delivery, who, EventName.ORDER_COMPLETED, completed, order_id, timestamp=placed_at),
    ]


def order_cancelled(delivery: StoredDelivery, config: ShopifyConfig) -> list[Action]:
    """orders/cancelled: order_canceled keyed by order id, plus identify."""
    payload = delivery.payload
    order_id = text(payload, "id")
    who = commerce_person(delivery, config, payload, opt_text(payload, "checkout_token"))
    money = order_money(payload)
    canceled = OrderCanceled(
        source=SOURCE,
        order_id=order_id,
        order_number=opt_text(payload, "name"),
        # The original total (not current_total_price, which a cancel refund zeroes).
        total=money.read(payload, "total_price"),
        currency=money.currency,
        reason=opt_text(payload, "cancel_reason"),
    )
    return [
        *identify(delivery, who, order_attributes(payload, who)),
        track(
            delivery,
            who,
            EventName.ORDER_CANCELED,
            canceled,
            order_id,
            timestamp=opt_time(payload, "cancelled_at"),
        ),
    ]


def refund_created(delivery: StoredDelivery, config: ShopifyConfig) -> list[Action]:
    """refunds/create: refund_issued keyed by refund id, when money went back."""
    payload = delivery.payload
    refund_id = text(payload, "id")
    money = refunded(payload)
    if money is None:
        # No successful refund transaction: a restock or a refund of 0 is not money
        # back to the buyer, so there is no refund_issued fact to report.
        return []
    amount, currency = money
    issued = RefundIssued(
        source=SOURCE,
        refund_id=refund_id,
        order_id=opt_text(payload, "order_id"),
        amount=amount,
        currency=currency,
        # No reason: Shopify's refund `note` is free text typed by staff and may hold
        # personal data, so it is not forwarded.
    )
    # A refund names no customer: identity resolution links it through the order.
    who = person(delivery, order_id=opt_text(payload, "order_id"))
    created = opt_time(payload, "created_at")
    return [track(delivery, who, EventName.REFUND_ISSUED, issued, refund_id, timestamp=created)]


# -- customers and consent ------------------------------------------------------------


def customer_changed(delivery: StoredDelivery, config: ShopifyConfig) -> list[Action]:
    """customers/create and customers/update: identify only."""
    customer_id = text(delivery.payload, "id")
    attributes = customer_attributes(delivery.payload)
    who = person(
        delivery,
        customer_id=customer_id,
        internal_id=internal_id(config, {}, delivery.payload),
        email=attributes.email,
        phone=attributes.phone,
    )
    return [*identify(delivery, who, attributes)]


def _consent_changed(
    delivery: StoredDelivery, channel: str, contact_paths: tuple[str, ...], contact: str
) -> list[Action]:
    """Identify `<channel>_consent` of the customer, or the `contact` the topic names.

    The two consent topics name the customer differently: the email topic sends
    `customer_id` and `email_address`, the SMS topic (customers_marketing_consent/update)
    the customer's own `id` and `phone`. Both spellings are read for both.
    """
    payload = delivery.payload
    state = obj(payload, f"{channel}_marketing_consent").get("state")
    address = next((found for path in contact_paths if (found := opt_text(payload, path))), None)
    customer_id = (
        opt_text(payload, "customer_id")
        or gid_id(payload, "admin_graphql_api_customer_id")
        or opt_text(payload, "id")
    )
    who = person(delivery, customer_id=customer_id, **{contact: address})
    if who.is_empty():
        # A consent change must never be dropped silently.
        raise MappingError(
            f"no customer (customer_id, id) and no {' or '.join(contact_paths)} to attribute "
            "the consent change to"
        )
    # extra="forbid" on the model turns a misspelt name into an error, not a lost field.
    attributes = PersonAttributes.model_validate(
        {contact: address, f"{channel}_consent": consent(state)}
    )
    return [*identify(delivery, who, attributes)]


def email_consent_changed(delivery: StoredDelivery, config: ShopifyConfig) -> list[Action]:
    """customers_email_marketing_consent/update: identify email_consent."""
    return _consent_changed(delivery, "email", ("email_address", "email"), "email")


def sms_consent_changed(delivery: StoredDelivery, config: ShopifyConfig) -> list[Action]:
    """customers_marketing_consent/update (SMS): identify sms_consent."""
    return _consent_changed(delivery, "sms", ("phone", "phone_number"), "phone")


# -- subscriptions --------------------------------------------------------------------


def _contract(delivery: StoredDelivery) -> tuple[str, Person, dict[str, Any]]:
    """The contract id, its person and the SubscriptionProperties fields it gives."""
    payload = delivery.payload
    contract_id = text(payload, "id")
    customer_id = opt_text(payload, "customer_id") or gid_id(
        payload, "admin_graphql_api_customer_id"
    )
    status = opt_text(payload, "status")
    interval = opt_text(payload, "billing_policy.interval")
    interval_count = opt_int(payload, "billing_policy.interval_count")
    if interval_count is not None and interval_count < 1:
        raise MappingError("billing_policy.interval_count is not a positive count")
    fields = {
        "source": SOURCE,
        "subscription_id": contract_id,
        "status": status.lower() if status else None,
        # Shopify's enum is DAY/WEEK/MONTH/YEAR; the taxonomy says day/week/month/year.
        "interval": interval.lower() if interval else None,
        "interval_count": interval_count,
        "currency": opt_currency(payload, "currency_code"),
    }
    return contract_id, person(delivery, customer_id=customer_id), fields


def _revision(delivery: StoredDelivery) -> str:
    """What makes one status transition its own fact: the revision, else the event time."""
    # A redelivery repeats the revision (same fact); a new pause after a resume is a
    # new revision (a new fact). Without one, the event time separates transitions.
    return opt_text(delivery.payload, "revision_id") or str(delivery.timestamp())


def contract_created(delivery: StoredDelivery, config: ShopifyConfig) -> list[Action]:
    """subscription_contracts/create: subscription_created keyed by contract id."""
    contract_id, who, fields = _contract(delivery)
    created = SubscriptionCreated(**fields)
    return [track(delivery, who, EventName.SUBSCRIPTION_CREATED, created, contract_id)]


def contract_paused(delivery: StoredDelivery, config: ShopifyConfig) -> list[Action]:
    """subscription_contracts/pause: subscription_paused per revision."""
    contract_id, who, fields = _contract(delivery)
    paused = SubscriptionPaused(pause_kind="status", **fields)
    key = (contract_id, _revision(delivery))
    return [track(delivery, who, EventName.SUBSCRIPTION_PAUSED, paused, *key)]


def contract_activated(delivery: StoredDelivery, config: ShopifyConfig) -> list[Action]:
    """subscription_contracts/activate: subscription_resumed per revision."""
    # Activation is a resume only after a pause, which a stateless mapper cannot see;
    # it always maps, one fact per revision, and journeys guard on the prior pause.
    contract_id, who, fields = _contract(delivery)
    resumed = SubscriptionResumed(pause_kind="status", **fields)
    key = (contract_id, _revision(delivery))
    return [track(delivery, who, EventName.SUBSCRIPTION_RESUMED, resumed, *key)]


def contract_cancelled(delivery: StoredDelivery, config: ShopifyConfig) -> list[Action]:
    """subscription_contracts/cancel: subscription_canceled per revision."""
    contract_id, who, fields = _contract(delivery)
    canceled = SubscriptionCanceled(**fields)
    key = (contract_id, _revision(delivery))
    return [track(delivery, who, EventName.SUBSCRIPTION_CANCELED, canceled, *key)]


def billing_attempt_failed(delivery: StoredDelivery, config: ShopifyConfig) -> list[Action]:
    """subscription_billing_attempts/failure: payment_failed keyed by attempt id."""
    payload = delivery.payload
    # Shopify's published samples send "id": null; the idempotency key the app chose
    # for the attempt names it as well.
    attempt_id = (
        opt_text(payload, "id")
        or gid_id(payload, "admin_graphql_api_id")
        or opt_text(payload, "idempotency_key")
    )
    if attempt_id is None:
        raise MappingError("id, admin_graphql_api_id and idempotency_key are all missing")
    failed = PaymentFailed(
        source=SOURCE,
        payment_id=attempt_id,
        subscription_id=opt_text(payload, "subscription_contract_id")
        or gid_id(payload, "admin_graphql_api_subscription_contract_id"),
        failure_reason=first_text(payload, "error_code", "error_message"),
    )
    # The payload names no customer; nothing is invented here. Identity resolution (a
    # later issue) links the person through the subscription contract id.
    who = person(delivery, subscription_id=failed.subscription_id)
    return [track(delivery, who, EventName.PAYMENT_FAILED, failed, attempt_id)]


# -- privacy --------------------------------------------------------------------------


def _privacy_person(delivery: StoredDelivery) -> Person:
    """The customer a privacy request names, checked to belong to this shop."""
    payload = delivery.payload
    domain = opt_text(payload, "shop_domain")
    # A destructive request must act on the shop it was signed for, never another.
    if domain is not None and domain.lower() != delivery.account:
        raise MappingError("shop_domain differs from the X-Shopify-Shop-Domain header")
    return person(
        delivery,
        customer_id=opt_text(payload, "customer.id"),
        email=opt_text(payload, "customer.email"),
        phone=opt_text(payload, "customer.phone"),
    )


def customer_redact(delivery: StoredDelivery, config: ShopifyConfig) -> list[Action]:
    """customers/redact: erase this customer and these orders (a later stage executes)."""
    who = _privacy_person(delivery)
    order_ids = id_list(delivery.payload, "orders_to_redact")
    if who.is_empty() and not order_ids:
        raise MappingError("customer is missing and orders_to_redact is empty")
    return [RedactPerson(person=who, order_ids=order_ids, timestamp=delivery.timestamp())]


def customer_data_request(delivery: StoredDelivery, config: ShopifyConfig) -> list[Action]:
    """customers/data_request: export what is held about this customer."""
    who = _privacy_person(delivery)
    if who.is_empty():
        raise MappingError("customer is missing or names no id, email or phone")
    request = ExportPersonData(
        person=who,
        request_id=opt_text(delivery.payload, "data_request.id"),
        order_ids=id_list(delivery.payload, "orders_requested"),
        timestamp=delivery.timestamp(),
    )
    return [request]


def shop_redact(delivery: StoredDelivery, config: ShopifyConfig) -> list[Action]:
    """shop/redact: erase everything held for this shop (48 h after uninstall)."""
    _privacy_person(delivery)
    return [RedactShop(account=delivery.account, timestamp=delivery.timestamp())]


# Topic -> handler. Topics not listed map to nothing (the registry logs and counts them).
HANDLERS: dict[str, Handler[ShopifyConfig]] = {
    "checkouts/create": checkout_created,
    "checkouts/update": checkout_updated,
    "orders/create": order_placed,
    "orders/paid": order_placed,
    "orders/cancelled": order_cancelled,
    "refunds/create": refund_created,
    "customers/create": customer_changed,
    "customers/update": customer_changed,
    "customers_email_marketing_consent/update": email_consent_changed,
    "customers_marketing_consent/update": sms_consent_changed,
    "subscription_contracts/create": contract_created,
    "subscription_contracts/pause": contract_paused,
    "subscription_contracts/activate": contract_activated,
    "subscription_contracts/cancel": contract_cancelled,
    "subscription_billing_attempts/failure": billing_attempt_failed,
    "customers/redact": customer_redact,
    "customers/data_request": customer_data_request,
    "shop/redact": shop_redact,
}
