"""The one definition of a material cart change (mappers.cart.material_digest)."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from mappers.cart import material_digest
from mappers.money import decimal_amount
from mappers.taxonomy import CartUpdated, Item

CART = {
    "cart_id": "tok",
    "items": [{"variant_id": "v1", "quantity": 1, "price": 10}],
    "total": 10,
    "currency": "USD",
    "source": "shopify",
}


def test_only_material_changes_change_the_digest() -> None:
    moved = {**CART, "recovery_url": "https://x.test/r", "customer_id": "42", "shipping": 5}
    assert material_digest(moved) == material_digest(CART)
    more = {**CART, "items": [{"variant_id": "v1", "quantity": 2, "price": 10}], "total": 20}
    assert material_digest(more) != material_digest(CART)
    cheaper = {**CART, "discount": 2, "total": 8}
    assert material_digest(cheaper) != material_digest(CART)
    assert material_digest(CART, ["SAVE10"]) != material_digest(CART)


def test_item_order_is_not_a_change() -> None:
    two = {
        **CART,
        "items": [{"variant_id": "a", "quantity": 1}, {"variant_id": "b", "quantity": 1}],
    }
    swapped = {**two, "items": list(reversed(two["items"]))}
    assert material_digest(two) == material_digest(swapped)


def test_a_line_is_named_by_its_most_specific_id() -> None:
    by_variant = {**CART, "items": [{"variant_id": "v1", "sku": "S", "quantity": 1}]}
    assert material_digest(by_variant) == material_digest(
        {**CART, "items": [{"variant_id": "v1", "sku": "other", "quantity": 1}]}
    )
    by_name = {**CART, "items": [{"name": "Mug", "quantity": 1}]}
    assert material_digest(by_name) != material_digest(
        {**CART, "items": [{"name": "Cup", "quantity": 1}]}
    )


@pytest.mark.parametrize(
    ("currency", "amounts"),
    [
        ("USD", ["49.50", "0.99", "100.00", "0.125"]),
        ("JPY", ["6578", "1000.00", "12.5"]),
        ("KWD", ["5.124", "0.500", "7"]),
        ("ISK", ["500", "0.5"]),
    ],
)
def test_the_json_sent_gives_the_digest_of_the_exact_amounts(
    currency: str, amounts: list[str]
) -> None:
    # The mapper hashes the model's Decimals, the guards the JSON numbers sent to
    # Customer.io (49.5 for "49.50"): both must name the same content the same way.
    exact = [decimal_amount(amount, currency, "x") for amount in amounts]
    cart = CartUpdated(
        source="shopify",
        cart_id="tok",
        items=[Item(variant_id=str(i), quantity=1, price=price) for i, price in enumerate(exact)],
        subtotal=sum(exact, Decimal(0)),
        discount=exact[-1],
        total=exact[0],
        currency=currency,
    )
    sent = json.loads(json.dumps(cart.model_dump(mode="json", exclude_none=True)))
    assert material_digest(sent) == material_digest(cart.model_dump())
