"""Customer.io Track API operations, built for resolved people, with its limits enforced.

Who an operation is for is decided before this module (webhooks.stage1.state): here an
identity becomes a Track API identifier, and an operation that breaks one of
Customer.io's limits is marked with the problem instead of being sent to be refused.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from mappers.actions import Track
from webhooks.core.fit import fit_items
from webhooks.core.identity import MAX_ID_BYTES, Identity
from webhooks.core.jsontext import size

# Customer.io Track API limits (customerio.md §3), enforced before sending; the one on
# ids, MAX_ID_BYTES, lives with the identities that keep within it.
MAX_ATTRIBUTE_NAME_BYTES = 150
MAX_ATTRIBUTE_VALUE_BYTES = 1000
MAX_ATTRIBUTES = 300
MAX_EVENT_NAME_BYTES = 100
MAX_EVENT_DATA_BYTES = 100_000
MAX_ITEM_BYTES = 32_000


class OperationKind(StrEnum):
    """What an outbox row asks Customer.io to do."""

    IDENTIFY = "identify"
    EVENT = "event"  # v2 batch, person known
    ANONYMOUS_EVENT = "anonymous_event"  # v1 /api/v1/events
    DELETE = "delete"
    MERGE = "merge"  # v2 batch: fold a weaker profile into the person's


@dataclass(frozen=True)
class Operation:
    """One Customer.io operation, ready for the outbox."""

    op_key: str
    kind: OperationKind
    person_id: str | None
    payload: dict[str, Any]
    occurred_at: datetime
    problem: str | None = None  # a broken limit, or no one to send it to: dead-lettered
    subject: str | None = None  # the checkout a cart event is about (journey guards)
    hold_seconds: float = 0.0  # not sent before this long after it is written
    suppressed: str | None = None  # withheld by a journey guard, and why

    def checked(self) -> Operation:
        """This operation, marked with the first Customer.io limit it breaks."""
        problem = self.problem or check_limits(self.kind, self.payload, self.person_id)
        return self if problem == self.problem else replace(self, problem=problem)


def _attribute_problem(attributes: dict[str, Any]) -> str | None:
    if len(attributes) > MAX_ATTRIBUTES:
        return f"more than {MAX_ATTRIBUTES} attributes"
    for name, value in attributes.items():
        # A character is at most 4 UTF-8 bytes: short text needs no encoding to pass.
        if len(name) * 4 > MAX_ATTRIBUTE_NAME_BYTES and _bytes(name) > MAX_ATTRIBUTE_NAME_BYTES:
            return f"attribute name over {MAX_ATTRIBUTE_NAME_BYTES} bytes"
        if isinstance(value, bool | int | float) or value is None:
            continue  # a number is never 1000 bytes; serialising each cost stage 1 time
        text = value if isinstance(value, str) else json.dumps(value)
        if len(text) * 4 > MAX_ATTRIBUTE_VALUE_BYTES and _bytes(text) > MAX_ATTRIBUTE_VALUE_BYTES:
            return f"attribute {name!r} value over {MAX_ATTRIBUTE_VALUE_BYTES} bytes"
    return None


def _bytes(text: str) -> int:
    # A lone surrogate (JSON's "\ud800", which the parser accepts) counts its 3 bytes
    # rather than failing, whatever the length of the text around it.
    return len(text.encode("utf-8", "surrogatepass"))


def check_limits(kind: str, payload: dict[str, Any], pid: str | None) -> str | None:
    """The first Customer.io limit `payload` breaks, or None."""
    if pid is not None and len(pid.encode("utf-8")) > MAX_ID_BYTES:
        return f"person id over {MAX_ID_BYTES} bytes"
    if kind == OperationKind.IDENTIFY:
        problem = _attribute_problem(payload.get("attributes", {}))
        if problem:
            return problem
    event = kind in (OperationKind.EVENT, OperationKind.ANONYMOUS_EVENT)
    if event and len(payload["name"].encode("utf-8")) > MAX_EVENT_NAME_BYTES:
        return f"event name over {MAX_EVENT_NAME_BYTES} bytes"
    # One serialisation in the common case: data within an item under 32 KB is also
    # under the 100 KB data limit, so the data is measured only for a bigger item.
    if size(payload) <= MAX_ITEM_BYTES:
        return None
    if event and size(event_data(payload)) > MAX_EVENT_DATA_BYTES:
        return f"event data over {MAX_EVENT_DATA_BYTES} bytes"
    return f"operation over {MAX_ITEM_BYTES} bytes"


def event_data(payload: dict[str, Any]) -> dict[str, Any]:
    """An event operation's data: `attributes` of a v2 person event, `data` of a v1 one."""
    data: dict[str, Any] = payload.get("attributes", payload.get("data", {}))
    return data


def at(timestamp: int) -> datetime:
    """A Unix time as an aware UTC datetime."""
    return datetime.fromtimestamp(timestamp, UTC)


def identify_op(
    key: str, identity: Identity, attributes: dict[str, Any], timestamp: int
) -> Operation:
    """Set `attributes` on the person; `timestamp` orders updates at Customer.io."""
    payload = {
        "type": "person",
        "identifiers": identity.identifier,
        "action": "identify",
        "attributes": attributes,
        "timestamp": timestamp,
    }
    return Operation(
        key, OperationKind.IDENTIFY, identity.person_id, payload, at(timestamp)
    ).checked()


def event_op(track: Track, identity: Identity, data: dict[str, Any]) -> Operation:
    """The event for a person, or an anonymous event for a guest's anonymous id.

    Line items are reduced to fit Customer.io's item limit (webhooks.core.fit) rather
    than the event being dead-lettered for its size.
    """

    payload, kind = _event_payload(track, identity, data)
    op = Operation(track.semantic_key, kind, identity.person_id, payload, at(track.timestamp))
    op = op.checked()
    if op.problem is None or not data.get("items"):
        return op  # the common case: one serialisation, in checked()

    def fits(trial: dict[str, Any]) -> bool:
        return size(_event_payload(track, identity, trial)[0]) <= MAX_ITEM_BYTES

    payload, kind = _event_payload(track, identity, fit_items(data, fits))
    return replace(op, payload=payload, problem=None).checked()


def _event_payload(
    track: Track, identity: Identity, data: dict[str, Any]
) -> tuple[dict[str, Any], OperationKind]:
    """The Track API payload of the event, and its kind (v2 person event or v1 anonymous)."""
    payload: dict[str, Any]
    if identity.anonymous:
        payload = {
            "name": track.event.value,
            "anonymous_id": identity.person_id,
            "timestamp": track.timestamp,
            "data": data,
        }
        kind = OperationKind.ANONYMOUS_EVENT
    else:
        payload = {
            "type": "person",
            "identifiers": identity.identifier,
            "action": "event",
            "name": track.event.value,
            "timestamp": track.timestamp,
            "attributes": data,
        }
        kind = OperationKind.EVENT
    return payload, kind


def unsendable_op(track: Track, data: dict[str, Any], problem: str) -> Operation:
    """An event no one can receive: kept as a dead letter that says why."""
    payload = {"name": track.event.value, "attributes": data}
    return Operation(
        track.semantic_key, OperationKind.EVENT, None, payload, at(track.timestamp), problem
    )


def delete_op(identity: Identity, timestamp: int, action: str = "delete") -> Operation:
    """Delete the person (a privacy redaction); `action` "suppress" also bars the id."""
    payload = {"type": "person", "identifiers": identity.identifier, "action": action}
    key = f"{action}:{identity.person_id}:{timestamp}"
    return Operation(key, OperationKind.DELETE, identity.person_id, payload, at(timestamp))


def merge_op(primary: Identity, secondary: Identity, timestamp: int) -> Operation:
    """Fold the secondary profile (and its history) into the primary, which must exist."""
    payload = {
        "type": "person",
        "action": "merge",
        "primary": primary.identifier,
        "secondary": secondary.identifier,
    }
    key = f"merge:{secondary.person_id}:{primary.person_id}"
    return Operation(key, OperationKind.MERGE, primary.person_id, payload, at(timestamp))
