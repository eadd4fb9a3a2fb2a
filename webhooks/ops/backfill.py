"""Backfill: deliveries read back from a provider's API, stored in the backfill lane.

Each comes shaped as its webhook, so the provider's receiver keys it exactly as the
webhook would have been keyed: one the webhook already delivered is a duplicate and
costs nothing, and a rerun is safe (deliveries made up from records are deduplicated
by their facts instead). They go to the worker in the backfill lane (or the history
lane), which it maps and sends in slices behind live work (webhooks.worker).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from sqlalchemy.engine import Engine

from webhooks.providers.base import Receiver
from webhooks.providers.samples import Sample
from webhooks.storage.inbox import Delivery, exists, store_delivery
from webhooks.storage.outbox import reported
from webhooks.storage.schema import Lane


@dataclass
class Summary:
    """What a backfill found.

    `new`: stored now, with facts no webhook had reported (what the webhooks missed);
    `duplicates`: stored before, or (for deliveries made up from records) every fact
    already reported by a webhook; `refreshed`: records made up into deliveries that
    report no fact of their own (a Shopify customer), stored to refresh the person but
    not counted as missed, since nothing tells whether their webhook came.
    """

    fetched: int = 0
    new: int = 0
    duplicates: int = 0
    refreshed: int = 0
    new_by_type: Counter[str] = field(default_factory=Counter)
    progress: float | None = None  # share of the range read (0..1), when known

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "fetched": self.fetched,
            "new": self.new,
            "duplicates": self.duplicates,
            "refreshed": self.refreshed,
            "new_by_type": dict(sorted(self.new_by_type.items())),
        }


def run(
    engine: Engine,
    receiver: Receiver,
    deliveries: Iterable[Sample],
    dry_run: bool = False,
    progress: Callable[[Summary], Any] = lambda _s: None,
    attributes_only: bool = False,
    facts: Callable[[Delivery], list[str]] = lambda _d: [],
) -> Summary:
    """Store each delivery in the backfill lane (or, in a dry run, count the new ones).

    In the backfill lane facts older than BACKFILL_LIVE_WINDOW_SECONDS are history (their
    events withheld); with `attributes_only` every fact is (the history lane). `facts`
    gives a delivery's fact keys (webhooks.providers.facts), asked for deliveries made
    up from records."""
    lane = Lane.HISTORY if attributes_only else Lane.BACKFILL
    summary = Summary()
    try:
        _store_all(engine, receiver, deliveries, dry_run, progress, lane, facts, summary)
    finally:
        # A generator holding an API session (Shopify's) ends it now, not when collected.
        close = getattr(deliveries, "close", None)
        if callable(close):
            close()
    return summary


def _store_all(
    engine: Engine,
    receiver: Receiver,
    deliveries: Iterable[Sample],
    dry_run: bool,
    progress: Callable[[Summary], Any],
    lane: int,
    facts: Callable[[Delivery], list[str]],
    summary: Summary,
) -> None:
    for sample in deliveries:
        headers = {key.lower(): value for key, value in sample.headers.items()}
        delivery = replace(receiver.parse(sample.body, headers), lane=lane)
        summary.fetched += 1
        summary.progress = sample.progress
        # Looked up first, so a rerun does not count itself on the stored row's duplicates.
        outcome = "duplicate" if exists(engine, delivery) else "new"
        if outcome == "new" and sample.keyed_by_fact:
            keys = facts(delivery)
            if not keys:
                outcome = "refreshed"
            elif reported(engine, keys) >= set(keys):
                outcome = "duplicate"  # a webhook reported all of it under its own id
        if outcome != "duplicate" and not dry_run and not store_delivery(engine, delivery):
            outcome = "duplicate"  # stored meanwhile (the webhook raced the backfill)
        if outcome == "new":
            summary.new += 1
            summary.new_by_type[delivery.event_type] += 1
        elif outcome == "refreshed":
            summary.refreshed += 1
        else:
            summary.duplicates += 1
        progress(summary)
