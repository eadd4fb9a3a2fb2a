"""How hard we lean on Stripe: the in-call retry numbers and the customer cache.

The rate limit is webhooks.core.ratelimit.TokenBucket and the statuses and backoff
shape are webhooks.core.retry's, shared with the Customer.io client.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any

from cachetools import TTLCache

from webhooks.core.retry import RetryPolicy

# Retries inside one call. A lookup blocks the worker's mapping pass, so the budget is
# small: an outage defers the rows (webhooks.stage1.enrich) instead of holding them.
# Equal jitter: never zero, so a 429 without Retry-After still backs off.
IN_CALL = RetryPolicy(base=0.5, cap=8.0, full_jitter=False, max_attempts=4)
MAX_ATTEMPTS = IN_CALL.max_attempts or 1
# A Retry-After longer than this is not waited out inside the call: the caller is told
# (StripeUnavailable.retry_after) and tries again that much later.
MAX_RETRY_AFTER_IN_CALL = 10.0

Clock = Callable[[], float]
Sleep = Callable[[float], None]


def customer_cache(ttl: float, max_size: int, clock: Clock) -> TTLCache[Hashable, Any]:
    """A bounded cache whose entries expire after `ttl` seconds, least recently used first.

    None is a value like any other (a deleted customer is worth remembering too).
    """
    return TTLCache(maxsize=max_size, ttl=ttl, timer=clock)
