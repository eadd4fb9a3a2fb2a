"""Shape and limit checks of the fake Customer.io, after the Track API's documented rules."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

# Documented limits (../shared/reference/customerio.md §1-3). "KB" is read as KiB: the docs do not
# say, and a client should keep a margin below either reading anyway.
MAX_REQUEST_BYTES = 500 * 1024
MAX_ITEM_BYTES = 32 * 1024
MAX_ID_BYTES = 150
MAX_EVENT_NAME_BYTES = 100
MAX_ATTRIBUTE_NAME_BYTES = 150
MAX_ATTRIBUTE_VALUE_BYTES = 1000
MAX_ATTRIBUTES = 300
MAX_EVENT_DATA_BYTES = 100_000
# Unix seconds stay below 10**11 until the year 5138; a larger value is almost surely milliseconds.
MAX_TIMESTAMP = 10**11

# Crockford base32 without I, L, O, U; a 128-bit value leaves at most 3 bits in the first char.
_ULID = re.compile(r"[0-7][0-9A-HJKMNP-TV-Z]{25}", re.IGNORECASE)
IDENTIFIER_KEYS = frozenset({"id", "email", "cio_id"})
PERSON_ACTIONS = frozenset({"identify", "event", "delete", "suppress", "unsuppress", "merge"})
# A merge names two people, each with exactly one identifier, instead of `identifiers`.
MERGE_SIDES = ("primary", "secondary")
EVENT_TYPES = frozenset({"event", "page", "screen"})
# Identify fields whose values are structures, not attributes, so the value limit does not apply.
_STRUCTURED_ATTRIBUTES = frozenset({"cio_relationships", "cio_subscription_preferences"})


@dataclass(frozen=True)
class FieldError:
    """One problem with one field of a request or batch item."""

    field: str
    reason: str
    message: str

    def as_batch_error(self, index: int) -> dict[str, Any]:
        """The entry of a 207 response's `errors` list."""
        return {
            "batch_index": index,
            "reason": self.reason,
            "field": self.field,
            "message": self.message,
        }


def json_size(value: Any) -> int:
    """Bytes of `value` as compact UTF-8 JSON."""
    return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())


def _bytes(text: str) -> int:
    return len(text.encode())


def is_ulid(value: Any) -> bool:
    """Whether `value` is a 26-character Crockford base32 ULID (any case)."""
    return isinstance(value, str) and _ULID.fullmatch(value) is not None


def check_ulid(value: Any, field: str) -> list[FieldError]:
    """The event `id`: required by this fake because our client always sends one."""
    if value is None:
        return [FieldError(field, "required", "an event id (ULID) is required")]
    if not is_ulid(value):
        return [FieldError(field, "invalid", f"{value!r} is not a ULID")]
    return []


def check_timestamp(value: Any, field: str) -> list[FieldError]:
    """An optional integer Unix timestamp in seconds."""
    if value is None:
        return []
    # bool is an int subclass; floats are refused because the API wants whole seconds.
    if isinstance(value, bool) or not isinstance(value, int):
        return [FieldError(field, "invalid", "a timestamp must be integer Unix seconds")]
    if value < 0:
        return [FieldError(field, "invalid", "a timestamp cannot be negative")]
    if value > MAX_TIMESTAMP:
        return [FieldError(field, "invalid", "the timestamp looks like milliseconds, not seconds")]
    return []


def check_event_name(value: Any, field: str = "name") -> list[FieldError]:
    """A required, non-blank event name of at most 100 bytes."""
    if not isinstance(value, str) or not value.strip():
        return [FieldError(field, "required", "an event name is required")]
    if _bytes(value) > MAX_EVENT_NAME_BYTES:
        return [FieldError(field, "too_long", f"event names are at most {MAX_EVENT_NAME_BYTES} B")]
    return []


def check_event_data(value: Any, field: str) -> list[FieldError]:
    """Optional event data: an object of at most 100,000 bytes."""
    if value is None:
        return []
    if not isinstance(value, dict):
        return [FieldError(field, "invalid", "event data must be an object")]
    if json_size(value) > MAX_EVENT_DATA_BYTES:
        return [FieldError(field, "too_large", f"event data is over {MAX_EVENT_DATA_BYTES} B")]
    return []


def check_attributes(value: Any, field: str) -> list[FieldError]:
    """Optional person attributes: count, name and value limits."""
    if value is None:
        return []
    if not isinstance(value, dict):
        return [FieldError(field, "invalid", "attributes must be an object")]
    errors: list[FieldError] = []
    if len(value) > MAX_ATTRIBUTES:
        errors.append(FieldError(field, "too_many", f"more than {MAX_ATTRIBUTES} attributes"))
    for name, item in value.items():
        if _bytes(name) > MAX_ATTRIBUTE_NAME_BYTES:
            message = f"attribute names are at most {MAX_ATTRIBUTE_NAME_BYTES} B"
            errors.append(FieldError(f"{field}.{name[:40]}", "too_long", message))
        elif name not in _STRUCTURED_ATTRIBUTES:
            size = _bytes(item) if isinstance(item, str) else json_size(item)
            if size > MAX_ATTRIBUTE_VALUE_BYTES:
                message = f"attribute values are at most {MAX_ATTRIBUTE_VALUE_BYTES} B"
                errors.append(FieldError(f"{field}.{name}", "too_long", message))
    return errors


def _check_person_id(value: Any, field: str) -> list[FieldError]:
    if not isinstance(value, str) or not value:
        return [FieldError(field, "invalid", "an id must be a non-empty string")]
    if _bytes(value) > MAX_ID_BYTES:
        return [FieldError(field, "too_long", f"ids are at most {MAX_ID_BYTES} B")]
    return []


def check_identifiers(value: Any, field: str = "identifiers") -> list[FieldError]:
    """v2 `identifiers` (or a merge side): exactly one of id, email, cio_id; no `cio_` id."""
    if not isinstance(value, dict) or len(value) != 1:
        return [FieldError(field, "invalid", "exactly one of id, email, cio_id")]
    ((key, item),) = value.items()
    if key not in IDENTIFIER_KEYS:
        return [FieldError(f"{field}.{key}", "invalid", "use one of id, email, cio_id")]
    if key == "id":
        if isinstance(item, str) and item.startswith("cio_"):
            message = "an id cannot start with cio_ (that addresses a cio_id)"
            return [FieldError(f"{field}.id", "invalid", message)]
        return _check_person_id(item, f"{field}.id")
    if key == "email" and (not isinstance(item, str) or "@" not in item):
        return [FieldError(f"{field}.email", "invalid", "not an email address")]
    if key == "cio_id" and (not isinstance(item, str) or not item):
        return [FieldError(f"{field}.cio_id", "invalid", "a cio_id must be a non-empty string")]
    return []


def check_merge(body: dict[str, Any]) -> list[FieldError]:
    """The two sides of a merge (v1 `merge_customers` body or v2 item), one identifier each."""
    errors: list[FieldError] = []
    for side in MERGE_SIDES:
        errors += check_identifiers(body.get(side), side)
    return errors


def check_path_identifier(identifier: str) -> list[FieldError]:
    """A v1 path identifier; its type comes from its shape (cio_ prefix, @, else an id)."""
    if identifier.startswith("cio_"):
        ok = len(identifier) > len("cio_")
        return [] if ok else [FieldError("identifier", "invalid", "an empty cio_id")]
    if "@" in identifier:
        return []
    return _check_person_id(identifier, "identifier")


def validate_batch_item(item: Any) -> list[FieldError]:
    """Every problem with one `/api/v2/batch` item; empty when it is acceptable."""
    if not isinstance(item, dict):
        return [FieldError("", "invalid", "a batch item must be an object")]
    if json_size(item) > MAX_ITEM_BYTES:
        return [FieldError("", "too_large", f"a batch item must be at most {MAX_ITEM_BYTES} B")]
    if item.get("type") != "person":
        return [FieldError("type", "unsupported", "this fake supports type 'person' only")]
    action = item.get("action")
    if action not in PERSON_ACTIONS:
        return [FieldError("action", "unsupported", f"unsupported action {action!r}")]
    if action == "merge":
        return check_merge(item)
    errors = check_identifiers(item.get("identifiers"))
    if action == "identify":
        errors += check_attributes(item.get("attributes"), "attributes")
        errors += check_timestamp(item.get("timestamp"), "timestamp")
    elif action == "event":
        errors += check_event_name(item.get("name"))
        errors += check_ulid(item.get("id"), "id")
        errors += check_timestamp(item.get("timestamp"), "timestamp")
        errors += check_event_data(item.get("attributes"), "attributes")
    return errors


def validate_v1_event(body: Any, *, anonymous: bool) -> list[FieldError]:
    """Every problem with a v1 event body (`/customers/{id}/events` or `/events`)."""
    if not isinstance(body, dict):
        return [FieldError("", "invalid", "the body must be a JSON object")]
    errors = check_event_name(body.get("name"))
    errors += check_ulid(body.get("id"), "id")
    errors += check_timestamp(body.get("timestamp"), "timestamp")
    errors += check_event_data(body.get("data"), "data")
    if body.get("type", "event") not in EVENT_TYPES:
        errors.append(FieldError("type", "invalid", "type is event, page or screen"))
    # An empty or null anonymous_id is allowed: that is how invite events are sent.
    if anonymous and not isinstance(body.get("anonymous_id", ""), str | None):
        errors.append(FieldError("anonymous_id", "invalid", "anonymous_id must be a string"))
    return errors


def validate_v1_identify(body: Any) -> list[FieldError]:
    """Every problem with a v1 identify body (attributes plus `_timestamp`)."""
    if not isinstance(body, dict):
        return [FieldError("", "invalid", "the body must be a JSON object")]
    attributes = {key: value for key, value in body.items() if key != "_timestamp"}
    errors = check_attributes(attributes, "attributes")
    errors += check_timestamp(body.get("_timestamp"), "_timestamp")
    return errors


def validate_v1_merge(body: Any) -> list[FieldError]:
    """Every problem with a `POST /api/v1/merge_customers` body."""
    if not isinstance(body, dict):
        return [FieldError("", "invalid", "the body must be a JSON object")]
    return check_merge(body)
