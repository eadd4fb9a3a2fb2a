"""Backfill: deliveries read back from a provider's API, stored in the backfill lane.

Each comes shaped as its webhook, so the provider's receiver keys it exactly as the
webhook would have been keyed: one the webhook already delivered is a duplicate and
costs nothing, and a rerun is safe. They go to the worker in lane 1, which it takes
only when live work is done, so a backfill never delays live webhooks.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from sqlalchemy.engine import Engine

from webhooks.providers.base import Receiver
from webhooks.providers.samples import Sample
from webhooks.storage.inbox import exists, store_delivery
from webhooks.storage.schema import Lane


@dataclass
class Summary:
    """What a backfill found: fetched, new (stored now), duplicates (already stored)."""

    fetched: int = 0
    new: int = 0
    duplicates: int = 0
    new_by_type: Counter[str] = field(default_factory=Counter)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "fetched": self.fetched,
            "new": self.new,
            "duplicates": self.duplicates,
            "new_by_type": dict(sorted(self.new_by_type.items())),
        }


def run(
    engine: Engine,
    receiver: Receiver,
    deliveries: Iterable[Sample],
    dry_run: bool = False,
    progress: Callable[[Summary], Any] = lambda _s: None,
    attributes_only: bool = False,
) -> Summary:
    """Store each delivery in the backfill lane (or, in a dry run, count the new ones).

    In the backfill lane facts older than BACKFILL_LIVE_WINDOW_SECONDS are history (their
    events withheld); with `attributes_only` every fact is (the history lane)."""
    lane = Lane.HISTORY if attributes_only else Lane.BACKFILL
    summary = Summary()
    for sample in deliveries:
        headers = {key.lower(): value for key, value in sample.headers.items()}
        delivery = replace(receiver.parse(sample.body, headers), lane=lane)
        new = not exists(engine, delivery) if dry_run else store_delivery(engine, delivery)
        summary.fetched += 1
        if new:
            summary.new += 1
            summary.new_by_type[delivery.event_type] += 1
        else:
            summary.duplicates += 1
        progress(summary)
    return summary
