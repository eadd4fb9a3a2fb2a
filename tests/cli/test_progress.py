"""A backfill's progress: plain lines with counts and an ETA when not on a terminal."""

from __future__ import annotations

import pytest

from webhooks.cli import progress
from webhooks.cli.progress import Progress, eta
from webhooks.ops.backfill import Summary


def test_eta_is_the_time_left_at_the_pace_so_far() -> None:
    assert eta(30.0, 0.25) == "1m30s"  # a quarter in 30 s: 90 s to go
    assert eta(10.0, 0.5) == "10s"
    assert eta(10.0, None) is None  # the provider cannot say how far it is
    assert eta(0.5, 0.5) is None  # too early to tell
    assert eta(10.0, 1.0) is None


def test_plain_lines_say_the_counts_share_and_eta(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    clock = iter([100.0, 103.0, 104.0, 106.0])
    monkeypatch.setattr(progress.time, "monotonic", lambda: next(clock))
    with Progress(quiet=False, interactive=False) as show:  # started at 100
        show(Summary(fetched=40, new=3, duplicates=37, progress=0.25))  # 103: shown
        show(Summary(fetched=50, new=3, duplicates=47, progress=0.3))  # 104: within 2 s
        show(Summary(fetched=80, new=5, duplicates=73, refreshed=2, progress=0.5))  # 106
    lines = capsys.readouterr().err.splitlines()
    assert lines == [
        "  fetched 40: 3 new, 37 duplicates, 0 refreshed; 25% of the range read, ETA 9s",
        "  fetched 80: 5 new, 73 duplicates, 2 refreshed; 50% of the range read, ETA 6s",
    ]


def test_json_output_stays_clean(capsys: pytest.CaptureFixture[str]) -> None:
    with Progress(quiet=True, interactive=False) as show:
        show(Summary(fetched=1, progress=0.5))
    assert capsys.readouterr() == ("", "")
