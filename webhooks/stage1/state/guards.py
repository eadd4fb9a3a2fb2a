"""Journey guards: cart events that would mislead a recovery journey are withheld.

- checkout_started: once per checkout (its semantic key), and never once the
  checkout's order is completed;
- cart_updated: only when the cart differs materially from what checkout_started
  reported, never after the order; held for CART_UPDATE_HOLD_SECONDS before sending,
  so an order that follows within the hold suppresses it;
- checkout_expired: never after the order.
Held and pending cart events are suppressed when the order arrives (step.py), so the
set of events sent does not depend on whether the order came first.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mappers.taxonomy import EventName

CART_EVENTS = (EventName.CHECKOUT_STARTED, EventName.CART_UPDATED, EventName.CHECKOUT_EXPIRED)
# What makes a cart change material: what is in it and what it costs. An address, a
# contact or a recovery URL changing is not a reason to message anyone.
MATERIAL_FIELDS = ("subtotal", "discount", "total", "currency")
ITEM_FIELDS = ("variant_id", "product_id", "sku", "quantity", "price")


def content_digest(properties: Mapping[str, Any]) -> str:
    """A digest of the material content of cart properties (JSON-ready, as sent)."""
    items = sorted(
        json.dumps([item.get(name) for name in ITEM_FIELDS])
        for item in properties.get("items") or []
    )
    material = [properties.get(name) for name in MATERIAL_FIELDS]
    return hashlib.sha256(json.dumps([items, material]).encode()).hexdigest()


@dataclass
class Checkout:
    """What the guards remember of one checkout."""

    started_hash: str | None = None
    completed_at: int | None = None  # event time of the order completing it


def verdict(event: EventName, checkout: Checkout, digest: str) -> str | None:
    """Why this cart event must not be sent, or None to send it."""
    if checkout.completed_at is not None:
        return "its checkout was already completed by an order"
    if event is EventName.CART_UPDATED and digest == checkout.started_hash:
        return "no material change since checkout_started"
    return None
