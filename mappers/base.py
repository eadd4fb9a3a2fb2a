"""The mapper interface: one stored delivery in, a list of canonical actions out."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from mappers.actions import Action
from mappers.errors import MappingError


@dataclass(frozen=True)
class MapperConfig:
    """Merchant choices that change what a payload means (set from the service's settings)."""

    # Which Shopify topic counts as the purchase. orders/create: every placed order
    # (orders/paid of the same order maps to the same fact). orders/paid: only paid
    # orders (orders/create counts only if it arrives already paid).
    shopify_order_completed_topic: Literal["orders/create", "orders/paid"] = "orders/create"
    # Stripe metadata key holding the merchant's own customer id.
    internal_id_metadata_key: str = "customer_id"
    # Map payment_intent.* events. Off by default: with Checkout the session events
    # carry the richer purchase (cart, totals, customer details) under a key the
    # PaymentIntent cannot know, and with Billing the invoice events report every
    # payment (from API 2025-03-31 a PaymentIntent no longer names its invoice). Turn
    # it on when your app confirms PaymentIntents itself, without Checkout or Billing.
    stripe_payment_intent_events: bool = False
    # Where a Shopify payload carries the merchant's own customer id, if anywhere:
    # a customer metafield "namespace.key" (included in webhooks whose subscription
    # lists its namespace), or a cart note attribute. Off by default: shoppers can set
    # note attributes, so only a storefront that writes it server-side should use it.
    shopify_internal_id_metafield: str | None = None
    shopify_internal_id_note_attribute: str | None = None


@dataclass(frozen=True)
class StoredDelivery:
    """What a mapper sees of one inbox row: parsed, but exactly what was received."""

    provider: str
    account: str
    event_type: str
    payload: Mapping[str, Any]
    occurred_at: datetime | None
    headers: Mapping[str, str] = field(default_factory=dict)
    api_version: str | None = None
    # Data fetched later by the worker (e.g. Stripe line items, which checkout webhooks
    # lack); stored with the inbox row so replays map the same data without I/O.
    enrichment: Mapping[str, Any] = field(default_factory=dict)

    def timestamp(self) -> int:
        """The provider's event time in Unix seconds; never the time of processing."""
        if self.occurred_at is None:
            raise MappingError("the delivery has no event time")
        return int(self.occurred_at.timestamp())


Mapper = Callable[[StoredDelivery, MapperConfig], list[Action]]
