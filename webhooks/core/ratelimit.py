"""One rate limiter for every API the worker calls (Customer.io, Stripe)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

Clock = Callable[[], float]
Sleep = Callable[[float], None]


class TokenBucket:
    """At most `rate` calls per second on average, with bursts of up to `capacity` calls.

    `capacity` 1 spaces calls evenly (Customer.io); the default, `rate`, lets a quiet
    client spend a second's worth at once (Stripe).

    A caller that finds the bucket empty reserves the next token (the count goes
    negative) and sleeps outside the lock until it is due, so waiters queue fairly.
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

    def acquire(self) -> float:
        """Take one token, sleeping until it is available; the seconds slept."""
        with self._lock:
            now = self._clock()
            elapsed = max(0.0, now - self._updated)
            self._tokens = min(self.capacity, self._tokens + elapsed * self.rate)
            self._updated = now
            self._tokens -= 1
            wait = -self._tokens / self.rate if self._tokens < 0 else 0.0
        if wait > 0:
            self._sleep(wait)
        return wait
