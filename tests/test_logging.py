"""Log records: one JSON object per line, written whole."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator

import pytest
import structlog

from webhooks.logging import configure_logging


class Writes:
    """A stdout that keeps each write() call apart, as an unbuffered pipe sees them."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def write(self, text: str) -> int:
        self.calls.append(text)
        return len(text)

    def flush(self) -> None:
        pass


@pytest.fixture
def stdout(monkeypatch: pytest.MonkeyPatch) -> Iterator[Writes]:
    """A Writes to install as sys.stdout inside the test (pytest re-installs its own
    capture between set-up and the test); structlog's defaults afterwards."""
    yield Writes()
    monkeypatch.undo()
    structlog.reset_defaults()


def test_each_record_is_one_write_of_one_line(
    stdout: Writes, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Several processes (gunicorn workers, the delivery worker) share one stdout; a
    # record written in two pieces can be split by another process's record.
    monkeypatch.setattr(sys, "stdout", stdout)
    configure_logging("INFO", "json")
    log = structlog.get_logger("test")
    log.info("first", n=1)
    log.warning("second", text="a\nb")
    assert len(stdout.calls) == 2
    for call in stdout.calls:
        assert call.endswith("\n")
        assert call.count("\n") == 1
        json.loads(call)
