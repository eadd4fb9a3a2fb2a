"""Stage 1's lookups: what a webhook leaves out, fetched once and kept with its row.

A provider with an enricher (its spec's `enricher`; Stripe's fetches Checkout line
items and customer metadata) says per delivery what to fetch. Right after the claim the
worker calls it and stores the answer in the inbox row's `enrichment`, so a replay maps
exactly the same data without asking again. While the source is unavailable a row waits
(its lease pushed out) until DEADLINE after it arrived; then it is mapped without the
data and a warning says so. A provider without an enricher (or without the key it
needs) maps what the payload carries.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
import structlog
from sqlalchemy.engine import Engine

from mappers.errors import MappingError
from webhooks.errors import LookupUnauthorized, LookupUnavailable, ProcessingError
from webhooks.providers.base import Enricher, Fetch
from webhooks.stage1.mapping import stored_delivery
from webhooks.storage.inbox import save_enrichment
from webhooks.storage.queue import utcnow

log = structlog.get_logger("webhooks.stage1.enrich")

# How long after its arrival a row may wait for a lookup; then it goes out without.
DEADLINE = timedelta(minutes=10)
# How long a row waits after a failed lookup: the source's Retry-After within these
# bounds, else DEFER_DEFAULT. Rows deferred together come back together, and the first
# lookup of the next pass tells for all of them whether the source is back.
DEFER_MIN = timedelta(seconds=5)
DEFER_DEFAULT = timedelta(seconds=30)
DEFER_MAX = timedelta(minutes=2)
# Lookups one pass may spend, in seconds, well inside the worker's lease; rows not
# reached are handed to the next pass at once (they come first: claims go by id).
BUDGET_SECONDS = 20.0


@dataclass
class EnrichResult:
    """Per row id, what to map it with (stored before or fetched now); rows to leave for later.

    Rows that need nothing are absent from `enrichment`. `deferred` rows must not be
    mapped in this pass: their lease now ends when they are due again.
    """

    enrichment: dict[int, dict[str, Any]] = field(default_factory=dict)
    deferred: list[int] = field(default_factory=list)


class _OutOfTime(ProcessingError):
    """The pass spent its lookup budget before reaching this row."""


def enrich_rows(
    engine: Engine,
    owner: str,
    rows: Sequence[sa.Row[Any]],
    enrichers: Mapping[str, Enricher],
    *,
    now: datetime | None = None,
    budget: float = BUDGET_SECONDS,
    clock: Callable[[], float] = time.monotonic,
) -> EnrichResult:
    """Fetch what claimed inbox rows need and store it with them (see module doc).

    No query at all when no row needs a lookup (rows of providers without an enricher,
    rows enriched before).
    """
    result = EnrichResult(
        {row.id: dict(row.enrichment) for row in rows if row.enrichment is not None}
    )
    todo = [
        (row, calls)
        for row in rows
        if row.enrichment is None and (calls := _lookups(row, enrichers.get(row.provider)))
    ]
    if not todo:
        return result
    now = now or utcnow()
    passes = {name: _Pass(clock, clock() + budget) for name in enrichers}
    stored: list[dict[str, Any]] = []
    deferred: list[dict[str, Any]] = []
    for row, calls in todo:
        found, problem = passes[row.provider].fetch(calls)
        if problem is None:
            # {} too: the source has none of it (404), and a replay need not ask again.
            result.enrichment[row.id] = found
            stored.append({"b_id": row.id, "b_enrichment": found})
        elif isinstance(problem, _OutOfTime) or (
            isinstance(problem, LookupUnavailable) and now < row.received_at + DEADLINE
        ):
            result.deferred.append(row.id)
            due = now if isinstance(problem, _OutOfTime) else _due(row, problem, now)
            deferred.append({"b_id": row.id, "b_until": due})
            passes[row.provider].deferred += 1
        else:
            # Past its deadline, or refused for good: out without the data, not stored,
            # so a replay once the source (or the key) works fetches it.
            if found:
                result.enrichment[row.id] = found
            log.warning(
                f"{row.provider}_enrichment_skipped",
                inbox_id=row.id,
                type=row.event_type,
                missing=[name for name in calls if name not in found],
                reason=type(problem).__name__,
                status=problem.status,
            )
    save_enrichment(engine, owner, stored, deferred)
    for name, done in passes.items():
        if done.deferred:
            log.warning(f"{name}_enrichment_deferred", rows=done.deferred, reason=done.reason())
    return result


def _lookups(row: sa.Row[Any], enricher: Enricher | None) -> dict[str, Fetch]:
    if enricher is None or row.event_type not in enricher.event_types:
        return {}
    try:
        return enricher.lookups(stored_delivery(row))
    except MappingError:
        return {}  # the mapping says what is wrong with it


def _due(row: sa.Row[Any], problem: LookupUnavailable, now: datetime) -> datetime:
    """When a deferred row is claimable again: after the backoff, at the latest its deadline."""
    wait = (
        timedelta(seconds=problem.retry_after) if problem.retry_after is not None else DEFER_DEFAULT
    )
    wait = min(DEFER_MAX, max(DEFER_MIN, wait))
    received: datetime = row.received_at
    return min(now + wait, received + DEADLINE)


class _Pass:
    """One provider's lookups in one pass: after its source fails or refuses the key, no
    more calls this pass. An outage then costs one retried call per pass, not one per row.
    """

    def __init__(self, clock: Callable[[], float], stop_at: float) -> None:
        self.clock = clock
        self.stop_at = stop_at
        self.halted: LookupUnavailable | LookupUnauthorized | None = None
        self.deferred = 0  # rows left for a later pass

    def fetch(self, calls: Mapping[str, Fetch]) -> tuple[dict[str, Any], ProcessingError | None]:
        """What the calls gave, and the first problem, if any part failed."""
        found: dict[str, Any] = {}
        problem: ProcessingError | None = None
        for name, call in calls.items():
            value, failed = self._call(call)
            if failed is not None:
                problem = problem or failed
            elif value is not None:
                found[name] = value
        return found, problem

    def _call(self, call: Fetch) -> tuple[Any, ProcessingError | None]:
        if self.halted is not None:
            return None, self.halted
        if self.clock() >= self.stop_at:
            return None, _OutOfTime("lookup budget spent")
        try:
            return call(), None
        except (LookupUnavailable, LookupUnauthorized) as exc:
            self.halted = exc
            return None, exc
        except ProcessingError as exc:  # refused for this object only
            return None, exc

    def reason(self) -> str:
        """Why rows were deferred, for the log."""
        return str(self.halted) if self.halted is not None else "lookup budget spent"
