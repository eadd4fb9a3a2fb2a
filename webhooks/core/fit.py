"""Fitting an event's line items into Customer.io's size limit instead of losing the event.

A Track API item (one event) may be at most 32 KB. A large order (Shopify allows hundreds
of lines) would break it and be dead-lettered, losing the purchase. The totals always
stay; only `items` is reduced, in this order, until the event fits:

1. item names shortened to NAME_CHARS characters;
2. item names dropped (ids, quantities and prices stay);
3. the most valuable lines kept (unit price x quantity, highest first), as many as fit.

A reduced event says so: `items_complete` false and `item_count`, the number of lines
the order really has.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

NAME_CHARS = 60


def fit_items(data: dict[str, Any], fits: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """`data` itself when `fits(data)`, else with its items reduced (see the module doc).

    `fits` says whether event data would make an operation within the limit. Data
    without items, or that cannot be made to fit, is returned unreduced (and the
    operation is then dead-lettered with the limit it breaks).
    """
    items = data.get("items")
    if fits(data) or not isinstance(items, list) or not items:
        return data
    count = len(items)
    shortened = [_short_name(item) for item in items]
    nameless = [{k: v for k, v in item.items() if k != "name"} for item in items]
    for reduced in (shortened, nameless):
        trial = {**data, "items": reduced, "items_complete": False, "item_count": count}
        if fits(trial):
            return trial
    ranked = sorted(nameless, key=_line_value, reverse=True)
    low, high = 0, len(ranked)  # the largest number of the most valuable lines that fits
    while low < high:
        middle = (low + high + 1) // 2
        trial = {**data, "items": ranked[:middle], "items_complete": False, "item_count": count}
        if fits(trial):
            low = middle
        else:
            high = middle - 1
    return {**data, "items": ranked[:low], "items_complete": False, "item_count": count}


def _short_name(item: dict[str, Any]) -> dict[str, Any]:
    name = item.get("name")
    if isinstance(name, str) and len(name) > NAME_CHARS:
        return {**item, "name": name[: NAME_CHARS - 1] + "…"}
    return item


def _line_value(item: dict[str, Any]) -> Decimal:
    price, quantity = item.get("price"), item.get("quantity")
    if not isinstance(price, int | float) or not isinstance(quantity, int):
        return Decimal(0)
    return Decimal(str(price)) * quantity
