"""Webhook stacks of one buyer, derived from the golden fixtures (shared by state tests).

A `Hook` is one delivery as the provider sends it. The builders change ids, event times
and amounts consistently, so a stack reads as one person's history: Grace on the Shopify
store (customer 8100000000001), Ada on Stripe (cus_TestAda01, the merchant's user_8842).
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from mappers.actions import Track
from tests.mappers.golden import FIXTURES, parse
from webhooks.stage1.mapping import map_delivery, stored_delivery
from webhooks.storage.inbox import Delivery

SHOP = "example-shop.myshopify.com"
GRACE = f"shopify:{SHOP}:8100000000001"
ADA = "user_8842"


@dataclass(frozen=True)
class Hook:
    """One webhook delivery as the provider sends it: headers and JSON body."""

    name: str
    provider: str
    headers: dict[str, str]
    body: dict[str, Any]

    def parsed(self) -> Delivery:
        """The delivery as ingest parses it (dedup key, event time, ...)."""
        headers = {key.lower(): value for key, value in self.headers.items()}
        return parse(self.provider, json.dumps(self.body).encode(), headers)

    def tracks(self, configs: dict[str, Any]) -> list[Track]:
        """The Tracks this delivery maps to (pure: the mappers do no I/O)."""
        actions = map_delivery(stored_delivery(self.parsed()), configs)
        return [action for action in actions if isinstance(action, Track)]


def fixture(provider: str, case: str) -> dict[str, Any]:
    """A golden fixture (headers and body), as a private copy to change."""
    return copy.deepcopy(json.loads((FIXTURES / provider / f"{case}.json").read_text()))


def shopify(name: str, case: str, at: str, webhook_id: str | None = None, **changes: Any) -> Hook:
    """A Shopify delivery from a golden fixture, triggered at `at` (ISO, UTC)."""
    data = fixture("shopify", case)
    headers = dict(data["headers"], **{"X-Shopify-Triggered-At": at})
    if webhook_id is not None:
        headers["X-Shopify-Webhook-Id"] = webhook_id
    return Hook(name, "shopify", headers, {**data["body"], **changes})


def stripe(name: str, case: str, **changes: Any) -> Hook:
    """A Stripe event from a golden fixture, with top-level changes (`created`, `data`)."""
    return Hook(name, "stripe", {}, {**fixture("stripe", case)["body"], **changes})


def untagged(hook: Hook) -> Hook:
    """The Stripe event without the merchant's id anywhere: it names only `cus_...`.

    Every key holding user_8842 goes (metadata, client_reference_id), as for a customer
    the merchant's backend never tagged.
    """

    def drop(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: drop(v) for k, v in value.items() if v != ADA}
        if isinstance(value, list):
            return [drop(v) for v in value]
        return value

    return Hook(hook.name, hook.provider, hook.headers, drop(hook.body))


def as_user(hook: Hook, user: str) -> Hook:
    """The delivery with the fixtures' internal id (user_8842) replaced by `user`."""
    body = json.loads(json.dumps(hook.body).replace(f'"{ADA}"', json.dumps(user)))
    return Hook(hook.name, hook.provider, hook.headers, body)


# The completed checkout (the order's checkout_token) and an earlier, abandoned one of the
# same cart: Shopify keeps the cart token when a buyer comes back and checks out again.
TOKEN = "9f8e7d6c5b4a39281706f5e4d3c2b1a0"
ABANDONED = "0a1b2c3d4e5f60718293a4b5c6d7e8f9"
CART = "Z2NwLXVzLWVhc3QxOjAxSlRFU1RDQVJUQkJCQkJCQkJCQkJCQkJC"
_ITEMS = fixture("shopify", "checkout_create_customer")["body"]["line_items"]
MUG, BEANS = _ITEMS[0], _ITEMS[1]


def cart(lines: list[tuple[dict[str, Any], int]], discount: str = "0.00") -> dict[str, Any]:
    """Checkout body fields for these (line item, quantity) pairs, totals consistent."""
    items = [
        dict(item, quantity=qty, line_price=str(Decimal(item["price"]) * qty))
        for item, qty in lines
    ]
    subtotal = sum(Decimal(item["line_price"]) for item in items)
    codes = [{"code": "SPRING5", "amount": discount, "type": "fixed_amount"}]
    return {
        "line_items": items,
        "total_line_items_price": str(subtotal),
        "subtotal_price": str(subtotal - Decimal(discount)),
        "total_discounts": discount,
        "total_tax": "0.00",
        "total_price": str(subtotal - Decimal(discount)),
        "discount_codes": codes if Decimal(discount) else [],
    }


def guest_checkout(
    name: str, topic: str, token: str, at: str, lines: list[tuple[dict[str, Any], int]], **more: Any
) -> Hook:
    """A guest's checkout (no customer) of CART, with these contents."""
    case = "checkout_create_guest" if topic == "checkouts/create" else "checkout_update_items"
    # Shopify's webhook id differs per delivery; the fixture's would dedup them at ingest.
    hook = shopify(name, case, at, webhook_id=f"wh-{name}", token=token, cart_token=CART)
    body = {**hook.body, **cart(lines, more.pop("discount", "0.00")), "updated_at": at, **more}
    return Hook(name, "shopify", hook.headers, body)


def address(city: str) -> dict[str, Any]:
    """Grace's address in `city` (a checkout's billing and shipping address)."""
    return {
        "first_name": "Grace",
        "last_name": "Buyer",
        "address1": "42 Fixture Lane",
        "city": city,
        "country_code": "US",
        "phone": "+15555550177",
    }


def grace_contact(city: str) -> dict[str, Any]:
    """What a guest checkout reveals once Grace typed her contact details."""
    return {
        "email": "grace.buyer@example.test",
        "billing_address": address(city),
        "shipping_address": address(city),
    }


def with_user(hook: Hook, user: str) -> Hook:
    """The delivery with the merchant's id in the customer metafield app.user_id."""
    body = copy.deepcopy(hook.body)
    customer = body.get("customer", body)  # customers/*: the body is the customer
    customer["metafields"] = [{"namespace": "app", "key": "user_id", "value": user}]
    return Hook(hook.name, hook.provider, hook.headers, body)
