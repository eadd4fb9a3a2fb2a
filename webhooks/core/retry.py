"""The retry policy for Customer.io calls: which outcomes retry, and how long to wait."""

from __future__ import annotations

import random
from datetime import timedelta

# Statuses worth another try: timeouts, throttling and server trouble. 501 and 505 say
# the server will never do it, so they are permanent like 4xx.
RETRYABLE_STATUSES = frozenset({408, 429, 500, 502, 503, 504, 522, 524}) | frozenset(
    range(506, 600)
)
# Credentials or region are wrong: every call fails until an operator fixes it.
AUTH_STATUSES = frozenset({401, 403})
BASE_DELAY = 1.0  # seconds before the first retry (before jitter)
MAX_DELAY = 300.0  # cap on one wait
MAX_RETRY_AFTER = 3600.0  # never trust a Retry-After longer than an hour
DEFAULT_MAX_AGE = timedelta(hours=72)  # then the operation is dead-lettered


def is_retryable(status: int | None) -> bool:
    """True for network failures (no status) and transient statuses."""
    return status is None or status in RETRYABLE_STATUSES


def backoff(
    attempt: int, retry_after: float | None = None, rng: random.Random | None = None
) -> float:
    """Seconds to wait before attempt `attempt + 1`: full jitter, capped, Retry-After wins.

    Full jitter (a uniform draw up to the exponential ceiling) spreads a fleet of
    workers apart after an outage instead of having them retry in lockstep.
    """
    if retry_after is not None and retry_after >= 0:
        return min(retry_after, MAX_RETRY_AFTER)
    ceiling = min(MAX_DELAY, BASE_DELAY * (2 ** max(0, attempt - 1)))
    return (rng or random).uniform(0, ceiling)


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds form only), or None."""
    if not value:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return seconds if seconds >= 0 else None


def outage_pause(failures: int, rng: random.Random | None = None) -> float:
    """Seconds the whole worker waits after `failures` transient failures in a row.

    Per-operation backoff alone lets many operations retry on their own schedules; a
    worker-wide pause keeps the number of calls during an outage logarithmic in its
    length. Equal jitter (half fixed, half random) so it never collapses to zero.
    """
    return equal_jitter(failures, BASE_DELAY, MAX_DELAY, rng)


def equal_jitter(attempt: int, base: float, cap: float, rng: random.Random | None = None) -> float:
    """Half of the exponential ceiling for `attempt` (1-based) fixed, half random."""
    ceiling = min(cap, base * (2 ** max(0, attempt - 1)))
    return ceiling / 2 + (rng or random).uniform(0, ceiling / 2)
