"""The business facts a delivery reports, by the keys the outbox stores them under.

A backfill made up from a record (Shopify) has no webhook id to deduplicate by, so it
asks instead whether its facts were reported: the mapper is pure, so mapping the
delivery here gives exactly the keys stage 1 would queue.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mappers.actions import Track
from mappers.base import StoredDelivery
from mappers.errors import MappingError
from webhooks.core import jsontext
from webhooks.core.hashing import bounded
from webhooks.providers.base import ProviderSettings, ProviderSpec
from webhooks.storage.inbox import Delivery
from webhooks.storage.schema import MAX_OP_KEY


def fact_keys(
    spec: ProviderSpec[Any, Any], settings: ProviderSettings, internal_id_key: str
) -> Callable[[Delivery], list[str]]:
    """A function giving the outbox keys of the events a delivery of `spec` reports;
    [] when it reports none or cannot be mapped (stage 1 will say why)."""
    config = spec.mapper_config(settings, internal_id_key)

    def keys(delivery: Delivery) -> list[str]:
        handler = spec.handlers.get(delivery.event_type)
        if handler is None:
            return []
        try:
            stored = StoredDelivery(
                provider=delivery.provider,
                account=delivery.account,
                event_type=delivery.event_type,
                payload=jsontext.loads(delivery.body),
                occurred_at=delivery.occurred_at,
                headers=dict(delivery.headers or {}),
                api_version=delivery.api_version,
            )
            actions = handler(stored, config)
        except (MappingError, ValueError, TypeError, KeyError):
            return []
        return [bounded(a.semantic_key, MAX_OP_KEY) for a in actions if isinstance(a, Track)]

    return keys
