"""The retry policy and deterministic ids: small named pieces, tested alone."""

from __future__ import annotations

import random
import re
from datetime import UTC, datetime

import pytest

from webhooks.core.ids import op_ulid
from webhooks.core.retry import backoff, is_retryable, outage_pause, parse_retry_after

ULID = re.compile(r"^[0-7][0-9A-HJKMNP-TV-Z]{25}$")
WHEN = datetime(2026, 11, 28, 10, 0, tzinfo=UTC)
FIVE_MINUTES = 300.0  # the documented cap of every wait (docs/architecture.md)


@pytest.mark.parametrize("status", [None, 408, 429, 500, 502, 503, 504, 522, 524])
def test_transient_outcomes_retry(status: int | None) -> None:
    assert is_retryable(status)


@pytest.mark.parametrize("status", [400, 401, 403, 404, 413, 422, 501, 505])
def test_permanent_outcomes_do_not_retry(status: int) -> None:
    assert not is_retryable(status)


def test_backoff_is_full_jitter_under_an_exponential_ceiling() -> None:
    rng = random.Random(3)
    for attempt, ceiling in [(1, 1), (2, 2), (3, 4), (6, 32), (30, FIVE_MINUTES)]:
        waits = [backoff(attempt, rng=rng) for _ in range(200)]
        assert all(0 <= w <= ceiling for w in waits)
        assert max(waits) > ceiling * 0.8  # spread over the whole range, not fixed
        assert min(waits) < ceiling * 0.2


def test_retry_after_wins_and_is_capped() -> None:
    assert backoff(1, retry_after=7) == 7
    assert backoff(1, retry_after=10**6) == 3600


@pytest.mark.parametrize(
    ("header", "seconds"), [("5", 5.0), (" 0 ", 0.0), ("soon", None), (None, None), ("-1", None)]
)
def test_retry_after_header(header: str | None, seconds: float | None) -> None:
    assert parse_retry_after(header) == seconds


def test_op_ulid_is_deterministic_valid_and_distinct() -> None:
    first = op_ulid("order_completed:stripe:platform:pi_1", WHEN)
    assert first == op_ulid("order_completed:stripe:platform:pi_1", WHEN)
    assert ULID.match(first)
    assert first != op_ulid("order_completed:stripe:platform:pi_2", WHEN)
    # The time part is the event time, so ids sort like the facts they name.
    later = op_ulid("order_completed:stripe:platform:pi_1", WHEN.replace(hour=11))
    assert later[:10] > first[:10]
    assert later[10:] == first[10:]


def test_outage_pause_grows_and_never_collapses_to_zero() -> None:
    rng = random.Random(5)
    for failures, ceiling in [(1, 1), (2, 2), (4, 8), (20, FIVE_MINUTES)]:
        waits = [outage_pause(failures, rng) for _ in range(100)]
        assert all(ceiling / 2 <= w <= ceiling for w in waits)
