"""How hard we lean on Stripe: a customer cache and the retry policy.

The rate limit is webhooks.core.ratelimit.TokenBucket, shared with the Customer.io client.
"""

from __future__ import annotations

import random
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any

from webhooks.core.retry import equal_jitter

# Retries inside one call. A lookup blocks the worker's mapping pass, so the budget is
# small: an outage defers the rows (webhooks.stage1.enrich) instead of holding them.
MAX_ATTEMPTS = 4
BASE_DELAY = 0.5  # seconds before the first retry (before jitter)
MAX_DELAY = 8.0  # cap on one wait between attempts
# A Retry-After longer than this is not waited out inside the call: the caller is told
# (StripeUnavailable.retry_after) and tries again that much later.
MAX_RETRY_AFTER_IN_CALL = 10.0
# Statuses worth another try besides 429 and 5xx: 409 is Stripe's lock timeout.
RETRYABLE_STATUSES = frozenset({409, 429})

Clock = Callable[[], float]
Sleep = Callable[[float], None]


def is_transient(status: int | None) -> bool:
    """True for no response at all (a network error), 409, 429 and any 5xx."""
    return status is None or status in RETRYABLE_STATUSES or status >= 500


def retry_delay(
    attempt: int, retry_after: float | None = None, rng: random.Random | None = None
) -> float:
    """Seconds to wait after failed attempt `attempt` (1-based); Retry-After wins.

    Equal jitter (half fixed, half random): never zero, so a 429 without Retry-After
    still backs off, and workers that failed together do not retry in lockstep.
    """
    if retry_after is not None and retry_after >= 0:
        return retry_after
    return equal_jitter(attempt, BASE_DELAY, MAX_DELAY, rng)


MISSING: Any = object()  # what TTLCache.get answers for an absent or expired key


class TTLCache:
    """A bounded in-process cache: entries expire after `ttl` seconds, least recently used go first.

    None is a value like any other (a deleted customer is worth remembering too).
    """

    def __init__(self, ttl: float, max_size: int, *, clock: Clock = time.monotonic) -> None:
        self.ttl = ttl
        self.max_size = max_size
        self._clock = clock
        self._entries: OrderedDict[Hashable, tuple[float, Any]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> Any:
        """The cached value, or MISSING."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return MISSING
            expires, value = entry
            if self._clock() >= expires:
                del self._entries[key]
                return MISSING
            self._entries.move_to_end(key)
            return value

    def put(self, key: Hashable, value: Any) -> None:
        """Remember `value` for `ttl` seconds, evicting the least recently used beyond max_size."""
        with self._lock:
            self._entries[key] = (self._clock() + self.ttl, value)
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_size:
                self._entries.popitem(last=False)

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)
