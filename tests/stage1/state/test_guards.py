"""Journey guards: material changes only, nothing after the order."""

from __future__ import annotations

from mappers.cart import material_digest
from mappers.taxonomy import EventName
from webhooks.stage1.state.guards import COMPLETED, UNCHANGED, Checkout, verdict

# Cart properties as sent (JSON); what counts as a material change is mappers.cart's.
CART = {"items": [{"variant_id": "v1", "quantity": 1, "price": 10}], "total": 10, "currency": "USD"}


def test_cart_events_after_the_order_are_withheld() -> None:
    done = Checkout(started_hash=None, completed_at=100)
    for event in (EventName.CHECKOUT_STARTED, EventName.CART_UPDATED, EventName.CHECKOUT_EXPIRED):
        assert verdict(event, done, material_digest(CART)) == COMPLETED


def test_an_update_equal_to_checkout_started_is_no_change() -> None:
    started = Checkout(started_hash=material_digest(CART))
    assert verdict(EventName.CART_UPDATED, started, material_digest(CART)) == UNCHANGED
    changed = {**CART, "total": 12}
    assert verdict(EventName.CART_UPDATED, started, material_digest(changed)) is None
    assert verdict(EventName.CHECKOUT_STARTED, Checkout(), material_digest(CART)) is None


def test_a_digest_stored_by_the_previous_definition_only_lets_an_update_through() -> None:
    # checkouts.started_hash of a checkout in flight during the upgrade (sha256, 64 hex
    # characters) never equals a new digest: its update is sent, nothing worse.
    legacy = Checkout(started_hash="0" * 64)
    assert verdict(EventName.CART_UPDATED, legacy, material_digest(CART)) is None
