"""What makes a cart change material: one digest, for cart_updated keys and journey guards.

The Shopify mapper keys cart_updated by it, so an update that changed only an address or
a contact repeats the previous key and dedups downstream; the journey guards
(webhooks.stage1.state.guards) compare a cart_updated with its checkout's
checkout_started by it, to withhold an update that changed nothing that matters.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

from mappers.money import exact

# What a buyer would call the cart's content: what is in it and what it costs. An
# address, a contact, shipping, tax or a recovery URL changing is no reason to message
# anyone; nor is the currency alone (amounts in another currency change with it).
AMOUNTS = ("subtotal", "total", "discount")
# What names a line: the most specific id the provider gave, else its name.
LINE_IDS = ("variant_id", "product_id", "sku", "name")


def material_digest(properties: Mapping[str, Any], discount_codes: Sequence[str] = ()) -> str:
    """16 hex chars of sha256 over the material content of cart event properties.

    `properties` as the model dumps them (Decimal amounts) or as sent (JSON numbers):
    an amount counts as exact text with its currency's decimals either way.
    """
    currency = properties.get("currency")
    lines = sorted(
        (
            [
                next((line[name] for name in LINE_IDS if line.get(name)), None),
                line.get("quantity"),
                _amount_text(line.get("price"), currency),
            ]
            for line in properties.get("items") or []
        ),
        key=json.dumps,
    )
    material = {
        "items": lines,
        **{name: _amount_text(properties.get(name), currency) for name in AMOUNTS},
        "discount_codes": list(discount_codes),
    }
    canonical = json.dumps(material, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]


def _amount_text(value: Any, currency: str | None) -> str | None:
    """An amount as exact text with its currency's decimals: 42.5 and "42.50" alike."""
    if value is None:
        return None
    # A JSON number: repr of a float is the shortest text that reads back as it, i.e.
    # the Decimal it was written from (mappers.money.json_number), never binary noise.
    # Quantized like the mapper's amounts, it gives the same text ("42.50" from 42.5).
    # Only an amount with more decimals than its currency and trailing zeros beyond
    # them ("10.1230" USD) reads back shorter from JSON; no Shopify amount has that
    # shape, and the guards compare JSON with JSON, so it could not mislead them.
    amount = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
    return str(exact(amount, currency) if currency else amount)
