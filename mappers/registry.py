"""The mapper registry: one table of providers, each a table of event types to handlers."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import structlog
from prometheus_client import Counter
from pydantic import ValidationError

from mappers import shopify, stripe
from mappers.actions import Action
from mappers.base import MapperConfig, StoredDelivery
from mappers.errors import MappingError

Handler = Callable[[StoredDelivery, MapperConfig], list[Action]]

# Adding a provider: a module with a HANDLERS table, and one line here.
PROVIDERS: dict[str, Mapping[str, Handler]] = {
    "stripe": stripe.HANDLERS,
    "shopify": shopify.HANDLERS,
}

UNMAPPED = Counter(
    "webhooks_unmapped_deliveries_total",
    "Verified deliveries of a type no mapper handles (stored, acknowledged, not forwarded).",
    ["provider", "event_type"],
)
log = structlog.get_logger("mappers")


def map_delivery(delivery: StoredDelivery, config: MapperConfig | None = None) -> list[Action]:
    """Map one stored delivery to canonical actions, validated against the taxonomy.

    Unknown types map to [] (with a debug log and a counter). Anything that stops a
    known type from mapping raises MappingError with a reason; the handler's partial
    output is discarded, so there is never a half event.
    """
    handlers = PROVIDERS.get(delivery.provider)
    if handlers is None:
        raise MappingError(f"no mapper for provider {delivery.provider!r}")
    handler = handlers.get(delivery.event_type)
    if handler is None:
        UNMAPPED.labels(delivery.provider, delivery.event_type).inc()
        log.debug("unmapped_delivery", provider=delivery.provider, type=delivery.event_type)
        return []
    try:
        return handler(delivery, config or MapperConfig())
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


def handled_types() -> dict[str, list[str]]:
    """Every event type or topic each provider maps, for docs and tests."""
    return {name: sorted(handlers) for name, handlers in PROVIDERS.items()}
