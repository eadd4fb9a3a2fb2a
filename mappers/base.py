"""The mapper interface: one stored delivery in, a list of canonical actions out."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

from mappers.actions import Action
from mappers.errors import MappingError


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


C = TypeVar("C")
# A provider's handler: one stored delivery and the provider's own mapper config (a
# frozen dataclass of merchant choices, built from its settings) in, actions out.
Handler = Callable[[StoredDelivery, C], list[Action]]
