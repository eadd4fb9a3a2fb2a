"""docs/taxonomy.md and the JSON Schema, rendered from the taxonomy models."""

from __future__ import annotations

import json
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from mappers.taxonomy import EVENT_MODELS, TAXONOMY_VERSION, EventName, Item, PersonAttributes


@dataclass(frozen=True)
class EventDoc:
    """One provider's part of an event's row: which of its types produce it, and what
    makes two of its deliveries the same fact. Providers declare these in their spec."""

    source: str
    key: str = ""


@dataclass(frozen=True)
class ProviderDocs:
    """A provider's contribution to the generated taxonomy reference."""

    name: str
    title: str
    events: Mapping[EventName, EventDoc]


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


def _fields_table(model: type[BaseModel], sources: Sequence[str] = ()) -> list[str]:
    lines = ["| property | type | required | meaning |", "|---|---|---|---|"]
    for name, field in model.model_fields.items():
        required = "yes" if field.is_required() else ""
        description = (field.description or "").replace("|", "\\|")
        kind = _type_name(field.annotation)
        if name == "source" and sources:
            kind = " \\| ".join(f"`{source}`" for source in sources)
        lines.append(f"| `{name}` | {kind} | {required} | {description} |")
    return lines


def _key(event: EventName, providers: Sequence[ProviderDocs]) -> str:
    keys = [(p.title, p.events[event].key) for p in providers if event in p.events]
    keys = [(title, key) for title, key in keys if key]
    if len({key for _, key in keys}) == 1:
        return keys[0][1]
    return "; ".join(f"{title}: {key}" for title, key in keys)


def render_markdown(providers: Sequence[ProviderDocs]) -> str:
    """The taxonomy reference, as checked in at docs/taxonomy.md."""
    names = [p.name for p in providers]
    sources = ", ".join(f"`{name}`" for name in names)
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
        f"- Names are snake_case and fixed. Every event has `source` ({sources}).",
        "- Money is a JSON number in major units with the currency's own decimals (JPY 6578, "
        "USD 49.5, KWD 5.124), converted exactly from Stripe minor units or Shopify decimal "
        "strings, never rounded. `currency` is upper-case ISO 4217 and applies to every "
        "amount of the event. Orders use the shop's currency, with `presentment_currency` / "
        "`presentment_total` when the buyer paid in another one; Shopify checkouts and "
        "refunds state what the buyer saw or got back (their payloads carry no shop "
        "money). `subtotal` is before discounts; Shopify amounts include tax when the shop's "
        "prices do.",
        "- Timestamps are the provider's own time in Unix seconds, never the time of "
        "processing: the fact's own time where the payload states it (a Shopify order's "
        "`created_at`, its `cancelled_at`, a refund's creation, a Stripe cancellation's "
        "`canceled_at`), else the report's event time; an event queued and not yet sent "
        "moves back to an earlier-dated report of its fact. A fact stated more than 72 "
        "hours before its report (a cash-on-delivery order paid days later) takes the "
        "report's time: Customer.io triggers no campaign for older events.",
        "- Properties without a value are left out, never sent as null.",
        "- Every event carries a semantic key, `<event>:<provider>:<account>:<fact>`, naming "
        "the business fact: however many overlapping webhooks report it, in any order, any "
        "number of times, one key means one event downstream.",
        "",
        "## Events",
        "",
        "| event | meaning | "
        + " | ".join(f"from {p.title}" for p in providers)
        + " | one fact per |",
        "|---|---|" + "---|" * len(providers) + "---|",
    ]
    for event, model in EVENT_MODELS.items():
        doc = (model.__doc__ or "").strip()
        cells = [p.events[event].source if event in p.events else "" for p in providers]
        columns = " | ".join(cell or "-" for cell in cells)
        out.append(f"| `{event.value}` | {doc} | {columns} | {_key(event, providers)} |")
    for event, model in EVENT_MODELS.items():
        out += ["", f"### `{event.value}`", "", (model.__doc__ or "").strip(), ""]
        out += _fields_table(model, names)
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
        "- 1.3.0: `product_viewed` and `subscription_skipped`, and `checkout_started` / "
        "`cart_updated` for a Stripe Checkout Session, reported by the merchant's backend "
        "through the app endpoint (`POST /webhooks/app`); additive. Cart, subscription and "
        "product ids are 1 to 255 characters and never blank (no provider sends others).",
        "- 1.2.0: commerce events gain `item_count`, set when `items` was reduced to fit "
        "Customer.io's event size limit (then `items_complete` is false); additive.",
        "- 1.1.0: `order_completed` gains `is_first_order` and `order_count`, set by the "
        "service from the person's orders (additive: no journey breaks). Identify "
        "attributes gain the server-truth set (`order_count`, `lifetime_value`, "
        "`first_order_date`, `last_order_date`, `subscription_status`); see "
        "docs/identity.md.",
        "- 1.0.0: first version.",
        "",
    ]
    return "\n".join(out)


def render_json_schema(sources: Sequence[str]) -> str:
    """A JSON Schema document of every event's properties and of person attributes.

    `source` lists the registered providers' names.
    """
    events = {}
    for event, model in EVENT_MODELS.items():
        events[event.value] = model.model_json_schema(mode="serialization")
        source = events[event.value].get("properties", {}).get("source")
        if source is not None:
            source.pop("pattern", None)
            source["enum"] = list(sources)
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "Canonical retention events",
        "version": TAXONOMY_VERSION,
        "events": events,
        "person_attributes": PersonAttributes.model_json_schema(mode="serialization"),
    }
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"
