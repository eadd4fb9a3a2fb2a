"""Stripe's side of `webhooks backfill stripe`: the events the webhooks may have missed.

Stripe keeps 30 days of events and lists them through the Events API; each comes back
exactly as its webhook would have carried it, so the receiver keys it the same way
(account, event id) and an event the webhook already delivered is a duplicate.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

from mappers.stripe import HANDLERS
from webhooks.errors import ConfigError
from webhooks.providers.base import BackfillRequest
from webhooks.providers.samples import Sample
from webhooks.providers.stripe.api.client import StripeAPI
from webhooks.providers.stripe.settings import StripeSettings

HISTORY = timedelta(days=30)  # how far back the Events API reaches
KEY_HINT = (
    "backfill reads Stripe's Events API: set STRIPE_API_KEY to a restricted key (rk_) "
    "with read access to Events"
)


def events(settings: StripeSettings, request: BackfillRequest) -> Iterator[Sample]:
    """Every handled event (or those of `types`) created in [since, until), newest first."""
    since, until, types = request.since, request.until, request.types
    if request.accounts:
        raise ConfigError(
            "Stripe backfill reads the platform account's events; Connect accounts "
            "(--account) are not supported yet"
        )
    key = settings.api_key.get_secret_value() if settings.api_key else ""
    if not key:
        raise ConfigError(f"no STRIPE_API_KEY: {KEY_HINT}")
    oldest = datetime.now(UTC) - HISTORY
    if since < oldest:
        raise ConfigError(
            f"--since {since:%Y-%m-%d} is more than 30 days ago: Stripe keeps 30 days of events"
        )
    unknown = sorted(set(types) - set(HANDLERS))
    if unknown:
        raise ConfigError(f"not event types the mappers handle: {', '.join(unknown)}")
    api = StripeAPI.create(key, base_url=settings.api_base, max_rps=settings.api_max_rps)
    try:
        wanted = types or sorted(HANDLERS)
        start = int(since.timestamp())
        end = int(until.timestamp()) if until else int(time.time())
        for event in api.events(start, end if until else None, list(wanted)):
            # Newest first: how far back from the end the pages have reached.
            created = int(event.get("created") or end)
            done = (end - created) / max(end - start, 1)
            yield Sample(json.dumps(event).encode(), {}, progress=min(max(done, 0.0), 1.0))
    finally:
        api.close()
