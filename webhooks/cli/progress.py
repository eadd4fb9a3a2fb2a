"""A backfill's progress on stderr: a bar with an ETA on a terminal, plain lines otherwise."""

from __future__ import annotations

import sys
import time
from types import TracebackType
from typing import Any, Self

import click

from webhooks.ops.backfill import Summary

STEPS = 1000  # the bar's resolution
EVERY = 2.0  # seconds between plain lines


def counts(summary: Summary) -> str:
    """`fetched 120: 3 new, 110 duplicates, 7 refreshed`."""
    return (
        f"fetched {summary.fetched}: {summary.new} new, {summary.duplicates} duplicates, "
        f"{summary.refreshed} refreshed"
    )


def eta(elapsed: float, done: float | None) -> str | None:
    """Time left at the pace so far, when the share done is known and moving."""
    if done is None or done <= 0.0 or done >= 1.0 or elapsed < 1.0:
        return None
    seconds = int(elapsed * (1.0 - done) / done)
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


class Progress:
    """Call with each summary; silent when `quiet` (JSON output)."""

    def __init__(self, quiet: bool, interactive: bool | None = None) -> None:
        self.quiet = quiet
        self.interactive = sys.stderr.isatty() if interactive is None else interactive
        self._started = time.monotonic()
        self._shown = 0.0
        self._bar: Any = None
        self._step = 0

    def __enter__(self) -> Self:
        if self.interactive and not self.quiet:
            self._bar = click.progressbar(
                length=STEPS,
                label="backfill",
                show_eta=True,
                show_percent=True,
                file=sys.stderr,
            ).__enter__()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._bar is not None:
            self._bar.__exit__(kind, exc, tb)

    def __call__(self, summary: Summary) -> None:
        if self.quiet:
            return
        if self._bar is not None:
            step = int((summary.progress or 0.0) * STEPS)
            self._bar.label = counts(summary)
            self._bar.update(max(step - self._step, 0))
            self._step = max(step, self._step)
            return
        now = time.monotonic()
        if now - self._shown < EVERY:
            return
        self._shown = now
        line = f"  {counts(summary)}"
        if summary.progress is not None:
            line += f"; {summary.progress:.0%} of the range read"
            left = eta(now - self._started, summary.progress)
            if left:
                line += f", ETA {left}"
        click.echo(line, err=True)
