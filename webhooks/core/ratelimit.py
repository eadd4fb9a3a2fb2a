"""One rate limiter for every API the worker calls (Customer.io, Stripe)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

Clock = Callable[[], float]
EPSILON = 1e-9  # tokens: a refill that should have made exactly enough counts as enough
Sleep = Callable[[float], None]


class TokenBucket:
    """At most `rate` calls per second on average, with bursts of up to `capacity` calls.

    `capacity` 1 spaces calls evenly (Customer.io); the default, `rate`, lets a quiet
    client spend a second's worth at once (Stripe).

    A caller that finds the bucket empty reserves the next token (the count goes
    negative) and sleeps outside the lock until it is due, so waiters queue fairly.

    A caller of lower priority passes `spare`: it takes a token only while that many
    more stay in the bucket, so it never takes or reserves the one a prompt caller is
    about to need (with `capacity` 2 and `spare` 1, a backfill's requests leave one
    token for a live webhook's, which then waits for none of theirs).
    """

    def __init__(
        self,
        rate: float,
        *,
        capacity: float | None = None,
        clock: Clock = time.monotonic,
        sleep: Sleep = time.sleep,
    ):
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = rate
        self.capacity = max(1.0, rate if capacity is None else capacity)
        self._tokens = self.capacity
        self._clock = clock
        self._sleep = sleep
        self._updated = clock()
        self._lock = threading.Lock()

    def acquire(self, spare: float = 0.0) -> float:
        """Take one token, sleeping until it is available (and, with `spare`, until
        that many more are left besides); the seconds slept."""
        if spare and spare > self.capacity - 1:
            raise ValueError("spare must leave room for one token within the capacity")
        slept = 0.0
        while True:
            with self._lock:
                self._refill()
                if not spare:
                    self._tokens -= 1
                    wait = -self._tokens / self.rate if self._tokens < 0 else 0.0
                elif self._tokens >= 1 + spare - EPSILON:  # refills add up in floats
                    self._tokens -= 1
                    return slept
                else:  # look again when enough will be there, unless someone takes it
                    wait = (1 + spare - self._tokens) / self.rate
            if wait > 0:
                self._sleep(wait)
                slept += wait
            if not spare:
                return slept

    def _refill(self) -> None:
        now = self._clock()
        elapsed = max(0.0, now - self._updated)
        self._tokens = min(self.capacity, self._tokens + elapsed * self.rate)
        self._updated = now
