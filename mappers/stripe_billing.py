"""Stripe Billing events (invoices, subscriptions) to canonical actions."""

from __future__ import annotations

from typing import Any

from mappers import read
from mappers import stripe_fields as f
from mappers.actions import Action, OrderPayment, Person, SubscriptionState, Track
from mappers.base import StoredDelivery
from mappers.common import identify, track
from mappers.errors import MappingError
from mappers.stripe_fields import StripeConfig
from mappers.taxonomy import (
    EventName,
    OrderCompleted,
    PaymentFailed,
    SubscriptionCanceled,
    SubscriptionCreated,
    SubscriptionPaused,
    SubscriptionResumed,
    TrialEnding,
)


def _invoice_person(
    delivery: StoredDelivery, config: StripeConfig, invoice: dict[str, Any]
) -> Person:
    who = f.person(
        delivery,
        config,
        invoice,
        email=read.opt_text(invoice, "customer_email"),
        extra_metadata=f.invoice_metadata(invoice),
    )
    return who.model_copy(update={"subscription_id": f.invoice_subscription(invoice)})


def _sum(entries: list[dict[str, Any]], field: str) -> int | None:
    values = [v for entry in entries if (v := read.opt_int(entry, field)) is not None]
    return sum(values) if values else None


def invoice_payment(delivery: StoredDelivery, invoice: dict[str, Any]) -> str | None:
    """The PaymentIntent that paid an invoice, if anything says so.

    Before API 2025-03-31 the invoice names it. From then on only its payments do: the
    `payments` list when the payload includes it, or the worker's lookup of the
    invoice's payments (enrichment `payment_intent`); without either,
    invoice_payment.paid says it (see invoice_payment_paid).
    """
    named = read.ref(invoice, "payment_intent")
    if named:
        return named
    for entry in read.items(invoice, "payments"):
        if read.opt_text(entry, "status") in (None, "paid"):
            found = read.ref(read.opt_obj(entry, "payment"), "payment_intent")
            if found:
                return found
    return read.opt_text(delivery.enrichment, "payment_intent")


def invoice_payment_paid(delivery: StoredDelivery, config: StripeConfig) -> list[Action]:
    """invoice_payment.paid (API 2025-03-31+): which payment paid an invoice.

    Nothing is sent: refunds name the PaymentIntent (or the charge), and this is how
    they find the invoice's order and its buyer (see docs/identity.md).
    """
    record = f.data_object(delivery)
    if read.opt_text(record, "status") not in (None, "paid"):
        return []
    invoice = read.ref(record, "invoice")
    if not invoice:
        raise MappingError("data.object.invoice is missing")
    payment = read.opt_obj(record, "payment")
    paid_by = read.ref(payment, "payment_intent") or read.ref(payment, "charge")
    if not paid_by:
        return []  # paid out of band (a payment record): no refund can name it
    who = Person(source="stripe", account=delivery.account, order_id=invoice)
    return [OrderPayment(person=who, payment_id=paid_by, timestamp=delivery.timestamp())]


def invoice_paid(delivery: StoredDelivery, config: StripeConfig) -> list[Action]:
    """invoice.paid / invoice.payment_succeeded -> order_completed, keyed by invoice id."""
    invoice = f.data_object(delivery)
    who = _invoice_person(delivery, config, invoice)
    found = identify(
        delivery,
        who,
        f.attributes(
            {"name": invoice.get("customer_name")}, read.opt_text(invoice, "customer_email")
        ),
    )
    code = f.currency(invoice)
    if not read.opt_int(invoice, "amount_paid"):
        # A $0 invoice (a trial starting, a fully discounted cycle) is not a purchase.
        return list(found)
    key = read.text(invoice, "id")
    lines = read.items(invoice, "lines")
    taxes = read.items(invoice, "total_taxes")  # basil; older versions have `tax`
    tax = _sum(taxes, "amount") if taxes else read.opt_int(invoice, "tax")
    discount = _sum(read.items(invoice, "total_discount_amounts"), "amount")
    props = OrderCompleted(
        source="stripe",
        order_id=key,
        financial_status="paid",
        payment_id=invoice_payment(delivery, invoice),
        subscription_id=f.invoice_subscription(invoice),
        billing_reason=read.opt_text(invoice, "billing_reason"),
        items=f.line_items(lines, code) if lines else None,
        items_complete=bool(lines) and not read.opt_bool(invoice, "lines.has_more"),
        subtotal=f.money(invoice, "subtotal", code),
        discount=None if discount is None else f.money({"d": discount}, "d", code),
        tax=None if tax is None else f.money({"t": tax}, "t", code),
        total=f.money(invoice, "amount_paid", code),
        currency=code,
        customer_id=read.ref(invoice, "customer"),
    )
    return [*found, track(delivery, who, EventName.ORDER_COMPLETED, props, key)]


def invoice_failed(delivery: StoredDelivery, config: StripeConfig) -> list[Action]:
    """invoice.payment_failed -> payment_failed, one per dunning attempt."""
    invoice = f.data_object(delivery)
    code = f.currency(invoice)
    attempt = read.opt_int(invoice, "attempt_count")
    props = PaymentFailed(
        source="stripe",
        amount=f.money(invoice, "amount_due", code),
        currency=code,
        attempt_count=attempt,
        invoice_id=read.text(invoice, "id"),
        payment_id=read.ref(invoice, "payment_intent"),
        subscription_id=f.invoice_subscription(invoice),
        pay_url=read.opt_text(invoice, "hosted_invoice_url"),
        next_attempt_at=read.opt_int(invoice, "next_payment_attempt"),
    )
    who = _invoice_person(delivery, config, invoice)
    key = (read.text(invoice, "id"), str(attempt or 0))
    attributes = f.attributes(
        {"name": invoice.get("customer_name")}, read.opt_text(invoice, "customer_email")
    )
    return [
        *identify(delivery, who, attributes),
        track(delivery, who, EventName.PAYMENT_FAILED, props, *key),
    ]


def _subscription(delivery: StoredDelivery, config: StripeConfig) -> tuple[dict[str, Any], Person]:
    sub = f.data_object(delivery)
    who = f.person(delivery, config, sub)
    return sub, who.model_copy(update={"subscription_id": read.opt_text(sub, "id")})


def subscription_created(delivery: StoredDelivery, config: StripeConfig) -> list[Action]:
    """customer.subscription.created -> subscription_created, once per subscription."""
    sub, who = _subscription(delivery, config)
    props = SubscriptionCreated(
        source="stripe", **f.subscription_fields(sub), trial_end=read.opt_int(sub, "trial_end")
    )
    return [track(delivery, who, EventName.SUBSCRIPTION_CREATED, props, props.subscription_id)]


def _canceled(delivery: StoredDelivery, sub: dict[str, Any], who: Person, scheduled: bool) -> Track:
    # canceled_at is when the cancellation was requested, for scheduled and immediate
    # cancels alike, so the scheduled cancel and the later deletion are one fact, and a
    # cancel after a reactivation is a new one.
    requested = read.opt_int(sub, "canceled_at") or delivery.timestamp()
    props = SubscriptionCanceled(
        source="stripe",
        **f.subscription_fields(sub),
        cancel_at_period_end=scheduled,
        ends_at=read.opt_int(sub, "ended_at")
        or read.opt_int(sub, "cancel_at")
        or (f.subscription_fields(sub)["current_period_end"] if scheduled else None),
        cancellation_reason=read.opt_text(sub, "cancellation_details.reason"),
        feedback=read.opt_text(sub, "cancellation_details.feedback"),
    )
    key = (props.subscription_id, str(requested))
    return track(delivery, who, EventName.SUBSCRIPTION_CANCELED, props, *key, timestamp=requested)


def subscription_deleted(delivery: StoredDelivery, config: StripeConfig) -> list[Action]:
    """customer.subscription.deleted -> subscription_canceled, and the status as of now.

    The event is timed by the cancel's request (one fact with a scheduled cancel); the
    status `canceled` is as of the deletion, so a pause or resume reported in between
    does not outlive it.
    """
    sub, who = _subscription(delivery, config)
    canceled = _canceled(delivery, sub, who, scheduled=False)
    status = SubscriptionState(
        person=who,
        subscription_id=read.text(sub, "id"),
        status=read.opt_text(sub, "status") or "canceled",
        timestamp=delivery.timestamp(),
    )
    return [canceled, status]


def subscription_updated(delivery: StoredDelivery, config: StripeConfig) -> list[Action]:
    """A scheduled cancel, or payment collection paused or resumed, from .updated."""
    sub, who = _subscription(delivery, config)
    before = f.previous(delivery)
    actions: list[Action] = []
    newly_scheduled = ("cancel_at_period_end" in before and sub.get("cancel_at_period_end")) or (
        "cancel_at" in before and before.get("cancel_at") is None and sub.get("cancel_at")
    )
    if newly_scheduled:
        actions.append(_canceled(delivery, sub, who, scheduled=True))
    if "pause_collection" in before:
        # Pausing collection keeps status active and fires no .paused event.
        fields = f.subscription_fields(sub)
        # The event id names this transition; replays of the event repeat it.
        now = read.text(delivery.payload, "id")
        change: tuple[EventName, SubscriptionPaused | SubscriptionResumed] | None = None
        if sub.get("pause_collection") and not before["pause_collection"]:
            paused = SubscriptionPaused(
                source="stripe",
                **fields,
                pause_kind="collection",
                resumes_at=read.opt_int(sub, "pause_collection.resumes_at"),
            )
            change = (EventName.SUBSCRIPTION_PAUSED, paused)
        elif before["pause_collection"] and not sub.get("pause_collection"):
            resumed = SubscriptionResumed(source="stripe", **fields, pause_kind="collection")
            change = (EventName.SUBSCRIPTION_RESUMED, resumed)
        if change is not None:
            event, props = change
            key = (fields["subscription_id"], "collection", now)
            actions.append(track(delivery, who, event, props, *key))
    status = read.opt_text(sub, "status")
    if "status" in before and status and fields_id(sub):
        # trialing -> active, active -> past_due, ...: no journey event of its own, but
        # subscription_status must follow (dunning and win-back segments read it).
        actions.append(
            SubscriptionState(
                person=who,
                subscription_id=fields_id(sub),
                status=status,
                timestamp=delivery.timestamp(),
            )
        )
    return actions


def fields_id(sub: dict[str, Any]) -> str:
    """The subscription's id ("" when absent)."""
    return read.opt_text(sub, "id") or ""


def subscription_paused(delivery: StoredDelivery, config: StripeConfig) -> list[Action]:
    """customer.subscription.paused (status paused) -> subscription_paused."""
    sub, who = _subscription(delivery, config)
    props = SubscriptionPaused(source="stripe", **f.subscription_fields(sub), pause_kind="status")
    key = (props.subscription_id, "status", read.text(delivery.payload, "id"))
    return [track(delivery, who, EventName.SUBSCRIPTION_PAUSED, props, *key)]


def subscription_resumed(delivery: StoredDelivery, config: StripeConfig) -> list[Action]:
    """customer.subscription.resumed -> subscription_resumed."""
    sub, who = _subscription(delivery, config)
    props = SubscriptionResumed(source="stripe", **f.subscription_fields(sub), pause_kind="status")
    key = (props.subscription_id, "status", read.text(delivery.payload, "id"))
    return [track(delivery, who, EventName.SUBSCRIPTION_RESUMED, props, *key)]


def trial_will_end(delivery: StoredDelivery, config: StripeConfig) -> list[Action]:
    """customer.subscription.trial_will_end -> trial_ending, once per trial end."""
    sub, who = _subscription(delivery, config)
    trial_end = read.opt_int(sub, "trial_end")
    if trial_end is None:
        raise MappingError("data.object.trial_end is missing on trial_will_end")
    props = TrialEnding(source="stripe", **f.subscription_fields(sub), trial_end=trial_end)
    return [
        track(delivery, who, EventName.TRIAL_ENDING, props, props.subscription_id, str(trial_end))
    ]
