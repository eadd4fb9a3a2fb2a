"""Reading Stripe objects across API versions: people, money, items, subscriptions."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from mappers import read
from mappers.actions import Person
from mappers.base import StoredDelivery
from mappers.money import currency_code, stripe_amount
from mappers.taxonomy import Item, PersonAttributes


@dataclass(frozen=True)
class StripeConfig:
    """Merchant choices that change what a Stripe payload means (from STRIPE_* settings)."""

    # Metadata key holding the merchant's own customer id (INTERNAL_ID_KEY).
    internal_id_metadata_key: str = "customer_id"
    # Map payment_intent.* events. Off by default: with Checkout the session events
    # carry the richer purchase (cart, totals, customer details) under a key the
    # PaymentIntent cannot know, and with Billing the invoice events report every
    # payment (from API 2025-03-31 a PaymentIntent no longer names its invoice). Turn
    # it on when your app confirms PaymentIntents itself, without Checkout or Billing.
    payment_intent_events: bool = False
    # Take a Checkout Session's client_reference_id as the merchant's id. Off by
    # default: buyers can set it on Payment Links.
    client_reference_id: bool = False


# Refund webhooks fire for every refund from this version on; earlier, refund.created
# fired only for refunds without a charge, and charge.refunded was the only signal.
REFUND_EVENTS_FOR_ALL = "2024-10-28"


def api_at_least(delivery: StoredDelivery, version: str) -> bool:
    """True when the event was rendered in `version` or later (dates compare as text)."""
    return (delivery.api_version or "")[:10] >= version


def data_object(delivery: StoredDelivery) -> dict[str, Any]:
    """`data.object` of the event: the resource as it was when the event happened."""
    return read.obj(delivery.payload, "data.object")


def previous(delivery: StoredDelivery) -> dict[str, Any]:
    """`data.previous_attributes` (only on update events), or {}."""
    value = read.at(delivery.payload, "data.previous_attributes")
    return value if isinstance(value, dict) else {}


def currency(resource: dict[str, Any]) -> str:
    """The resource's currency, upper case."""
    return currency_code(resource.get("currency"), "data.object.currency")


def optional_currency(resource: dict[str, Any]) -> str | None:
    """The resource's currency, upper case, or None where Stripe allows null (setup mode)."""
    value = resource.get("currency")
    return None if value is None else currency_code(value, "data.object.currency")


def money(resource: dict[str, Any], path: str, code: str) -> Decimal | None:
    """An optional minor-unit amount at `path` in major units."""
    value = read.at(resource, path)
    return None if value is None else stripe_amount(value, code, f"data.object.{path}")


def metadata_id(config: StripeConfig, *sources: Any) -> str | None:
    """The merchant's internal id from the first metadata that has the configured key."""
    for source in sources:
        if isinstance(source, dict):
            found = read.opt_text(source, config.internal_id_metadata_key)
            if found:
                return found
    return None


def own_internal_id(
    config: StripeConfig, resource: dict[str, Any], extra_metadata: Any = None
) -> str | None:
    """The internal id in the payload: its own, extra or an expanded customer's metadata."""
    return metadata_id(
        config, resource.get("metadata"), extra_metadata, read.at(resource, "customer.metadata")
    )


def enriched_internal_id(
    delivery: StoredDelivery, config: StripeConfig, customer_id: str | None
) -> str | None:
    """The internal id in the metadata of the customer the worker looked up, if it is this one."""
    customer = delivery.enrichment.get("customer")
    if not customer_id or not isinstance(customer, dict) or customer.get("id") != customer_id:
        return None
    return metadata_id(config, customer.get("metadata"))


def person(
    delivery: StoredDelivery,
    config: StripeConfig,
    resource: dict[str, Any],
    *,
    email: str | None = None,
    extra_metadata: Any = None,
    checkout_token: str | None = None,
) -> Person:
    """Identity hints of a Stripe resource: customer, metadata id, emails, session."""
    customer_id = read.ref(resource, "customer")
    reference = read.opt_text(resource, "client_reference_id")
    return Person(
        source="stripe",
        account=delivery.account,
        customer_id=customer_id,
        # The payload's own metadata first: it is the event's, the lookup is today's.
        internal_id=own_internal_id(config, resource, extra_metadata)
        or enriched_internal_id(delivery, config, customer_id)
        or (reference if config.client_reference_id else None),
        client_reference_id=reference,
        email=email,
        checkout_token=checkout_token,
    )


def split_name(name: str | None) -> tuple[str | None, str | None]:
    """ "Ada Lovelace" -> ("Ada", "Lovelace"); Stripe keeps one name field."""
    if not name:
        return None, None
    first, _, last = name.strip().partition(" ")
    return first or None, last.strip() or None


def attributes(details: dict[str, Any] | None, email: str | None = None) -> PersonAttributes:
    """Person attributes from a customer or customer_details object."""
    details = details if isinstance(details, dict) else {}
    first, last = split_name(read.opt_text(details, "name"))
    locales = details.get("preferred_locales")
    locale = locales[0] if isinstance(locales, list) and locales else None
    return PersonAttributes(
        email=email or read.opt_text(details, "email"),
        first_name=first,
        last_name=last,
        phone=read.opt_text(details, "phone"),
        country=read.opt_text(details, "address.country"),
        city=read.opt_text(details, "address.city"),
        locale=locale if isinstance(locale, str) else None,
    )


def line_items(lines: list[dict[str, Any]], code: str) -> list[Item]:
    """Checkout or invoice line items as canonical items."""
    result = []
    for line in lines:
        price = read.opt_obj(line, "price") or read.opt_obj(line, "pricing.price_details")
        quantity = read.opt_int(line, "quantity") or 1
        unit = read.opt_int(price, "unit_amount")
        if unit is None and read.opt_int(line, "amount") is not None:
            unit = int(line["amount"]) // quantity
        result.append(
            Item(
                product_id=read.ref(price, "product"),
                variant_id=read.opt_text(price, "id") or read.opt_text(price, "price"),
                name=read.opt_text(line, "description"),
                quantity=quantity,
                price=None if unit is None else stripe_amount(unit, code, "line.price"),
            )
        )
    return result


def invoice_subscription(invoice: dict[str, Any]) -> str | None:
    """The subscription an invoice bills: basil's parent.subscription_details, or older."""
    return read.ref(invoice, "parent.subscription_details.subscription") or read.ref(
        invoice, "subscription"
    )


def invoice_metadata(invoice: dict[str, Any]) -> Any:
    """Metadata of the subscription an invoice bills (where merchants keep their ids)."""
    return read.at(invoice, "parent.subscription_details.metadata") or read.at(
        invoice, "subscription_details.metadata"
    )


def subscription_fields(sub: dict[str, Any]) -> dict[str, Any]:
    """Shared subscription properties; the period end moved to items in basil."""
    lines = read.items(sub, "items")
    code = currency(sub) if sub.get("currency") else None
    first_price = read.opt_obj(lines[0], "price") if lines else {}
    amount = None
    if code and lines:
        minor = sum(
            (read.opt_int(line, "price.unit_amount") or 0) * (read.opt_int(line, "quantity") or 1)
            for line in lines
        )
        amount = stripe_amount(minor, code, "data.object.items")
    period_end = read.opt_int(sub, "current_period_end")
    if period_end is None and lines:
        period_end = read.opt_int(lines[0], "current_period_end")
    # Two prices of one product (monthly seats and a metered add-on) name it once.
    products = list(dict.fromkeys(p for line in lines if (p := read.ref(line, "price.product"))))
    return {
        "subscription_id": read.text(sub, "id"),
        "status": read.opt_text(sub, "status"),
        "plan": read.opt_text(first_price, "id"),
        "product_ids": products or None,
        "interval": read.opt_text(first_price, "recurring.interval"),
        "interval_count": read.opt_int(first_price, "recurring.interval_count"),
        "amount": amount,
        "currency": code,
        "current_period_end": period_end,
    }
