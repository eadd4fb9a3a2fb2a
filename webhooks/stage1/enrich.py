"""Stage 1's Stripe lookups: what a webhook leaves out, fetched once and kept with its row.

Checkout webhooks carry no line items, and an event's resource may name a customer whose
own metadata alone holds the merchant's id. Right after the claim, the worker asks Stripe
(webhooks.providers.stripe.api) and stores the answer in the inbox row's `enrichment`, so a replay
maps exactly the same data without asking again. While Stripe is unavailable a row waits
(its lease pushed out) until DEADLINE after it arrived; then it is mapped without the
data (items_complete: false) and a warning says so. Without STRIPE_API_KEY nothing is
fetched and events go out the same way.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
import structlog
from sqlalchemy.engine import Engine

from mappers import read
from mappers import stripe_fields as f
from mappers.base import MapperConfig
from mappers.stripe import HANDLERS as STRIPE_HANDLERS
from webhooks.providers.stripe.api import (
    StripeAPI,
    StripeAPIError,
    StripeAuthError,
    StripeUnavailable,
)
from webhooks.storage.queue import utcnow
from webhooks.storage.schema import inbox

log = structlog.get_logger("webhooks.enrich")

# How long after its arrival a row may wait for Stripe; then it goes out without.
DEADLINE = timedelta(minutes=10)
# How long a row waits after a failed lookup: Stripe's Retry-After within these bounds,
# else DEFER_DEFAULT. Rows deferred together come back together, and the first lookup
# of the next pass tells for all of them whether Stripe is back.
DEFER_MIN = timedelta(seconds=5)
DEFER_DEFAULT = timedelta(seconds=30)
DEFER_MAX = timedelta(minutes=2)
# Lookups one pass may spend, in seconds, well inside the worker's lease; rows not
# reached are handed to the next pass at once (they come first: claims go by id).
BUDGET_SECONDS = 20.0

# Events whose mapping reports the session's items (mappers.stripe._session_commerce).
LINE_ITEM_EVENTS = frozenset(
    {
        "checkout.session.completed",
        "checkout.session.async_payment_succeeded",
        "checkout.session.expired",
    }
)
# Mapped events whose person is read from a resource naming a customer. customer.*
# events carry the customer itself, metadata included, as it was at the event.
CUSTOMER_EVENTS = frozenset(STRIPE_HANDLERS) - {"customer.created", "customer.updated"}
_CANDIDATES = LINE_ITEM_EVENTS | CUSTOMER_EVENTS


@dataclass
class EnrichResult:
    """Per row id, what to map it with (stored before or fetched now); rows to leave for later.

    Rows that need nothing are absent from `enrichment`. `deferred` rows must not be
    mapped in this pass: their lease now ends when they are due again.
    """

    enrichment: dict[int, dict[str, Any]] = field(default_factory=dict)
    deferred: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class Lookup:
    """What one row needs from Stripe."""

    session_id: str | None = None  # fetch the Checkout Session's line items
    customer_id: str | None = None  # fetch the customer's metadata

    def parts(self) -> list[str]:
        """The enrichment keys this lookup fills."""
        wanted = (("line_items", self.session_id), ("customer", self.customer_id))
        return [name for name, ident in wanted if ident]


def lookup(row: sa.Row[Any], config: MapperConfig) -> Lookup | None:
    """What `row` needs fetched, or None (pure; parses only candidate Stripe rows)."""
    if row.provider != "stripe" or row.event_type not in _CANDIDATES:
        return None
    if row.event_type.startswith("payment_intent.") and not config.stripe_payment_intent_events:
        return None  # mapped to nothing: nobody to identify
    try:
        resource = read.at(json.loads(row.body), "data.object")
    except ValueError:
        return None  # the mapping says what is wrong with it
    if not isinstance(resource, dict):
        return None
    session_id = read.opt_text(resource, "id")
    if row.event_type not in LINE_ITEM_EVENTS or not _items_missing(resource):
        session_id = None
    customer_id = read.ref(resource, "customer")
    if f.own_internal_id(config, resource, f.invoice_metadata(resource)):
        customer_id = None  # the payload names the merchant's id itself
    need = Lookup(_stripe_id(session_id, "cs_"), _stripe_id(customer_id, "cus_"))
    return need if need.parts() else None


def _stripe_id(value: str | None, prefix: str) -> str | None:
    # Only ids of the expected kind are looked up (and put into a request path).
    return value if value and value.startswith(prefix) else None


def _items_missing(session: dict[str, Any]) -> bool:
    # Expanded in the payload, the list is complete unless Stripe says it has more pages.
    lines = session.get("line_items")
    return not (
        isinstance(lines, dict)
        and isinstance(lines.get("data"), list)
        and lines.get("has_more") is False
    )


def enrich_rows(
    engine: Engine,
    owner: str,
    rows: Sequence[sa.Row[Any]],
    api: StripeAPI | None,
    config: MapperConfig,
    *,
    now: datetime | None = None,
    budget: float = BUDGET_SECONDS,
    clock: Callable[[], float] = time.monotonic,
) -> EnrichResult:
    """Fetch what claimed inbox rows need from Stripe and store it with them (see module doc).

    No query at all when no row needs a lookup (rows of other providers, rows enriched
    before, and everything when `api` is None).
    """
    result = EnrichResult(
        {row.id: dict(row.enrichment) for row in rows if row.enrichment is not None}
    )
    if api is None:
        return result
    todo = [(row, need) for row in rows if row.enrichment is None and (need := lookup(row, config))]
    if not todo:
        return result
    now = now or utcnow()
    batch = _Batch(api, clock, clock() + budget, config.internal_id_metadata_key)
    stored: list[dict[str, Any]] = []
    deferred: list[dict[str, Any]] = []
    for row, need in todo:
        found, problem = batch.fetch(row, need)
        if problem is None:
            # {} too: Stripe has neither (404), and a replay need not ask again.
            result.enrichment[row.id] = found
            stored.append({"b_id": row.id, "b_enrichment": found})
        elif isinstance(problem, _OutOfTime):
            result.deferred.append(row.id)
            deferred.append({"b_id": row.id, "b_until": now})
        elif isinstance(problem, StripeUnavailable) and now < row.received_at + DEADLINE:
            result.deferred.append(row.id)
            deferred.append({"b_id": row.id, "b_until": _due(row, problem, now)})
        else:
            # Past its deadline, or refused for good: out without the data, not stored,
            # so a replay once Stripe (or the key) works fetches it.
            if found:
                result.enrichment[row.id] = found
            log.warning(
                "stripe_enrichment_skipped",
                inbox_id=row.id,
                type=row.event_type,
                missing=[name for name in need.parts() if name not in found],
                reason=type(problem).__name__,
                status=getattr(problem, "status", None),
            )
    _persist(engine, owner, stored, deferred)
    if deferred:
        log.warning("stripe_enrichment_deferred", rows=len(deferred), reason=batch.reason())
    return result


def _due(row: sa.Row[Any], problem: StripeUnavailable, now: datetime) -> datetime:
    """When a deferred row is claimable again: after the backoff, at the latest its deadline."""
    wait = (
        timedelta(seconds=problem.retry_after) if problem.retry_after is not None else DEFER_DEFAULT
    )
    wait = min(DEFER_MAX, max(DEFER_MIN, wait))
    return min(now + wait, row.received_at + DEADLINE)


def _persist(
    engine: Engine, owner: str, stored: list[dict[str, Any]], deferred: list[dict[str, Any]]
) -> None:
    """Store fetched data and push deferred leases out, on rows we still hold."""
    if not stored and not deferred:
        return
    ours = sa.and_(inbox.c.id == sa.bindparam("b_id"), inbox.c.lease_owner == owner)
    with engine.begin() as conn:
        if stored:
            statement = sa.update(inbox).where(ours)
            conn.execute(statement.values(enrichment=sa.bindparam("b_enrichment")), stored)
        if deferred:
            statement = sa.update(inbox).where(ours)
            conn.execute(statement.values(lease_until=sa.bindparam("b_until")), deferred)


class _OutOfTime(Exception):
    """The pass spent its lookup budget before reaching this row."""


Problem = StripeAPIError | _OutOfTime


class _Batch:
    """One pass's lookups: after Stripe fails or refuses the key, no more calls this pass.

    An outage then costs one retried call per pass, not one per row.
    """

    def __init__(
        self,
        api: StripeAPI,
        clock: Callable[[], float],
        stop_at: float,
        keep: str | None = None,
    ) -> None:
        self.api = api
        self.keep = keep  # the metadata key holding the merchant's id
        self.clock = clock
        self.stop_at = stop_at
        self.halted: StripeUnavailable | StripeAuthError | None = None

    def fetch(self, row: sa.Row[Any], need: Lookup) -> tuple[dict[str, Any], Problem | None]:
        """What Stripe gave for `row`, and the first problem, if any part failed."""
        found: dict[str, Any] = {}
        problem: Problem | None = None
        parts: list[tuple[str, str | None, Callable[[str, str], Any]]] = [
            ("line_items", need.session_id, self.api.line_items),
            ("customer", need.customer_id, self.api.customer),
        ]
        for name, ident, call in parts:
            if ident is None:
                continue
            value, failed = self._call(call, ident, row.account)
            if failed is not None:
                problem = problem or failed
            elif value is not None:
                found[name] = self._kept(name, value)
        return found, problem

    def _kept(self, name: str, value: Any) -> Any:
        """Only what mapping needs: of a customer's metadata, the internal-id key alone.

        Merchants keep all sorts of things in metadata (addresses, notes); the inbox
        keeps this for as long as the delivery, so nothing else of it is stored.
        """
        if name != "customer" or self.keep is None:
            return value
        metadata = value.get("metadata") or {}
        kept = {self.keep: metadata[self.keep]} if self.keep in metadata else {}
        return {"id": value.get("id"), "metadata": kept}

    def _call(
        self, call: Callable[[str, str], Any], ident: str, account: str
    ) -> tuple[Any, Problem | None]:
        if self.halted is not None:
            return None, self.halted
        if self.clock() >= self.stop_at:
            return None, _OutOfTime()
        try:
            return call(ident, account), None
        except (StripeUnavailable, StripeAuthError) as exc:
            self.halted = exc
            return None, exc
        except StripeAPIError as exc:  # refused for this object only
            return None, exc

    def reason(self) -> str:
        """Why rows were deferred, for the log."""
        return str(self.halted) if self.halted is not None else "lookup budget spent"
