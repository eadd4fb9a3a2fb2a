"""One rate limiter for every API the worker calls (Customer.io, Stripe)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

Clock = Callable[[], float]
Sleep = Callable[[float], None]
EPSILON = 1e-9  # tokens: a refill that should have made exactly enough counts as enough


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
        if spare:
            return self._acquire_leaving(spare)
        with self._lock:
            self._refill()
            self._tokens -= 1
            wait = -self._tokens / self.rate if self._tokens < 0 else 0.0
        if wait > 0:
            self._sleep(wait)
        return wait

    def _acquire_leaving(self, spare: float) -> float:
        """Take a token only while `spare` more stay; reserve nothing meanwhile, so a
        prompt caller arriving during the wait goes first and this one looks again."""
        if spare > self.capacity - 1:
            raise ValueError("spare must leave room for one token within the capacity")
        slept = 0.0
        while True:
            with self._lock:
                self._refill()
                if self._tokens >= 1 + spare - EPSILON:  # refills add up in floats
                    self._tokens -= 1
                    return slept
                wait = (1 + spare - self._tokens) / self.rate
            self._sleep(wait)
            slept += wait

    def _refill(self) -> None:
        now = self._clock()
        elapsed = max(0.0, now - self._updated)
        self._tokens = min(self.capacity, self._tokens + elapsed * self.rate)
        self._updated = now
