"""Stripe: Checkout, Billing and PaymentIntents, verified with the stripe library.

Everything the service knows about Stripe is declared here (SPEC) or in this package's
modules; the pure translators are mappers.stripe*.
"""

from __future__ import annotations

from mappers.stripe import HANDLERS
from mappers.stripe_fields import StripeConfig
from mappers.taxonomy import EventName
from mappers.taxonomy_doc import EventDoc
from webhooks.providers.base import ProviderSpec
from webhooks.providers.stripe.backfill import events
from webhooks.providers.stripe.enrich import enricher
from webhooks.providers.stripe.register import register
from webhooks.providers.stripe.settings import StripeSettings
from webhooks.providers.stripe.signature import (
    NAME,
    PLATFORM_ACCOUNT,
    SIGNATURE_HEADER,
    StripeReceiver,
    sign,
)
from webhooks.providers.stripe.simulate import sample


def _receiver(settings: StripeSettings) -> StripeReceiver:
    return StripeReceiver(settings.secrets(), tolerance=settings.webhook_tolerance)


def _mapper_config(settings: StripeSettings, internal_id_key: str) -> StripeConfig:
    return StripeConfig(
        internal_id_metadata_key=internal_id_key,
        payment_intent_events=settings.payment_intent_events,
        client_reference_id=settings.client_reference_id,
    )


def _sign(body: bytes, secret: str) -> dict[str, str]:
    return {SIGNATURE_HEADER: sign(body, secret)}


DOCS = {
    EventName.CHECKOUT_STARTED: EventDoc(
        "none: Stripe sends no webhook when a session is created; your backend reports "
        "it through the app endpoint (`POST /webhooks/app`)"
    ),
    EventName.CHECKOUT_EXPIRED: EventDoc(
        "`checkout.session.expired` (with `recovery_url` when recovery is on)",
        "Checkout Session id",
    ),
    EventName.ORDER_COMPLETED: EventDoc(
        "`checkout.session.completed` when paid, `checkout.session.async_payment_succeeded`, "
        "`invoice.paid` / `invoice.payment_succeeded` (not $0), `payment_intent.succeeded` "
        "(only with STRIPE_PAYMENT_INTENT_EVENTS, not invoiced)",
        "invoice id for invoiced payments, else PaymentIntent id, else session id",
    ),
    EventName.REFUND_ISSUED: EventDoc(
        "`refund.created`; `charge.refunded` where no refund.created exists for it",
        "refund id (API versions before 2022-11-15 list refunds on the charge; 2022-11-15 "
        "to 2024-10-28: charge id + cumulative refunded amount)",
    ),
    EventName.PAYMENT_FAILED: EventDoc(
        "`invoice.payment_failed`, `payment_intent.payment_failed` (only with "
        "STRIPE_PAYMENT_INTENT_EVENTS, not invoiced), `checkout.session.async_payment_failed`",
        "invoice id + attempt count; PaymentIntent id + charge id",
    ),
    EventName.SUBSCRIPTION_CREATED: EventDoc("`customer.subscription.created`", "subscription id"),
    EventName.SUBSCRIPTION_PAUSED: EventDoc(
        "`customer.subscription.paused` (status) and `customer.subscription.updated` setting "
        "`pause_collection` (collection)",
        "subscription id + kind + event time",
    ),
    EventName.SUBSCRIPTION_RESUMED: EventDoc(
        "`customer.subscription.resumed`; `customer.subscription.updated` clearing "
        "`pause_collection`",
        "subscription id + kind + event time",
    ),
    EventName.SUBSCRIPTION_CANCELED: EventDoc(
        "`customer.subscription.deleted`; `customer.subscription.updated` scheduling a cancel",
        "subscription id + `canceled_at` (the request time, shared by a scheduled cancel and "
        "its deletion)",
    ),
    EventName.TRIAL_ENDING: EventDoc(
        "`customer.subscription.trial_will_end`", "subscription id + trial end"
    ),
}

SPEC: ProviderSpec[StripeSettings, StripeConfig] = ProviderSpec(
    name=NAME,
    title="Stripe",
    settings=StripeSettings,
    receiver=_receiver,
    sign=_sign,
    handlers=HANDLERS,
    mapper_config=_mapper_config,
    person_id_format="stripe:{customer_id}",
    own_account=PLATFORM_ACCOUNT,
    enricher=enricher,
    docs=DOCS,
    sample=sample,
    backfill=events,
    register=register,
)

__all__ = ["SPEC", "sign"]
