"""What the app endpoint accepts: one event or a batch, validated against the taxonomy.

An event is `{"id", "name", "customer_id" | "anonymous_id", "email"?, "timestamp",
"properties"}`; a batch is `{"events": [...]}` of 1 to MAX_BATCH of them. Everything is
checked before anything is stored: a batch with one bad event is refused whole (422,
every problem listed with its path), so a sender fixes it and sends the same batch
again; events of it stored by an earlier request answer as duplicates.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
)

from mappers.taxonomy import EVENT_MODELS, EventName
from webhooks.errors import InvalidEvent
from webhooks.providers.base import load_json_object, parse_time, storable

NAME = "app"
# The one account of the app endpoint: the merchant's own backend.
ACCOUNT = "backend"
MAX_BATCH = 100
# What only a backend can say; the rest of the taxonomy comes from the providers'
# webhooks (an order_completed sent here too would be a second report of one order).
ACCEPTED = (
    EventName.CHECKOUT_STARTED,
    EventName.CART_UPDATED,
    EventName.PRODUCT_VIEWED,
    EventName.SUBSCRIPTION_SKIPPED,
)


def _storable(value: str) -> str:
    # Refused here with a path, not by the database with a 503.
    if not storable(value):
        raise ValueError("contains a NUL character or invalid Unicode")
    return value


# Ids are read stripped downstream, so blank ones are refused here, not dropped there.
Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]
Key = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=255),
    AfterValidator(_storable),
]
PersonRef = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=150),
    AfterValidator(_storable),
]

Email = Annotated[
    str, Field(max_length=254, pattern=r"^[^@\s]+@[^@\s]+$"), AfterValidator(_storable)
]


class Envelope(BaseModel):
    """One event as the sender writes it (the properties are checked by its model)."""

    model_config = ConfigDict(extra="forbid")

    id: Key = Field(description="The sender's idempotency key: one id, one event.")
    name: Text
    customer_id: PersonRef | None = Field(None, description="The merchant's own user id.")
    anonymous_id: PersonRef | None = Field(None, description="A visitor id before login.")
    email: Email | None = None
    # Read by parse_time below: one error for the field, not one per union member.
    timestamp: Any = Field(description="Unix seconds (an integer) or ISO 8601 (UTC if bare).")
    properties: dict[str, Any] = Field(default_factory=dict)


@dataclass(frozen=True)
class Event:
    """A valid event, ready to key and store."""

    id: str
    name: str
    occurred_at: datetime
    body: bytes


def parse_body(body: bytes, now: float, tolerance: int) -> tuple[list[Event], bool]:
    """The events of a verified body and whether it was a batch; InvalidEvent listing
    every problem when any event is wrong, PayloadError (400) when the body is not a
    JSON object."""
    payload = load_json_object(body)
    if "events" not in payload:
        # A single event is stored exactly as signed.
        event, errors = _event(payload, "", now, tolerance, body)
        if errors:
            raise InvalidEvent(_summary(errors), errors)
        assert event is not None
        return [event], False
    items = payload["events"]
    extra = sorted(set(payload) - {"events"})
    errors = [{"path": key, "message": "not allowed beside events"} for key in extra]
    if not isinstance(items, list) or not items:
        errors.append({"path": "events", "message": "must be a list of 1 to 100 events"})
        raise InvalidEvent(_summary(errors), errors)
    if len(items) > MAX_BATCH:
        errors.append({"path": "events", "message": f"at most {MAX_BATCH} events per batch"})
        raise InvalidEvent(_summary(errors), errors)
    events = []
    for index, item in enumerate(items):
        # A batched event is stored as its own JSON object (ASCII: always storable).
        event, problems = _event(item, f"events[{index}]", now, tolerance, None)
        errors += problems
        if event is not None:
            events.append(event)
    if errors:
        raise InvalidEvent(_summary(errors), errors)
    return events, True


def _event(
    item: Any, prefix: str, now: float, tolerance: int, raw: bytes | None
) -> tuple[Event | None, list[dict[str, str]]]:
    """The event `item` (stored as `raw`, else as its own JSON), or its problems."""
    if not isinstance(item, dict):
        return None, [{"path": prefix or "$", "message": "must be a JSON object"}]
    try:
        envelope = Envelope.model_validate(item)
    except ValidationError as exc:
        return None, _errors(exc, prefix)
    errors: list[dict[str, str]] = []
    if envelope.customer_id is None and envelope.anonymous_id is None:
        errors.append(_error(prefix, "customer_id", "customer_id or anonymous_id is required"))
    stamp = envelope.timestamp
    readable = isinstance(stamp, str) or (isinstance(stamp, int) and not isinstance(stamp, bool))
    occurred_at = parse_time(stamp) if readable else None
    if occurred_at is None or occurred_at.timestamp() < 0:
        errors.append(_error(prefix, "timestamp", "must be Unix seconds (an integer) or ISO 8601"))
    elif occurred_at.timestamp() > now + tolerance:
        errors.append(_error(prefix, "timestamp", "is in the future"))
    errors += _properties(envelope, prefix)
    if errors or occurred_at is None:
        return None, errors
    stored = raw if raw is not None else json.dumps(item, separators=(",", ":")).encode()
    return Event(envelope.id, envelope.name, occurred_at, stored), []


def _properties(envelope: Envelope, prefix: str) -> list[dict[str, str]]:
    accepted = ", ".join(name.value for name in ACCEPTED)
    if envelope.name not in set(EventName):
        return [_error(prefix, "name", f"unknown event; the app endpoint takes {accepted}")]
    name = EventName(envelope.name)
    if name not in ACCEPTED:
        message = f"{name.value} comes from the providers' webhooks; here: {accepted}"
        return [_error(prefix, "name", message)]
    if "source" in envelope.properties:
        return [_error(prefix, "properties.source", "is set by the service")]
    try:
        EVENT_MODELS[name].model_validate({**envelope.properties, "source": NAME})
    except ValidationError as exc:
        return _errors(exc, _join(prefix, "properties"))
    return []


def _errors(exc: ValidationError, prefix: str) -> list[dict[str, str]]:
    return [
        {"path": _join(prefix, _path(error["loc"])), "message": error["msg"]}
        for error in exc.errors(include_url=False, include_input=False)
    ]


def _path(loc: Sequence[int | str]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _join(prefix: str, path: str) -> str:
    if not prefix:
        return path
    if not path:
        return prefix
    return f"{prefix}{path}" if path.startswith("[") else f"{prefix}.{path}"


def _error(prefix: str, path: str, message: str) -> dict[str, str]:
    return {"path": _join(prefix, path), "message": message}


def _summary(errors: list[dict[str, str]]) -> str:
    first = errors[0]
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{first['path']}: {first['message']}{more}"
