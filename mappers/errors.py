"""The one error a mapper may raise."""

from __future__ import annotations


class MappingError(Exception):
    """A verified delivery cannot be mapped; `reason` says why, for operators.

    The delivery stays stored; the worker dead-letters it with this reason, and it is
    replayed after the mapper (or the data) is fixed. Never a half-mapped event.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
