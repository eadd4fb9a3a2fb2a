"""The token bucket's priority: a low-priority caller leaves a spare token for a prompt one."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from webhooks.core.ratelimit import TokenBucket


class Clock:
    """Time that moves only when something sleeps on it (and then runs `during`)."""

    def __init__(self) -> None:
        self.now = 0.0
        self.during: Callable[[], None] | None = None

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds
        during, self.during = self.during, None
        if during is not None:
            during()


def bucket(clock: Clock) -> TokenBucket:
    # As the Customer.io client builds it: 10 calls a second, room for two.
    return TokenBucket(10, capacity=2, clock=clock, sleep=clock.sleep)


def test_a_background_call_leaves_the_last_token_to_a_live_one() -> None:
    clock = Clock()
    limiter = bucket(clock)
    assert limiter.acquire(spare=1) == 0  # a full bucket: 2 -> 1
    assert limiter.acquire() == 0  # the live call finds the spare token at once
    # The next background call waits until two are there again (0 -> 2 at 10/s).
    assert limiter.acquire(spare=1) == pytest.approx(0.2)
    assert clock.now == pytest.approx(0.2)


def test_back_to_back_background_calls_keep_the_rate_and_the_spare() -> None:
    clock = Clock()
    limiter = bucket(clock)
    waits = [limiter.acquire(spare=1) for _ in range(5)]
    # The first takes one of two; each later one waits for the refill: 10 a second.
    assert waits == pytest.approx([0, 0.1, 0.1, 0.1, 0.1])
    assert limiter.acquire() == pytest.approx(0, abs=1e-9)  # the spare is still there


def test_a_live_call_that_takes_the_token_a_background_one_waited_for_wins() -> None:
    clock = Clock()
    limiter = bucket(clock)
    limiter.acquire(spare=1)
    limiter.acquire(spare=1)  # 1 token left, the background caller waited 0.1 s
    live: list[float] = []
    # While the next background call sleeps, a live call comes and takes a token:
    # the background caller looks again and waits once more, never the live one.
    clock.during = lambda: live.append(limiter.acquire())
    assert limiter.acquire(spare=1) == pytest.approx(0.2)
    assert live == [0]


def test_without_spare_callers_queue_fairly_as_before() -> None:
    clock = Clock()
    limiter = TokenBucket(10, capacity=2, clock=clock, sleep=lambda _s: None)
    # Three callers at once: two tokens, then the third reserves the next one.
    assert [limiter.acquire() for _ in range(3)] == pytest.approx([0, 0, 0.1])


def test_a_spare_the_capacity_cannot_hold_is_refused() -> None:
    limiter = TokenBucket(10, capacity=1)
    with pytest.raises(ValueError, match="spare"):
        limiter.acquire(spare=1)
