"""Journey guards: cart events that would mislead a recovery journey are withheld.

- checkout_started: once per checkout (its semantic key), and never once the
  checkout's order is completed;
- cart_updated: only when the cart differs materially (mappers.cart.material_digest)
  from what checkout_started reported, never after the order; held for
  CART_UPDATE_HOLD_SECONDS before sending, so an order that follows within the hold
  suppresses it;
- checkout_expired: never after the order.
Held and pending cart events are suppressed when the order arrives (step.py), so the
set of events sent does not depend on whether the order came first.
"""

from __future__ import annotations

from dataclasses import dataclass

from mappers.taxonomy import EventName

CART_EVENTS = (EventName.CHECKOUT_STARTED, EventName.CART_UPDATED, EventName.CHECKOUT_EXPIRED)
# Why a cart event is withheld: the outbox row's last_error, whether the guard decides
# it as the event is written (verdict) or on rows already queued (queued.py).
COMPLETED = "its checkout was already completed by an order"
UNCHANGED = "no material change since checkout_started"


@dataclass
class Checkout:
    """What the guards remember of one checkout."""

    # material_digest of checkout_started's properties as sent (JSON, no discount codes:
    # an event carries none). Digests stored before that function was the one definition
    # (checkouts.started_hash, 64 hex chars) never equal a new one: for checkouts in
    # flight during the upgrade, a cart_updated equal to its checkout_started is not
    # suppressed as unchanged. That costs at most one cart_updated per such checkout,
    # since updates of equal content share one semantic key, and an order still
    # suppresses it within the hold.
    started_hash: str | None = None
    completed_at: int | None = None  # event time of the order completing it


def verdict(event: EventName, checkout: Checkout, digest: str) -> str | None:
    """Why this cart event must not be sent, or None to send it."""
    if checkout.completed_at is not None:
        return COMPLETED
    if event is EventName.CART_UPDATED and digest == checkout.started_hash:
        return UNCHANGED
    return None
