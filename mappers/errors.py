"""The one error a mapper may raise, a branch of the service's exception tree."""

from __future__ import annotations

# webhooks.errors is the lowest module of the service (it imports nothing), so the pure
# mappers may take their error class from it without depending on anything else.
from webhooks.errors import PermanentError


class MappingError(PermanentError):
    """A verified delivery cannot be mapped; `reason` says why, for operators.

    The delivery stays stored; the worker dead-letters it with this reason, and it is
    replayed after the mapper (or the data) is fixed. Never a half-mapped event.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
