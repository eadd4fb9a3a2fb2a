"""The bridge from stored inbox deliveries to the pure mappers."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from mappers.base import MapperConfig, StoredDelivery
from mappers.errors import MappingError
from webhooks.config import Settings
from webhooks.providers.base import Delivery
from webhooks.stage1.state.identity import IdentityPolicy
from webhooks.stage1.state.step import StateConfig


def mapper_config(settings: Settings) -> MapperConfig:
    """The merchant choices the mappers need, from the service's settings."""
    return MapperConfig(
        shopify_order_completed_topic=settings.shopify_order_completed_topic,
        internal_id_metadata_key=settings.internal_id_key,
        stripe_payment_intent_events=settings.stripe_payment_intent_events,
        shopify_internal_id_metafield=settings.shopify_internal_id_metafield,
        shopify_internal_id_note_attribute=settings.shopify_internal_id_note_attribute,
    )


def state_config(settings: Settings) -> StateConfig:
    """The identity, person-state and journey choices, from the service's settings."""
    return StateConfig(
        identity=IdentityPolicy(
            stripe_person_id_format=settings.stripe_person_id_format,
            shopify_person_id_format=settings.shopify_person_id_format,
            stripe_client_reference_id=settings.stripe_client_reference_id,
            guest_policy=settings.guest_policy,
        ),
        reporting_currency=settings.reporting_currency,
        cart_update_hold_seconds=settings.cart_update_hold_seconds,
        merge_delay_seconds=settings.merge_delay_seconds,
    )


def stored_delivery(
    delivery: Delivery, enrichment: Mapping[str, Any] | None = None
) -> StoredDelivery:
    """What a mapper sees of a delivery: its body parsed again from the exact bytes."""
    try:
        payload = json.loads(delivery.body)
    except ValueError:
        raise MappingError("stored body is not JSON") from None
    if not isinstance(payload, dict):
        raise MappingError("stored body is not a JSON object")
    return StoredDelivery(
        provider=delivery.provider,
        account=delivery.account,
        event_type=delivery.event_type,
        payload=payload,
        occurred_at=delivery.occurred_at,
        headers=dict(delivery.headers),
        api_version=delivery.api_version,
        enrichment=dict(enrichment or {}),
    )
