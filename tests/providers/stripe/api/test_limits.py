"""The rate limit, the customer cache and the in-call retry policy, on a fake clock."""

from __future__ import annotations

import random

import pytest

from webhooks.core.ratelimit import TokenBucket
from webhooks.core.retry import is_retryable, parse_retry_after
from webhooks.providers.stripe.api.limits import IN_CALL, customer_cache

MISSING = object()


def retry_delay(
    attempt: int, retry_after: float | None = None, rng: random.Random | None = None
) -> float:
    return IN_CALL.delay(attempt, retry_after, rng)


class FakeClock:
    """A monotonic clock that moves only when told to, or when something sleeps on it."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_token_bucket_allows_a_burst_then_spaces_calls_at_the_rate() -> None:
    clock = FakeClock()
    bucket = TokenBucket(5, clock=clock, sleep=clock.sleep)
    waits = [bucket.acquire() for _ in range(8)]
    assert waits[:5] == [0, 0, 0, 0, 0]  # a full bucket: one second's worth at once
    assert waits[5:] == pytest.approx([0.2, 0.2, 0.2])  # then one call per 1/rate
    assert clock.now == pytest.approx(0.6)


def test_token_bucket_refills_with_time_up_to_its_capacity() -> None:
    clock = FakeClock()
    bucket = TokenBucket(2, clock=clock, sleep=clock.sleep)
    bucket.acquire()
    bucket.acquire()
    clock.now += 60  # idle for a minute: the bucket holds 2, not 120
    assert [bucket.acquire() for _ in range(3)] == pytest.approx([0, 0, 0.5])


def test_token_bucket_reserves_tokens_for_concurrent_waiters() -> None:
    clock = FakeClock()
    waits: list[float] = []
    # Sleeps that do not advance the clock: like threads all arriving at once.
    bucket = TokenBucket(1, clock=clock, sleep=waits.append)
    for _ in range(4):
        bucket.acquire()
    assert waits == pytest.approx([1.0, 2.0, 3.0])  # each waiter queues behind the last


def test_token_bucket_needs_a_positive_rate() -> None:
    with pytest.raises(ValueError, match="positive"):
        TokenBucket(0)


def test_customer_cache_expires_entries_and_remembers_none() -> None:
    clock = FakeClock()
    cache = customer_cache(ttl=10, max_size=5, clock=clock)
    cache["gone"] = None
    cache["a"] = {"x": 1}
    assert cache.get("gone", MISSING) is None  # a cached "no such customer", not a miss
    assert cache.get("a", MISSING) == {"x": 1}
    assert cache.get("never", MISSING) is MISSING
    clock.now = 10
    assert cache.get("a", MISSING) is MISSING
    assert len(cache) == 0  # both expired


def test_customer_cache_evicts_the_least_recently_used_beyond_its_size() -> None:
    cache = customer_cache(ttl=100, max_size=2, clock=FakeClock())
    cache["a"] = 1
    cache["b"] = 2
    assert cache.get("a") == 1  # a is now the most recently used
    cache["c"] = 3
    assert cache.get("b", MISSING) is MISSING
    assert (cache.get("a"), cache.get("c")) == (1, 3)
    assert len(cache) == 2


def test_retry_after_wins_over_the_backoff() -> None:
    assert retry_delay(1, retry_after=7.0) == 7.0
    assert retry_delay(3, retry_after=0.0) == 0.0


@pytest.mark.parametrize("attempt", range(1, 12))
def test_backoff_is_equal_jitter_doubling_to_a_cap(attempt: int) -> None:
    ceiling = min(IN_CALL.cap, IN_CALL.base * 2 ** (attempt - 1))
    rng = random.Random(attempt)
    delays = [retry_delay(attempt, rng=rng) for _ in range(50)]
    assert all(ceiling / 2 <= delay <= ceiling for delay in delays)
    assert max(delays) > ceiling * 0.75  # jittered, not a constant half


@pytest.mark.parametrize(
    ("header", "seconds"),
    [("3", 3.0), (" 1.5 ", 1.5), ("0", 0.0), ("-1", None), ("soon", None), (None, None)],
)
def test_parse_retry_after(header: str | None, seconds: float | None) -> None:
    assert parse_retry_after(header) == seconds


@pytest.mark.parametrize(
    ("status", "transient"),
    [
        *[(None, True), (409, True), (429, True), (500, True), (503, True)],
        *[(400, False), (401, False), (403, False), (404, False)],
    ],
)
def test_which_statuses_are_transient(status: int | None, transient: bool) -> None:
    assert is_retryable(status) is transient
