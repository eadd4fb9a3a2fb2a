"""The merchant's own backend (the app endpoint) to canonical actions.

The endpoint validated every event against the taxonomy before storing it, so these
handlers only place it: who it is about, and which business fact it reports.

- checkout_started / cart_updated: `cart_id` is the checkout's id at its payment
  provider (a Stripe Checkout Session id), so they are keyed, linked and guarded as that
  provider's checkout (AppConfig): the order its webhook reports for the session exits
  the same journey, and one checkout reported twice is one checkout_started.
- product_viewed: every view is its own fact, keyed by the sender's event id.
- subscription_skipped: one per subscription and skipped period.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeVar

from mappers import read
from mappers.actions import Action, Person, Track
from mappers.base import Handler, StoredDelivery
from mappers.cart import material_digest
from mappers.common import identify, track
from mappers.errors import MappingError
from mappers.taxonomy import (
    CartUpdated,
    CheckoutStarted,
    EventName,
    EventProperties,
    PersonAttributes,
    ProductViewed,
    SubscriptionSkipped,
)


@dataclass(frozen=True)
class AppConfig:
    """Whose checkouts the backend's cart events name (APP_CHECKOUT_PROVIDER/ACCOUNT)."""

    checkout_provider: str = "stripe"
    checkout_account: str = "platform"


P = TypeVar("P", bound=EventProperties)


def _properties(delivery: StoredDelivery, model: type[P]) -> P:
    raw = delivery.payload.get("properties") or {}
    if not isinstance(raw, dict):
        raise MappingError("properties is not a JSON object")
    # Validated at the endpoint; a taxonomy changed since fails here, and the registry
    # turns that ValidationError into a MappingError naming the field.
    return model.model_validate({**raw, "source": delivery.provider})


def _person(delivery: StoredDelivery, **hints: Any) -> Person:
    payload = delivery.payload
    return Person(
        source=delivery.provider,
        account=delivery.account,
        # The backend's customer_id is the merchant's own id: rule 1 of identity.
        internal_id=read.opt_text(payload, "customer_id"),
        anonymous_id=read.opt_text(payload, "anonymous_id"),
        email=read.opt_text(payload, "email"),
        **hints,
    )


def _with_identify(delivery: StoredDelivery, track: Track) -> list[Action]:
    email = track.person.email
    attributes = PersonAttributes(email=email) if email and track.person.internal_id else None
    return [*(identify(delivery, track.person, attributes) if attributes else []), track]


def _cart(
    delivery: StoredDelivery,
    config: AppConfig,
    event: EventName,
    model: type[CheckoutStarted] | type[CartUpdated],
) -> list[Action]:
    props = _properties(delivery, model)
    cart_id = props.cart_id
    who = _person(
        delivery,
        checkout_token=cart_id,
        checkout_provider=config.checkout_provider,
        checkout_account=config.checkout_account,
    )
    # Keyed as the provider's own checkout events are (`<event>:<provider>:<account>:
    # <token>`), so the backend and a provider webhook reporting one checkout agree.
    parts = [event.value, config.checkout_provider, config.checkout_account, cart_id]
    if event is EventName.CART_UPDATED:
        # Updates of equal material content share one key, as Shopify's do.
        parts.append(material_digest(props.model_dump()))
    key = ":".join(parts)
    started = Track(
        person=who, event=event, properties=props, timestamp=delivery.timestamp(), semantic_key=key
    )
    return _with_identify(delivery, started)


def checkout_started(delivery: StoredDelivery, config: AppConfig) -> list[Action]:
    """checkout_started once per checkout, whoever reports it first."""
    return _cart(delivery, config, EventName.CHECKOUT_STARTED, CheckoutStarted)


def cart_updated(delivery: StoredDelivery, config: AppConfig) -> list[Action]:
    """cart_updated per material content; the guards compare it with checkout_started."""
    return _cart(delivery, config, EventName.CART_UPDATED, CartUpdated)


def product_viewed(delivery: StoredDelivery, config: AppConfig) -> list[Action]:
    """Each view is a fact of its own: keyed by the sender's event id."""
    props = _properties(delivery, ProductViewed)
    event_id = read.text(delivery.payload, "id")
    viewed = track(delivery, _person(delivery), EventName.PRODUCT_VIEWED, props, event_id)
    return _with_identify(delivery, viewed)


def subscription_skipped(delivery: StoredDelivery, config: AppConfig) -> list[Action]:
    """One skip per subscription and period, however often the backend reports it."""
    props = _properties(delivery, SubscriptionSkipped)
    period = str(props.skipped_period_start)
    event = EventName.SUBSCRIPTION_SKIPPED
    skipped = track(delivery, _person(delivery), event, props, props.subscription_id, period)
    return _with_identify(delivery, skipped)


HANDLERS: dict[str, Handler[AppConfig]] = {
    EventName.CHECKOUT_STARTED.value: checkout_started,
    EventName.CART_UPDATED.value: cart_updated,
    EventName.PRODUCT_VIEWED.value: product_viewed,
    EventName.SUBSCRIPTION_SKIPPED.value: subscription_skipped,
}
