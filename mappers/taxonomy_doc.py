"""docs/taxonomy.md and the JSON Schema, rendered from the taxonomy models."""

from __future__ import annotations

import json
import types
import typing
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from mappers.taxonomy import EVENT_MODELS, TAXONOMY_VERSION, EventName, Item, PersonAttributes


@dataclass(frozen=True)
class Rule:
    """Where an event comes from and what makes two deliveries the same fact."""

    stripe: str
    shopify: str
    key: str


RULES: dict[EventName, Rule] = {
    EventName.CHECKOUT_STARTED: Rule(
        "none: Stripe sends no webhook when a session is created; emit it from your app",
        "`checkouts/create`; `checkouts/update` carrying an email or phone",
        "checkout token: once per checkout, whichever of the two arrives first",
    ),
    EventName.CART_UPDATED: Rule(
        "",
        "`checkouts/update` of an open checkout",
        "checkout token + a hash of items, quantities, prices, totals and discount codes: "
        "an update that changes only the address repeats the previous key (so a cart that "
        "returns to earlier contents is not reported again, and the first update may repeat "
        "the contents checkout_started already carried; the journey guards filter these)",
    ),
    EventName.CHECKOUT_EXPIRED: Rule(
        "`checkout.session.expired` (with `recovery_url` when recovery is on)",
        "",
        "Checkout Session id",
    ),
    EventName.ORDER_COMPLETED: Rule(
        "`checkout.session.completed` when paid, `checkout.session.async_payment_succeeded`, "
        "`invoice.paid` / `invoice.payment_succeeded` (not $0), `payment_intent.succeeded` "
        "(only with STRIPE_PAYMENT_INTENT_EVENTS, not invoiced)",
        "`orders/create` and `orders/paid` (configurable: paid orders only)",
        "Stripe: invoice id for invoiced payments, else PaymentIntent id, else session id; "
        "Shopify: order id",
    ),
    EventName.ORDER_CANCELED: Rule("", "`orders/cancelled`", "order id"),
    EventName.REFUND_ISSUED: Rule(
        "`refund.created`; `charge.refunded` where no refund.created exists for it",
        "`refunds/create`",
        "refund id (Stripe API before 2022-11-15 lists refunds on the charge; 2022-11-15 "
        "to 2024-10-28: charge id + cumulative refunded amount)",
    ),
    EventName.PAYMENT_FAILED: Rule(
        "`invoice.payment_failed`, `payment_intent.payment_failed` (only with "
        "STRIPE_PAYMENT_INTENT_EVENTS, not invoiced), `checkout.session.async_payment_failed`",
        "`subscription_billing_attempts/failure`",
        "invoice id + attempt count; PaymentIntent id + charge id; billing attempt id",
    ),
    EventName.SUBSCRIPTION_CREATED: Rule(
        "`customer.subscription.created`", "`subscription_contracts/create`", "subscription id"
    ),
    EventName.SUBSCRIPTION_PAUSED: Rule(
        "`customer.subscription.paused` (status) and `customer.subscription.updated` setting "
        "`pause_collection` (collection)",
        "`subscription_contracts/pause`",
        "subscription id + kind + event time; Shopify contract id + revision id",
    ),
    EventName.SUBSCRIPTION_RESUMED: Rule(
        "`customer.subscription.resumed`; `customer.subscription.updated` clearing "
        "`pause_collection`",
        "`subscription_contracts/activate`",
        "subscription id + kind + event time; Shopify contract id + revision id",
    ),
    EventName.SUBSCRIPTION_CANCELED: Rule(
        "`customer.subscription.deleted`; `customer.subscription.updated` scheduling a cancel",
        "`subscription_contracts/cancel`",
        "Stripe: subscription id + `canceled_at` (the request time, shared by a scheduled "
        "cancel and its deletion); Shopify: contract id + revision id",
    ),
    EventName.TRIAL_ENDING: Rule(
        "`customer.subscription.trial_will_end`", "", "subscription id + trial end"
    ),
}


def _type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in args)
    if origin is typing.Annotated:
        return "money" if "Decimal" in str(args[0]) else _type_name(args[0])
    if origin is list:
        return f"list of {_type_name(args[0])}"
    if origin is typing.Literal:
        return " \\| ".join(f"`{a}`" for a in typing.get_args(annotation))
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation.__name__
    return {"str": "string", "int": "integer", "bool": "boolean", "Decimal": "money"}.get(
        getattr(annotation, "__name__", str(annotation)), str(annotation)
    )


def _fields_table(model: type[BaseModel]) -> list[str]:
    lines = ["| property | type | required | meaning |", "|---|---|---|---|"]
    for name, field in model.model_fields.items():
        required = "yes" if field.is_required() else ""
        description = (field.description or "").replace("|", "\\|")
        lines.append(f"| `{name}` | {_type_name(field.annotation)} | {required} | {description} |")
    return lines


def render_markdown() -> str:
    """The taxonomy reference, as checked in at docs/taxonomy.md."""
    out = [
        "# Event taxonomy",
        "",
        f"Version **{TAXONOMY_VERSION}**. Generated from `mappers/taxonomy.py` by "
        "`webhooks taxonomy > docs/taxonomy.md`; do not edit by hand (a test fails when "
        "this file drifts from the code).",
        "",
        "Journeys, segments and filters are built on these names and properties. Renaming "
        "or removing one is a breaking change: it bumps the major version and gets a "
        "migration note below.",
        "",
        "## Conventions",
        "",
        "- Names are snake_case and fixed. Every event has `source` (`stripe` or `shopify`).",
        "- Money is a JSON number in major units with the currency's own decimals (JPY 6578, "
        "USD 49.5, KWD 5.124), converted exactly from Stripe minor units or Shopify decimal "
        "strings, never rounded. `currency` is upper-case ISO 4217 and applies to every "
        "amount of the event. Orders use the shop's currency, with `presentment_currency` / "
        "`presentment_total` when the buyer paid in another one; Shopify checkouts and "
        "refunds state what the buyer saw or got back (their payloads carry no shop "
        "money). `subtotal` is before discounts; Shopify amounts include tax when the shop's "
        "prices do.",
        "- Timestamps are the provider's own event time in Unix seconds, never the time of "
        "processing.",
        "- Properties without a value are left out, never sent as null.",
        "- Every event carries a semantic key, `<event>:<provider>:<account>:<fact>`, naming "
        "the business fact: however many overlapping webhooks report it, in any order, any "
        "number of times, one key means one event downstream.",
        "",
        "## Events",
        "",
        "| event | meaning | from Stripe | from Shopify | one fact per |",
        "|---|---|---|---|---|",
    ]
    for event, model in EVENT_MODELS.items():
        rule = RULES[event]
        doc = (model.__doc__ or "").strip()
        out.append(
            f"| `{event.value}` | {doc} | {rule.stripe or '-'} | {rule.shopify or '-'} | "
            f"{rule.key} |"
        )
    for event, model in EVENT_MODELS.items():
        out += ["", f"### `{event.value}`", "", (model.__doc__ or "").strip(), ""]
        out += _fields_table(model)
    out += ["", "### Items", "", "Each entry of `items`:", ""]
    out += _fields_table(Item)
    out += ["", "## Person attributes (identify)", ""]
    out += [
        "Sent with the provider's event time, from customer events, consent topics and any "
        "event that reveals contact details. Email is an attribute, not the identifier.",
        "",
    ]
    out += _fields_table(PersonAttributes)
    out += [
        "",
        "## Privacy actions",
        "",
        "Shopify's compliance topics map to explicit actions that the delivery stage "
        "executes: `customers/redact` to `redact_person` (with the order ids to erase), "
        "`shop/redact` to `redact_shop`, `customers/data_request` to `export_person_data`.",
        "",
        "## Changes",
        "",
        "- 1.1.0: `order_completed` gains `is_first_order` and `order_count`, set by the "
        "service from the person's orders (additive: no journey breaks). Identify "
        "attributes gain the server-truth set (`order_count`, `lifetime_value`, "
        "`first_order_date`, `last_order_date`, `subscription_status`); see "
        "docs/identity.md.",
        "- 1.0.0: first version.",
        "",
    ]
    return "\n".join(out)


def render_json_schema() -> str:
    """A JSON Schema document of every event's properties and of person attributes."""
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "Canonical retention events",
        "version": TAXONOMY_VERSION,
        "events": {
            event.value: model.model_json_schema(mode="serialization")
            for event, model in EVENT_MODELS.items()
        },
        "person_attributes": PersonAttributes.model_json_schema(mode="serialization"),
    }
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"
