"""What Stripe webhooks leave out, and how to fetch it.

Checkout webhooks carry no line items; an event's resource may name a customer whose
own metadata alone holds the merchant's id; and from API 2025-03-31 an invoice no
longer names the PaymentIntent that paid it, nor a PaymentIntent its invoice (only the
invoice's payments say). Stage 1 (webhooks.stage1.enrich) asks this module what a
delivery needs, calls it, and stores the answer with the inbox row.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any

import structlog

from mappers import read
from mappers import stripe_fields as f
from mappers.base import StoredDelivery
from mappers.stripe import HANDLERS
from mappers.stripe_fields import StripeConfig
from webhooks.providers.base import Fetch
from webhooks.providers.stripe.api import StripeAPI
from webhooks.providers.stripe.settings import StripeSettings

log = structlog.get_logger("webhooks.providers.stripe")

# Events whose mapping reports the session's items (mappers.stripe._session_commerce).
LINE_ITEM_EVENTS = frozenset(
    {
        "checkout.session.completed",
        "checkout.session.async_payment_succeeded",
        "checkout.session.expired",
    }
)
# Mapped events whose person is read from a resource naming a customer. customer.*
# events carry the customer itself, metadata included, as it was at the event.
CUSTOMER_EVENTS = frozenset(HANDLERS) - {"customer.created", "customer.updated"}
# Events whose order is keyed by the invoice: which PaymentIntent paid it (refunds
# name that), and PaymentIntent events: which invoice, if any, reports them instead.
INVOICE_EVENTS = frozenset({"invoice.paid", "invoice.payment_succeeded"})
PAYMENT_EVENTS = frozenset({"payment_intent.succeeded", "payment_intent.payment_failed"})
CANDIDATES = LINE_ITEM_EVENTS | CUSTOMER_EVENTS | INVOICE_EVENTS | PAYMENT_EVENTS


@dataclass(frozen=True)
class Lookup:
    """What one delivery needs from Stripe."""

    session_id: str | None = None  # fetch the Checkout Session's line items
    customer_id: str | None = None  # fetch the customer's metadata
    invoice_id: str | None = None  # fetch which PaymentIntent paid the invoice
    payment_intent_id: str | None = None  # fetch which invoice the PaymentIntent paid

    def parts(self) -> list[str]:
        """The enrichment keys this lookup fills."""
        wanted = (
            ("line_items", self.session_id),
            ("customer", self.customer_id),
            ("payment_intent", self.invoice_id),
            ("invoice", self.payment_intent_id),
        )
        return [name for name, ident in wanted if ident]


def lookup(delivery: StoredDelivery, config: StripeConfig) -> Lookup | None:
    """What `delivery` needs fetched, or None (pure)."""
    if delivery.event_type not in CANDIDATES:
        return None
    if delivery.event_type.startswith("payment_intent.") and not config.payment_intent_events:
        return None  # mapped to nothing: nobody to identify
    resource = read.at(delivery.payload, "data.object")
    if not isinstance(resource, dict):
        return None  # the mapping says what is wrong with it
    session_id = read.opt_text(resource, "id")
    if delivery.event_type not in LINE_ITEM_EVENTS or not _items_missing(resource):
        session_id = None
    customer_id = read.ref(resource, "customer")
    if f.own_internal_id(config, resource, f.invoice_metadata(resource)):
        customer_id = None  # the payload names the merchant's id itself
    need = Lookup(
        _stripe_id(session_id, "cs_"),
        _stripe_id(customer_id, "cus_"),
        _stripe_id(_unpaid_by(delivery, resource), "in_"),
        _stripe_id(_invoice_unknown(delivery, resource), "pi_"),
    )
    return need if need.parts() else None


def _unpaid_by(delivery: StoredDelivery, invoice: dict[str, Any]) -> str | None:
    """A paid invoice's id when nothing in it names the PaymentIntent that paid it."""
    if delivery.event_type not in INVOICE_EVENTS or not read.opt_int(invoice, "amount_paid"):
        return None  # a $0 invoice is no order, and had no payment to refund
    if "payment_intent" in invoice or read.items(invoice, "payments"):
        return None  # before 2025-03-31 (the field, even null), or payments included
    return read.opt_text(invoice, "id")


def _invoice_unknown(delivery: StoredDelivery, intent: dict[str, Any]) -> str | None:
    """A PaymentIntent's id when only a lookup can tell whether an invoice reports it."""
    if delivery.event_type not in PAYMENT_EVENTS or "invoice" in intent:
        return None  # before 2025-03-31 the PaymentIntent names its invoice (or null)
    return read.opt_text(intent, "id")


def _stripe_id(value: str | None, prefix: str) -> str | None:
    # Only ids of the expected kind are looked up (and put into a request path).
    return value if value and value.startswith(prefix) else None


def _items_missing(session: dict[str, Any]) -> bool:
    # Expanded in the payload, the list is complete unless Stripe says it has more pages.
    lines = session.get("line_items")
    return not (
        isinstance(lines, dict)
        and isinstance(lines.get("data"), list)
        and lines.get("has_more") is False
    )


class StripeEnricher:
    """The Stripe lookups of one worker, through one rate-limited, cached client."""

    event_types = CANDIDATES

    def __init__(self, api: StripeAPI, config: StripeConfig) -> None:
        self.api = api
        self.config = config

    def lookups(self, delivery: StoredDelivery) -> dict[str, Fetch]:
        """The calls that fetch what `delivery` lacks (see webhooks.providers.base.Enricher)."""
        need = lookup(delivery, self.config)
        calls: dict[str, Fetch] = {}
        if need is None:
            return calls
        if need.session_id:
            calls["line_items"] = partial(self.api.line_items, need.session_id, delivery.account)
        if need.customer_id:
            calls["customer"] = partial(self._customer, need.customer_id, delivery.account)
        if need.invoice_id:
            calls["payment_intent"] = partial(
                self.api.payment_of_invoice, need.invoice_id, delivery.account
            )
        if need.payment_intent_id:
            calls["invoice"] = partial(
                self.api.invoice_of_payment, need.payment_intent_id, delivery.account
            )
        return calls

    def _customer(self, customer_id: str, account: str) -> dict[str, Any] | None:
        """Only what mapping needs: of a customer's metadata, the internal-id key alone.

        Merchants keep all sorts of things in metadata (addresses, notes); the inbox
        keeps this for as long as the delivery, so nothing else of it is stored.
        """
        found = self.api.customer(customer_id, account)
        if found is None:
            return None
        key = self.config.internal_id_metadata_key
        metadata = found.get("metadata") or {}
        return {"id": found.get("id"), "metadata": {key: metadata[key]} if key in metadata else {}}

    def close(self) -> None:
        """Close the API client's connections."""
        self.api.close()


def enricher(settings: StripeSettings, config: StripeConfig) -> StripeEnricher | None:
    """The enricher for these settings; None without STRIPE_API_KEY (no lookups)."""
    if settings.api_key is None:
        log.info(
            "stripe_enrichment_off",
            message="no STRIPE_API_KEY: Checkout events go out without line items "
            "(items_complete: false) and customers' metadata is not looked up",
        )
        if config.payment_intent_events:
            log.warning(
                "stripe_payment_intents_unresolved",
                message="STRIPE_PAYMENT_INTENT_EVENTS=true without STRIPE_API_KEY: from API "
                "2025-03-31 a PaymentIntent does not name its invoice, so an invoice's "
                "payment would be counted as a second order; set STRIPE_API_KEY or turn "
                "PaymentIntent events off if you bill through invoices",
            )
        return None
    key = settings.api_key.get_secret_value()
    if not key.startswith(("sk_", "rk_")):
        # Never any part of the key in the log.
        log.warning(
            "stripe_api_key_unexpected",
            hint="STRIPE_API_KEY should be a secret (sk_) or restricted (rk_) key, "
            "not a publishable (pk_) key or a webhook signing secret (whsec_)",
        )
    api = StripeAPI.create(key, base_url=settings.api_base, max_rps=settings.api_max_rps)
    return StripeEnricher(api, config)
