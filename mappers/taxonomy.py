"""The canonical retention taxonomy: event names, their properties, person attributes.

This module is the single source of truth: docs/taxonomy.md and the JSON Schema are
generated from it (`webhooks taxonomy`), and every mapped event is validated against it.
Renaming an event or a property is a breaking change for every journey built on it:
bump TAXONOMY_VERSION's major number and write a migration note in docs/taxonomy.md.
"""

from __future__ import annotations

from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer

from mappers.money import json_number

TAXONOMY_VERSION = "1.3.0"


Money = Annotated[
    Decimal,
    PlainSerializer(json_number, return_type=int | float, when_used="json"),
    # No real amount has 30 digits; "1e999999999" would, and turning it into a JSON
    # number (int(Decimal)) takes time quadratic in its digits: refused up front.
    Field(
        max_digits=30,
        allow_inf_nan=False,
        description="Amount in major units with the currency's own decimals.",
    ),
]
Currency = Annotated[str, Field(pattern=r"^[A-Z]{3}$", description="ISO 4217, upper case.")]
UnixTime = Annotated[int, Field(ge=0, description="Unix time in seconds.")]
# The id of a business object that keys a fact (its semantic key holds at most 512
# characters) and an identity link: never blank, never longer than an id column.
ObjectId = Annotated[str, Field(min_length=1, max_length=255, pattern=r"\S")]
# A registered provider's name (webhooks.providers.registry); the worker checks that a
# mapper names its own provider, and the JSON Schema lists the registered names.
Source = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,31}$")]


class EventName(StrEnum):
    """Every canonical event; the values are what Customer.io sees."""

    CHECKOUT_STARTED = "checkout_started"
    CART_UPDATED = "cart_updated"
    CHECKOUT_EXPIRED = "checkout_expired"
    ORDER_COMPLETED = "order_completed"
    ORDER_CANCELED = "order_canceled"
    REFUND_ISSUED = "refund_issued"
    PAYMENT_FAILED = "payment_failed"
    SUBSCRIPTION_CREATED = "subscription_created"
    SUBSCRIPTION_PAUSED = "subscription_paused"
    SUBSCRIPTION_RESUMED = "subscription_resumed"
    SUBSCRIPTION_CANCELED = "subscription_canceled"
    TRIAL_ENDING = "trial_ending"
    PRODUCT_VIEWED = "product_viewed"
    SUBSCRIPTION_SKIPPED = "subscription_skipped"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Item(_Strict):
    """One line of a cart or order."""

    sku: str | None = Field(None, description="Stock keeping unit.")
    product_id: str | None = Field(None, description="Provider product id.")
    variant_id: str | None = Field(None, description="Provider variant or price id.")
    name: str | None = Field(None, description="Product name as shown to the buyer.")
    quantity: int = Field(ge=0, description="Units.")
    price: Money | None = Field(None, description="Unit price in the event's currency.")


class EventProperties(_Strict):
    """Properties every event carries."""

    source: Source = Field(description="The provider the fact came from.")


class CommerceProperties(EventProperties):
    """Cart and order contents, shared by checkout and order events."""

    cart_id: ObjectId | None = Field(
        None,
        description="Checkout or cart id (Shopify checkout token, Stripe Checkout Session "
        "id); on order_completed, the checkout the order came from, so journeys can exit "
        "abandonment.",
    )
    items: list[Item] | None = Field(
        None, description="Line items; absent when the provider's payload has none."
    )
    items_complete: bool = Field(
        True,
        description="False when `items` is not every line item: the payload carried none "
        "(Stripe checkout webhooks; a later enrichment step fills them), or the list was "
        "reduced to fit Customer.io's 32 KB event limit (shortened names, then no names, "
        "then the most valuable lines first). Totals are always complete.",
    )
    item_count: int | None = Field(
        None,
        ge=0,
        description="How many line items there really are, when `items` was reduced to "
        "fit Customer.io's limit.",
    )
    subtotal: Money | None = Field(None, description="Before discounts, shipping and tax.")
    discount: Money | None = Field(None, description="Total discounts.")
    shipping: Money | None = Field(None, description="Shipping charged.")
    tax: Money | None = Field(None, description="Tax charged.")
    total: Money | None = Field(None, description="What the buyer pays, in `currency`.")
    currency: Currency | None = Field(None, description="Currency of every amount.")
    presentment_currency: Currency | None = Field(
        None, description="Currency the buyer saw, when it differs from `currency`."
    )
    presentment_total: Money | None = Field(None, description="`total` in `presentment_currency`.")
    recovery_url: str | None = Field(None, description="Link back into the checkout.")
    customer_id: str | None = Field(None, description="Provider customer id, if any.")


class CheckoutStarted(CommerceProperties):
    """A buyer started a checkout (Shopify, or your backend); the entry of cart recovery."""

    cart_id: ObjectId = Field(
        description="Shopify checkout token; from the app endpoint, the checkout's id at "
        "its payment provider (a Stripe Checkout Session id), so the order that completes "
        "it carries the same cart_id."
    )


class CartUpdated(CommerceProperties):
    """The contents or value of an open checkout changed materially."""

    cart_id: ObjectId = Field(description="Shopify checkout token or, from the app, as above.")


class CheckoutExpired(CommerceProperties):
    """A Stripe Checkout Session expired unpaid; carries the recovery URL when allowed."""

    cart_id: ObjectId = Field(description="Stripe Checkout Session id.")


class OrderCompleted(CommerceProperties):
    """A purchase was paid (Stripe) or placed (Shopify, configurable to paid)."""

    order_id: str = Field(
        description="Shopify order id; Stripe invoice id for invoiced payments, else the "
        "PaymentIntent id, else the Checkout Session id."
    )
    order_number: str | None = Field(None, description="Shopify order name, e.g. #1001.")
    payment_id: str | None = Field(
        None, description="Stripe PaymentIntent id when known (refunds refer to it)."
    )
    subscription_id: str | None = Field(None, description="Subscription paid for, if any.")
    financial_status: str | None = Field(
        None,
        description="Shopify financial_status (paid, pending, authorized, ...); Stripe "
        "orders are paid by definition. Lets journeys tell cash-on-delivery orders apart.",
    )
    billing_reason: str | None = Field(
        None,
        description="Stripe invoice billing_reason: subscription_create (first payment), "
        "subscription_cycle (renewal), manual, ...",
    )
    is_first_order: bool | None = Field(
        None,
        description="True for the person's first order by date (welcome vs repeat "
        "journeys); set by the service from the person's orders, not by the provider.",
    )
    order_count: int | None = Field(
        None,
        ge=1,
        description="This order's place among the person's orders by date (1 = first).",
    )


class OrderCanceled(EventProperties):
    """A Shopify order was cancelled."""

    order_id: str = Field(description="Shopify order id.")
    order_number: str | None = Field(None, description="Shopify order name.")
    total: Money | None = Field(None, description="Order total.")
    currency: Currency | None = Field(None, description="Currency of `total`.")
    reason: str | None = Field(None, description="customer, fraud, inventory, declined, ...")


class RefundIssued(EventProperties):
    """Money went back to the buyer (one event per refund, partial or full)."""

    refund_id: str = Field(description="Provider refund id (or charge id plus amount).")
    order_id: str | None = Field(
        None, description="Shopify order id; Stripe PaymentIntent (or charge) id."
    )
    amount: Money = Field(description="Amount of this refund.")
    currency: Currency = Field(description="Currency of `amount`.")
    reason: str | None = Field(None, description="Reason or note given for the refund.")


class PaymentFailed(EventProperties):
    """A payment attempt failed (checkout, one-off or subscription dunning)."""

    amount: Money | None = Field(None, description="Amount that failed to be collected.")
    currency: Currency | None = Field(None, description="Currency of `amount`.")
    attempt_count: int | None = Field(None, ge=0, description="Attempts so far (dunning).")
    invoice_id: str | None = Field(None, description="Stripe invoice id.")
    payment_id: str | None = Field(
        None, description="Stripe PaymentIntent id or Shopify billing attempt id."
    )
    subscription_id: str | None = Field(None, description="Subscription being billed.")
    pay_url: str | None = Field(None, description="Where the buyer can pay again.")
    failure_reason: str | None = Field(None, description="Decline code or error message.")
    next_attempt_at: UnixTime | None = Field(None, description="Next automatic retry.")


class SubscriptionProperties(EventProperties):
    """State of a subscription, shared by every subscription event."""

    subscription_id: ObjectId = Field(description="Stripe subscription or Shopify contract id.")
    status: str | None = Field(None, description="Provider status after the change.")
    plan: str | None = Field(None, description="Price (Stripe) or first line's variant id.")
    product_ids: list[str] | None = Field(None, description="Products subscribed to.")
    interval: str | None = Field(None, description="day, week, month or year.")
    interval_count: int | None = Field(None, ge=1, description="Intervals per billing cycle.")
    amount: Money | None = Field(None, description="Amount per billing cycle.")
    currency: Currency | None = Field(None, description="Currency of `amount`.")
    current_period_end: UnixTime | None = Field(None, description="End of the paid period.")


class SubscriptionCreated(SubscriptionProperties):
    """A subscription (Stripe) or subscription contract (Shopify) was created."""

    trial_end: UnixTime | None = Field(None, description="End of the trial, if any.")


class SubscriptionPaused(SubscriptionProperties):
    """Billing paused: status paused, or (Stripe) payment collection paused."""

    pause_kind: Literal["status", "collection"] = Field(
        description="status: the subscription is paused; collection: Stripe keeps the "
        "subscription active but stops collecting payment (pause_collection)."
    )
    resumes_at: UnixTime | None = Field(None, description="When billing resumes, if set.")


class SubscriptionResumed(SubscriptionProperties):
    """Billing resumed after a pause."""

    pause_kind: Literal["status", "collection"] = Field(description="What was paused.")


class SubscriptionCanceled(SubscriptionProperties):
    """A cancellation was requested or took effect, whichever the provider said first."""

    cancel_at_period_end: bool = Field(
        False, description="True when it stays active until `ends_at` (a scheduled cancel)."
    )
    ends_at: UnixTime | None = Field(None, description="When access ends or ended.")
    cancellation_reason: str | None = Field(None, description="Provider's reason code.")
    feedback: str | None = Field(None, description="Buyer's feedback choice, if given.")


class TrialEnding(SubscriptionProperties):
    """A trial ends soon (Stripe: 3 days before, or at once if ended early)."""

    trial_end: UnixTime = Field(description="When the trial ends.")


class SubscriptionSkipped(EventProperties):
    """The buyer skipped one billing cycle and stays subscribed (your backend says so)."""

    subscription_id: ObjectId = Field(description="The subscription whose cycle was skipped.")
    skipped_period_start: UnixTime = Field(
        description="Start of the billing period skipped (names the skip: one per period)."
    )
    next_billing_at: UnixTime | None = Field(None, description="When billing resumes.")
    plan: str | None = Field(None, description="Plan or price id.")
    amount: Money | None = Field(None, description="Amount not billed this cycle.")
    currency: Currency | None = Field(None, description="Currency of `amount`.")
    reason: str | None = Field(None, description="Why, as the buyer or backend said.")


class ProductViewed(EventProperties):
    """A known or anonymous visitor viewed a product (your backend: browse abandonment)."""

    product_id: ObjectId = Field(description="Product id in the merchant's catalogue.")
    variant_id: str | None = Field(None, description="Variant or price id.")
    sku: str | None = Field(None, description="Stock keeping unit.")
    name: str | None = Field(None, description="Product name as shown.")
    category: str | None = Field(None, description="Category or collection.")
    price: Money | None = Field(None, description="Price shown, in `currency`.")
    currency: Currency | None = Field(None, description="Currency of `price`.")
    url: str | None = Field(None, description="Product page URL.")
    image_url: str | None = Field(None, description="Product image URL.")


EVENT_MODELS: dict[EventName, type[EventProperties]] = {
    EventName.CHECKOUT_STARTED: CheckoutStarted,
    EventName.CART_UPDATED: CartUpdated,
    EventName.CHECKOUT_EXPIRED: CheckoutExpired,
    EventName.ORDER_COMPLETED: OrderCompleted,
    EventName.ORDER_CANCELED: OrderCanceled,
    EventName.REFUND_ISSUED: RefundIssued,
    EventName.PAYMENT_FAILED: PaymentFailed,
    EventName.SUBSCRIPTION_CREATED: SubscriptionCreated,
    EventName.SUBSCRIPTION_PAUSED: SubscriptionPaused,
    EventName.SUBSCRIPTION_RESUMED: SubscriptionResumed,
    EventName.SUBSCRIPTION_CANCELED: SubscriptionCanceled,
    EventName.TRIAL_ENDING: TrialEnding,
    EventName.PRODUCT_VIEWED: ProductViewed,
    EventName.SUBSCRIPTION_SKIPPED: SubscriptionSkipped,
}


class PersonAttributes(_Strict):
    """Person attributes a provider reveals; sent as identify attributes."""

    email: str | None = Field(None, description="Email address (an attribute, not the id).")
    first_name: str | None = Field(None, description="Given name.")
    last_name: str | None = Field(None, description="Family name.")
    phone: str | None = Field(None, description="Phone number as given (E.164 if known).")
    email_consent: bool | None = Field(None, description="Subscribed to email marketing.")
    sms_consent: bool | None = Field(None, description="Subscribed to SMS marketing.")
    country: str | None = Field(None, description="Country code of the address given.")
    city: str | None = Field(None, description="City of the address given.")
    locale: str | None = Field(None, description="Preferred locale.")
