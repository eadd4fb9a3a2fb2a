"""From a claimed inbox row to canonical actions: the row is the mapper's input, in one step."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa
import structlog
from pydantic import ValidationError

from mappers.actions import Action
from mappers.base import StoredDelivery
from mappers.errors import MappingError
from webhooks.core import jsontext
from webhooks.core.metrics import UNMAPPED
from webhooks.errors import UnknownProvider
from webhooks.providers import registry

log = structlog.get_logger("webhooks.stage1.mapping")


def stored_delivery(row: Any, enrichment: Mapping[str, Any] | None = None) -> StoredDelivery:
    """What a mapper sees of an inbox row: its body parsed again from the exact bytes.

    `row` is an inbox row (or anything with its columns). `enrichment` is what the
    worker fetched for it; without it, what the row had stored.
    """
    try:
        payload = jsontext.loads(row.body)
    except ValueError:
        raise MappingError("stored body is not JSON") from None
    if not isinstance(payload, dict):
        raise MappingError("stored body is not a JSON object")
    data = enrichment if enrichment is not None else getattr(row, "enrichment", None)
    return StoredDelivery(
        provider=row.provider,
        account=row.account,
        event_type=row.event_type,
        payload=payload,
        # Without a provider time, the receipt time is the closest to the event.
        occurred_at=row.occurred_at or getattr(row, "received_at", None),
        headers=dict(row.headers or {}),
        api_version=row.api_version,
        enrichment=dict(data or {}),
    )


def map_delivery(delivery: StoredDelivery, configs: Mapping[str, Any]) -> list[Action]:
    """Map one stored delivery with its provider's table, validated against the taxonomy.

    Unknown types map to [] (with a debug log and a counter). Anything that stops a
    known type from mapping raises MappingError with a reason; the handler's partial
    output is discarded, so there is never a half event. `configs` holds each
    provider's mapper config by name (webhooks.stage1.setup.mapper_configs).
    """
    try:
        spec = registry.get(delivery.provider)
        config = configs[delivery.provider]
    except (UnknownProvider, KeyError):
        # Stored under a provider this build does not register (removed, renamed): the
        # row is dead-lettered with the reason and replayable, the rest goes on.
        raise MappingError(f"no provider named {delivery.provider!r} is registered") from None
    handler = spec.handlers.get(delivery.event_type)
    if handler is None:
        UNMAPPED.labels(delivery.provider, delivery.event_type).inc()
        log.debug("unmapped_delivery", provider=delivery.provider, type=delivery.event_type)
        return []
    try:
        actions = handler(delivery, config)
    except MappingError:
        raise
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise MappingError(f"output breaks the taxonomy at {where}: {first['msg']}") from exc
    except (KeyError, TypeError, ValueError, AttributeError, ArithmeticError) as exc:
        # A payload shape the handler did not expect: a reason for operators, and the
        # delivery is replayed once the mapper is fixed.
        raise MappingError(f"unexpected payload shape: {type(exc).__name__}: {exc}") from exc
    for action in actions:
        _check_origin(action, delivery)
    return actions


def _check_origin(action: Action, delivery: StoredDelivery) -> None:
    # A mapper speaks for its own provider only: an event claiming another source would
    # resolve against another provider's ids and person-id format.
    person = getattr(action, "person", None)
    if person is not None and person.source != delivery.provider:
        raise MappingError(
            f"the {delivery.provider} mapper returned a person of source {person.source!r}"
        )


def map_row(
    row: sa.Row[Any], configs: Mapping[str, Any], enrichment: Mapping[str, Any] | None = None
) -> list[Action]:
    """The canonical actions of one inbox row (pure; raises MappingError)."""
    return map_delivery(stored_delivery(row, enrichment), configs)
