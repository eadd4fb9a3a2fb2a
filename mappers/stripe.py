"""Stripe events to canonical actions. Semantic keys are written beside each rule.

Order identity: a payment that belongs to an invoice is reported by the invoice (key:
invoice id); any other payment by its PaymentIntent (key: PaymentIntent id); a paid
Checkout Session without either by the session. So checkout.session.completed,
payment_intent.succeeded and invoice.paid for one purchase yield one order_completed.
"""

from __future__ import annotations

from typing import Any

from mappers import read
from mappers import stripe_billing as billing
from mappers import stripe_fields as f
from mappers.actions import Action, Person
from mappers.base import Handler, StoredDelivery
from mappers.common import identify, track
from mappers.errors import MappingError
from mappers.stripe_fields import StripeConfig
from mappers.taxonomy import CheckoutExpired, EventName, OrderCompleted, PaymentFailed, RefundIssued


def _session_order_key(session: dict[str, Any]) -> str:
    # Subscription-mode sessions and invoice_creation sessions are paid through an
    # invoice, which invoice.paid also reports; others through their PaymentIntent.
    return (
        read.ref(session, "invoice")
        or read.ref(session, "payment_intent")
        or read.text(session, "id")
    )


def _session_commerce(session: dict[str, Any], delivery: StoredDelivery) -> dict[str, Any]:
    code = f.optional_currency(session)
    if code is None:
        # Stripe allows a null currency (setup-mode sessions always have one): the event
        # still goes out, without amounts or priced items, never dead-lettered for it.
        return {
            "source": "stripe",
            "cart_id": read.text(session, "id"),
            "items_complete": False,
            "customer_id": read.ref(session, "customer"),
        }
    lines = delivery.enrichment.get("line_items")
    if not isinstance(lines, list):
        # Checkout webhooks carry no line items unless expanded; the worker's enrichment
        # fills them later, and until then the event says so.
        lines = read.items(session, "line_items") or None
    presentment = read.opt_obj(session, "presentment_details")
    presentment_code = (read.opt_text(presentment, "presentment_currency") or "").upper()
    has_presentment = bool(presentment_code) and presentment_code != code
    return {
        "source": "stripe",
        "cart_id": read.text(session, "id"),
        "items": f.line_items(lines, code) if lines is not None else None,
        "items_complete": lines is not None,
        "subtotal": f.money(session, "amount_subtotal", code),
        "discount": f.money(session, "total_details.amount_discount", code),
        "shipping": f.money(session, "total_details.amount_shipping", code),
        "tax": f.money(session, "total_details.amount_tax", code),
        "total": f.money(session, "amount_total", code),
        "currency": code,
        "presentment_currency": presentment_code if has_presentment else None,
        "presentment_total": f.money(presentment, "presentment_amount", presentment_code)
        if has_presentment
        else None,
        "customer_id": read.ref(session, "customer"),
    }


def _session_person(
    delivery: StoredDelivery, config: StripeConfig, session: dict[str, Any]
) -> Person:
    email = read.opt_text(session, "customer_details.email") or read.opt_text(
        session, "customer_email"
    )
    return f.person(
        delivery, config, session, email=email, checkout_token=read.opt_text(session, "id")
    )


def session_paid(delivery: StoredDelivery, config: StripeConfig) -> list[Action]:
    """checkout.session.completed (when paid) and async_payment_succeeded -> order_completed."""
    session = f.data_object(delivery)
    who = _session_person(delivery, config, session)
    found = identify(delivery, who, f.attributes(read.opt_obj(session, "customer_details")))
    paid = (
        delivery.event_type == "checkout.session.async_payment_succeeded"
        or session.get("payment_status") == "paid"
    )
    if not paid:
        # Unpaid (an async method still pending) or no_payment_required (a free trial):
        # not a purchase yet; async_payment_succeeded or the subscription events follow.
        return list(found)
    if session.get("mode") == "subscription" and session.get("amount_total") == 0:
        # A free trial started through Checkout can arrive as "paid" with nothing paid:
        # like its $0 invoice.paid, not a purchase. The first real charge's invoice.paid
        # is the order.
        return list(found)
    key = _session_order_key(session)
    props = OrderCompleted(
        **_session_commerce(session, delivery),
        order_id=key,
        financial_status="paid",
        payment_id=read.ref(session, "payment_intent"),
        subscription_id=read.ref(session, "subscription"),
    )
    return [*found, track(delivery, who, EventName.ORDER_COMPLETED, props, key)]


def session_expired(delivery: StoredDelivery, config: StripeConfig) -> list[Action]:
    """checkout.session.expired -> checkout_expired, with the recovery URL when given."""
    session = f.data_object(delivery)
    who = _session_person(delivery, config, session)
    props = CheckoutExpired(
        **_session_commerce(session, delivery),
        # Present only when recovery was enabled and the buyer consented to promotions.
        recovery_url=read.opt_text(session, "after_expiration.recovery.url"),
    )
    return [
        *identify(delivery, who, f.attributes(read.opt_obj(session, "customer_details"))),
        track(delivery, who, EventName.CHECKOUT_EXPIRED, props, read.text(session, "id")),
    ]


def session_payment_failed(delivery: StoredDelivery, config: StripeConfig) -> list[Action]:
    """checkout.session.async_payment_failed -> payment_failed."""
    session = f.data_object(delivery)
    code = f.currency(session)
    payment = read.ref(session, "payment_intent")
    props = PaymentFailed(
        source="stripe",
        amount=f.money(session, "amount_total", code),
        currency=code,
        payment_id=payment,
        invoice_id=read.ref(session, "invoice"),
        subscription_id=read.ref(session, "subscription"),
    )
    who = _session_person(delivery, config, session)
    key = payment or read.text(session, "id")
    found = identify(delivery, who, f.attributes(read.opt_obj(session, "customer_details")))
    return [*found, track(delivery, who, EventName.PAYMENT_FAILED, props, key)]


def _invoice_of_payment(delivery: StoredDelivery, intent: dict[str, Any]) -> str | None:
    # Before API 2025-03-31 a PaymentIntent names its invoice; from then on only an API
    # lookup can tell, which the worker's enrichment records as "invoice".
    return read.ref(intent, "invoice") or read.opt_text(delivery.enrichment, "invoice")


def payment_succeeded(delivery: StoredDelivery, config: StripeConfig) -> list[Action]:
    """payment_intent.succeeded -> order_completed, unless an invoice reports it."""
    intent = f.data_object(delivery)
    if _invoice_of_payment(delivery, intent) or not config.payment_intent_events:
        return []  # Checkout or invoice events report this payment
    code = f.currency(intent)
    key = read.text(intent, "id")
    email = read.opt_text(intent, "receipt_email")
    props = OrderCompleted(
        source="stripe",
        order_id=key,
        financial_status="paid",
        payment_id=key,
        total=f.money(intent, "amount_received", code) or f.money(intent, "amount", code),
        currency=code,
        items_complete=False,
        customer_id=read.ref(intent, "customer"),
    )
    who = f.person(delivery, config, intent, email=email)
    found = identify(delivery, who, f.attributes({}, email))
    return [*found, track(delivery, who, EventName.ORDER_COMPLETED, props, key)]


def payment_intent_failed(delivery: StoredDelivery, config: StripeConfig) -> list[Action]:
    """payment_intent.payment_failed -> payment_failed (one per failed charge attempt)."""
    intent = f.data_object(delivery)
    if _invoice_of_payment(delivery, intent) or not config.payment_intent_events:
        return []  # invoice.payment_failed or the session's async failure reports it
    code = f.currency(intent)
    error = read.opt_obj(intent, "last_payment_error")
    # One failed attempt: its charge, or (3-D Secure failures have none) the event.
    attempt = (
        read.ref(error, "charge")
        or read.ref(intent, "latest_charge")
        or read.text(delivery.payload, "id")
    )
    props = PaymentFailed(
        source="stripe",
        amount=f.money(intent, "amount", code),
        currency=code,
        payment_id=read.text(intent, "id"),
        failure_reason=read.opt_text(error, "decline_code")
        or read.opt_text(error, "code")
        or read.opt_text(error, "message"),
    )
    who = f.person(delivery, config, intent, email=read.opt_text(intent, "receipt_email"))
    return [track(delivery, who, EventName.PAYMENT_FAILED, props, read.text(intent, "id"), attempt)]


# Refund statuses under which no money went back to the buyer.
NO_MONEY_BACK = frozenset({"failed", "canceled"})


def _refund(
    delivery: StoredDelivery,
    who: Any,
    refund_id: str,
    amount: Any,
    code: str,
    order: Any,
    reason: str | None,
    *key: str,
    created: int | None = None,
) -> Action:
    if amount is None:
        raise MappingError("the refund amount is missing")
    props = RefundIssued(
        source="stripe",
        refund_id=refund_id,
        order_id=order,
        amount=amount,
        currency=code,
        reason=reason,
    )
    # The refund's own creation time: refund.created and a charge listing it agree.
    return track(delivery, who, EventName.REFUND_ISSUED, props, *key, timestamp=created)


def refund_created(delivery: StoredDelivery, config: StripeConfig) -> list[Action]:
    """refund.created -> refund_issued, keyed by refund id."""
    refund = f.data_object(delivery)
    if read.opt_text(refund, "status") in NO_MONEY_BACK:
        return []  # no money went back
    code = f.currency(refund)
    refund_id = read.text(refund, "id")
    order = read.ref(refund, "payment_intent") or read.ref(refund, "charge")
    amount = f.money(refund, "amount", code)
    who = f.person(delivery, config, refund).model_copy(update={"order_id": order})
    return [
        _refund(
            delivery,
            who,
            refund_id,
            amount,
            code,
            order,
            read.opt_text(refund, "reason"),
            refund_id,
            created=read.opt_int(refund, "created"),
        )
    ]


def charge_refunded(delivery: StoredDelivery, config: StripeConfig) -> list[Action]:
    """charge.refunded -> refund_issued, unless refund.created reports the same refund."""
    charge = f.data_object(delivery)
    code = f.currency(charge)
    order = read.ref(charge, "payment_intent") or read.text(charge, "id")
    email = read.opt_text(charge, "billing_details.email") or read.opt_text(charge, "receipt_email")
    who = f.person(delivery, config, charge, email=email).model_copy(update={"order_id": order})
    found = identify(delivery, who, f.attributes(read.opt_obj(charge, "billing_details"), email))
    refunds = read.items(charge, "refunds")
    if refunds:
        # Older API versions include the refunds: key each by its id, as refund.created
        # would, so every event listing them maps to the same facts.
        listed = [
            _refund(
                delivery,
                who,
                rid,
                f.money(r, "amount", code),
                code,
                order,
                read.opt_text(r, "reason"),
                rid,
                created=read.opt_int(r, "created"),
            )
            for r in refunds
            if (rid := read.opt_text(r, "id"))
            # As refund.created: a failed or canceled refund sent no money back.
            and read.opt_text(r, "status") not in NO_MONEY_BACK
        ]
        return [*found, *listed]
    if f.api_at_least(delivery, f.REFUND_EVENTS_FOR_ALL):
        return list(found)  # refund.created fires for this refund too and carries its id
    # 2022-11-15 to 2024-10-28: no refund id here and no refund.created for charges; the
    # cumulative refunded amount names this refund, and the delta is its amount.
    total = read.opt_int(charge, "amount_refunded")
    if total is None:
        raise MappingError("data.object.amount_refunded is missing")
    before = read.opt_int(f.previous(delivery), "amount_refunded")
    if before is None:
        # Without the previous total the delta (this refund's amount) is unknown.
        raise MappingError("data.previous_attributes.amount_refunded is missing")
    amount = f.money({"a": total - before}, "a", code)
    charge_id = read.text(charge, "id")
    return [
        *found,
        _refund(
            delivery, who, f"{charge_id}:{total}", amount, code, order, None, charge_id, str(total)
        ),
    ]


def customer_changed(delivery: StoredDelivery, config: StripeConfig) -> list[Action]:
    """customer.created / customer.updated -> identify (the source of person attributes)."""
    customer = f.data_object(delivery)
    who = f.person(delivery, config, customer, email=read.opt_text(customer, "email"))
    who = who.model_copy(update={"customer_id": read.text(customer, "id")})
    return list(identify(delivery, who, f.attributes(customer)))


HANDLERS: dict[str, Handler[StripeConfig]] = {
    "checkout.session.completed": session_paid,
    "checkout.session.async_payment_succeeded": session_paid,
    "checkout.session.async_payment_failed": session_payment_failed,
    "checkout.session.expired": session_expired,
    "payment_intent.succeeded": payment_succeeded,
    "payment_intent.payment_failed": payment_intent_failed,
    "invoice.paid": billing.invoice_paid,
    "invoice.payment_succeeded": billing.invoice_paid,
    "invoice.payment_failed": billing.invoice_failed,
    "invoice_payment.paid": billing.invoice_payment_paid,
    "customer.subscription.created": billing.subscription_created,
    "customer.subscription.updated": billing.subscription_updated,
    "customer.subscription.deleted": billing.subscription_deleted,
    "customer.subscription.paused": billing.subscription_paused,
    "customer.subscription.resumed": billing.subscription_resumed,
    "customer.subscription.trial_will_end": billing.trial_will_end,
    "refund.created": refund_created,
    "charge.refunded": charge_refunded,
    "customer.created": customer_changed,
    "customer.updated": customer_changed,
}
