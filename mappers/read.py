"""Defensive reads from provider JSON: typed, with paths in every error."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from mappers.errors import MappingError


def obj(data: Any, path: str) -> dict[str, Any]:
    """The JSON object at dotted `path`; MappingError if missing or not an object."""
    value = at(data, path)
    if not isinstance(value, dict):
        raise MappingError(f"{path} is missing or not an object")
    return value


def at(data: Any, path: str) -> Any:
    """The value at dotted `path`, or None when any step is missing."""
    if "." not in path:  # most reads name one field: spare the split (the hot path)
        return data.get(path) if isinstance(data, dict) else None
    for part in path.split("."):
        if not isinstance(data, dict):
            return None
        data = data.get(part)
    return data


def text(data: Any, path: str) -> str:
    """A required non-empty string (ints are accepted as ids and stringified)."""
    value = opt_text(data, path)
    if value is None:
        raise MappingError(f"{path} is missing or not a string")
    return value


def opt_text(data: Any, path: str) -> str | None:
    """An optional string; ints become strings (Shopify ids), anything else is None."""
    return as_text(at(data, path))


def as_text(value: Any) -> str | None:
    """A bare value (a list entry, a field's value) as opt_text reads one at a path."""
    if isinstance(value, str):  # the common case first: most values read are text
        return value.strip() or None
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


def ref(data: Any, path: str) -> str | None:
    """A Stripe reference: an id string, or the `id` of an expanded object."""
    value = at(data, path)
    return as_text(value.get("id") if isinstance(value, dict) else value)


def opt_int(data: Any, path: str) -> int | None:
    """An optional integer (not a bool)."""
    value = at(data, path)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return None


def opt_time(data: Any, path: str) -> int | None:
    """An optional ISO 8601 time with its offset (Shopify's), as Unix seconds."""
    value = at(data, path)
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        return None  # a time without its offset names no instant
    return int(parsed.timestamp())


def opt_bool(data: Any, path: str) -> bool | None:
    """An optional boolean."""
    value = at(data, path)
    return value if isinstance(value, bool) else None


def items(data: Any, path: str) -> list[dict[str, Any]]:
    """The objects of a list at `path` (a Stripe list object's `data` too); [] if absent."""
    value = at(data, path)
    if isinstance(value, dict) and value.get("object") == "list":
        value = value.get("data")
    if not isinstance(value, list):
        return []
    return [entry for entry in value if isinstance(entry, dict)]


def opt_obj(data: Any, path: str) -> dict[str, Any]:
    """The object at `path`, or {} when missing or not an object."""
    value = at(data, path)
    return value if isinstance(value, dict) else {}
