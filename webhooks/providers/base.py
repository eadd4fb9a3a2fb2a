"""The provider interface: how to verify a request and how to key the delivery it carries."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from webhooks.errors import PayloadError

# Headers arrive lower-cased (the view normalises them), because HTTP/2 lower-cases
# names and Shopify's newer Events delivery drops the X- prefix.
Headers = Mapping[str, str]


@dataclass(frozen=True, slots=True)
class Delivery:
    """One verified delivery, ready to be stored in the inbox exactly as received."""

    provider: str
    account: str
    event_type: str
    delivery_id: str
    body: bytes
    event_id: str | None = None
    api_version: str | None = None
    occurred_at: datetime | None = None
    headers: dict[str, str] = field(default_factory=dict)


class Provider(Protocol):
    """What every provider module offers; registered by name in `webhooks.providers`."""

    name: str

    def verify(self, body: bytes, headers: Headers) -> None:
        """Raise a MissingSignature / MalformedSignature / VerificationError, or return."""
        ...

    def parse(self, body: bytes, headers: Headers) -> Delivery:
        """Read the dedup key and metadata of a verified body, or raise PayloadError."""
        ...


def load_json_object(body: bytes) -> dict[str, Any]:
    """Parse a body that must be a JSON object; anything else is a PayloadError."""
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise PayloadError("body is not valid JSON", code="invalid_json") from None
    if not isinstance(payload, dict):
        raise PayloadError("body is not a JSON object", code="invalid_json")
    return payload


def required_str(value: Any, what: str) -> str:
    """Return a non-empty string key field, or raise PayloadError naming it."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value.strip():
        raise PayloadError(f"no {what} to key the delivery by", code=f"missing_{what}")
    # PostgreSQL refuses NUL in text and the columns hold 255 characters; refusing here
    # gives a clear 400 instead of a storage error the provider would retry forever.
    if len(value) > 255 or "\x00" in value or not _encodable(value):
        raise PayloadError(f"{what} is not a usable key", code=f"invalid_{what}")
    return value.strip()


def _encodable(value: str) -> bool:
    # JSON may carry lone surrogates ("\udfff") that no database driver can store.
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def optional_str(value: Any, limit: int = 255) -> str | None:
    """A short informational string, or None when absent or unstorable."""
    if not isinstance(value, str) or not value or len(value) > limit or "\x00" in value:
        return None
    return value if _encodable(value) else None


def parse_time(value: Any) -> datetime | None:
    """Unix seconds or an ISO 8601 string as an aware UTC datetime; None when unreadable."""
    try:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return datetime.fromtimestamp(value, tz=UTC)
        if isinstance(value, str) and value:
            parsed = datetime.fromisoformat(value)
            if parsed.tzinfo is None:
                parsed = parsed.replace(tzinfo=UTC)
            return parsed.astimezone(UTC)
    except (ValueError, OverflowError, OSError):
        return None
    return None
