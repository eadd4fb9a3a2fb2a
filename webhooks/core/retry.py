"""The retry policy for every API the worker calls (Customer.io, Stripe).

One set of statuses that are worth another try, one Retry-After parser, and one
backoff shape (`RetryPolicy`) whose numbers each caller names: Customer.io operations
wait in the outbox for minutes between attempts, a Stripe lookup retries in-call for
seconds (it holds up a mapping pass).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import timedelta

# Worth another try: timeouts, conflicts that clear (Stripe's lock timeout is a 409),
# "too early", throttling and server trouble. 501 and 505 say the server will never do
# it, so they are permanent like the other 4xx.
RETRYABLE_STATUSES = frozenset({408, 409, 425, 429}) | (frozenset(range(500, 600)) - {501, 505})
# Credentials or region are wrong: every call fails until an operator fixes it.
AUTH_STATUSES = frozenset({401, 403})
MAX_RETRY_AFTER = 3600.0  # never trust a Retry-After longer than an hour
DEFAULT_MAX_AGE = timedelta(hours=72)  # then a Customer.io operation is dead-lettered


def is_retryable(status: int | None) -> bool:
    """True for network failures (no status) and transient statuses."""
    return status is None or status in RETRYABLE_STATUSES


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds form only), or None."""
    if not value:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return seconds if seconds >= 0 else None


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff from `base` seconds, capped at `cap`, with jitter.

    Full jitter (a uniform draw up to the ceiling) spreads a fleet of workers apart
    after an outage; equal jitter (half fixed, half random) never collapses to zero,
    for waits that must really wait (a 429 without Retry-After).
    """

    base: float
    cap: float
    full_jitter: bool = True
    max_attempts: int | None = None  # attempts within one call, where that applies

    def ceiling(self, attempt: int) -> float:
        """The longest wait after failed attempt `attempt` (1-based)."""
        return min(self.cap, self.base * 2.0 ** max(0, attempt - 1))

    def delay(
        self, attempt: int, retry_after: float | None = None, rng: random.Random | None = None
    ) -> float:
        """Seconds to wait after failed attempt `attempt`; the peer's Retry-After wins."""
        if retry_after is not None and retry_after >= 0:
            return min(retry_after, MAX_RETRY_AFTER)
        ceiling = self.ceiling(attempt)
        draw = (rng or random).uniform
        return draw(0, ceiling) if self.full_jitter else ceiling / 2 + draw(0, ceiling / 2)


# A Customer.io operation that failed waits in the outbox this long before its next try.
OPERATION_RETRY = RetryPolicy(base=1.0, cap=300.0)
# The whole worker pauses after transient delivery failures in a row, so an outage
# costs a number of calls logarithmic in its length, not one per operation.
OUTAGE_PAUSE = RetryPolicy(base=1.0, cap=300.0, full_jitter=False)


def backoff(
    attempt: int, retry_after: float | None = None, rng: random.Random | None = None
) -> float:
    """Seconds an operation waits before attempt `attempt + 1` (OPERATION_RETRY)."""
    return OPERATION_RETRY.delay(attempt, retry_after, rng)


def outage_pause(failures: int, rng: random.Random | None = None) -> float:
    """Seconds the whole worker waits after `failures` transient failures in a row."""
    return OUTAGE_PAUSE.delay(failures, rng=rng)
