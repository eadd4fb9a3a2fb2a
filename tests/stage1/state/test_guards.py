"""Journey guards: material changes only, nothing after the order."""

from __future__ import annotations

from mappers.taxonomy import EventName
from webhooks.stage1.state.guards import Checkout, content_digest, verdict

CART = {
    "cart_id": "tok",
    "items": [{"variant_id": "v1", "quantity": 1, "price": 10}],
    "total": 10,
    "currency": "USD",
    "source": "shopify",
}


def test_only_material_changes_change_the_digest() -> None:
    moved = {**CART, "recovery_url": "https://x.test/r", "customer_id": "42"}
    assert content_digest(moved) == content_digest(CART)
    more = {**CART, "items": [{"variant_id": "v1", "quantity": 2, "price": 10}], "total": 20}
    assert content_digest(more) != content_digest(CART)
    cheaper = {**CART, "discount": 2, "total": 8}
    assert content_digest(cheaper) != content_digest(CART)


def test_item_order_is_not_a_change() -> None:
    two = {
        **CART,
        "items": [{"variant_id": "a", "quantity": 1}, {"variant_id": "b", "quantity": 1}],
    }
    swapped = {**two, "items": list(reversed(two["items"]))}
    assert content_digest(two) == content_digest(swapped)


def test_cart_events_after_the_order_are_withheld() -> None:
    done = Checkout(started_hash=None, completed_at=100)
    for event in (EventName.CHECKOUT_STARTED, EventName.CART_UPDATED, EventName.CHECKOUT_EXPIRED):
        assert verdict(event, done, content_digest(CART)) is not None


def test_an_update_equal_to_checkout_started_is_no_change() -> None:
    started = Checkout(started_hash=content_digest(CART))
    assert verdict(EventName.CART_UPDATED, started, content_digest(CART)) == (
        "no material change since checkout_started"
    )
    changed = {**CART, "total": 12}
    assert verdict(EventName.CART_UPDATED, started, content_digest(changed)) is None
    assert verdict(EventName.CHECKOUT_STARTED, Checkout(), content_digest(CART)) is None
