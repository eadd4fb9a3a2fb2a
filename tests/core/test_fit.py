"""Line items reduced to fit Customer.io's event limit, in the documented order."""

from __future__ import annotations

from typing import Any

from webhooks.core.fit import NAME_CHARS, fit_items
from webhooks.core.jsontext import size


def order(
    lines: int, name: str = "Stoneware dinner plate, speckled glaze, 27 cm"
) -> dict[str, Any]:
    items = [
        {"product_id": f"p{i}", "variant_id": f"v{i}", "name": name, "quantity": 1, "price": i}
        for i in range(1, lines + 1)
    ]
    return {"source": "shopify", "order_id": "1", "total": 99.5, "currency": "USD", "items": items}


def under(limit: int) -> Any:
    return lambda data: size(data) <= limit


def test_data_that_fits_is_returned_as_it_is() -> None:
    data = order(3)
    assert fit_items(data, under(10_000)) is data


def test_names_are_shortened_first() -> None:
    data = order(40, name="x" * 200)
    fitted = fit_items(data, under(size(data) - 1000))
    assert all(len(item["name"]) == NAME_CHARS for item in fitted["items"])
    assert len(fitted["items"]) == 40
    assert (fitted["items_complete"], fitted["item_count"]) == (False, 40)


def test_then_names_are_dropped_then_the_most_valuable_lines_kept() -> None:
    data = order(250)
    nameless = size(
        {**data, "items": [{k: v for k, v in i.items() if k != "name"} for i in data["items"]]}
    )
    fitted = fit_items(data, under(nameless // 2))
    kept = fitted["items"]
    assert size(fitted) <= nameless // 2
    assert "name" not in kept[0]
    assert 0 < len(kept) < 250
    assert [item["price"] for item in kept] == list(range(250, 250 - len(kept), -1))
    # The totals are untouched and the event says it is reduced, and from how many.
    assert (fitted["total"], fitted["items_complete"], fitted["item_count"]) == (99.5, False, 250)


def test_data_without_items_that_does_not_fit_is_returned_unreduced() -> None:
    data = {"source": "shopify", "note": "x" * 50_000}
    assert fit_items(data, under(32_000)) is data
