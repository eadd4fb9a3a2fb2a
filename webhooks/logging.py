"""structlog set-up: JSON or console lines on stdout, one event per request."""

from __future__ import annotations

import logging
import sys
from typing import TextIO, cast

import structlog


class _Stderr:
    """Whatever sys.stderr is when a record is written (a test runner swaps it)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def configure_logging(level: str = "INFO", fmt: str = "json", *, to_stderr: bool = False) -> None:
    """Configure structlog once per process; safe to call again with the same values.

    `to_stderr`: operator commands, whose stdout is their answer (`--json` is parsed).
    """
    # _Stderr has the two methods the logger calls, not the whole TextIO interface.
    stream = cast(TextIO, _Stderr()) if to_stderr else sys.stdout
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level)),
        # One write per record, its newline included: print() writes the text and the
        # newline apart, and under PYTHONUNBUFFERED two processes' records interleave.
        logger_factory=structlog.WriteLoggerFactory(stream),
        # Not cached: capture_logs() in tests and a reconfigure must reach every logger.
        cache_logger_on_first_use=False,
    )
