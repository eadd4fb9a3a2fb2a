"""Canonical actions to Customer.io Track API operations, with Customer.io's limits enforced.

Person ids here are an interim rule until identity resolution lands: the merchant's
internal id when the payload carries it, else the provider customer id with a provider
prefix (never a bare value that could start with `cio_`). Without either, an event is
sent as an anonymous event keyed by the checkout/cart token (Customer.io merges it into
the person once an identify carries the same anonymous_id).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from mappers.actions import Action, Identify, Person, RedactPerson, Track

# Customer.io Track API limits (customerio.md §3), enforced before sending.
MAX_ID_BYTES = 150
MAX_ATTRIBUTE_NAME_BYTES = 150
MAX_ATTRIBUTE_VALUE_BYTES = 1000
MAX_ATTRIBUTES = 300
MAX_EVENT_NAME_BYTES = 100
MAX_EVENT_DATA_BYTES = 100_000
MAX_ITEM_BYTES = 32_000


class OperationKind:
    """What an outbox row asks Customer.io to do."""

    IDENTIFY = "identify"
    EVENT = "event"  # v2 batch, person known
    ANONYMOUS_EVENT = "anonymous_event"  # v1 /api/v1/events
    DELETE = "delete"


@dataclass(frozen=True)
class Operation:
    """One Customer.io operation, ready for the outbox."""

    op_key: str
    kind: str
    person_id: str | None
    payload: dict[str, Any]
    occurred_at: datetime
    problem: str | None = None  # a broken limit: dead-lettered instead of sent


def person_id(person: Person) -> str | None:
    """The Customer.io id for a person, or None when the payload names nobody."""
    if person.internal_id:
        candidate = person.internal_id
        if person.source == "stripe" and person.account != "platform":
            # Connected accounts are other merchants: their ids may collide.
            candidate = f"{person.account}:{candidate}"
    elif person.customer_id:
        candidate = f"{person.source}:{person.account}:{person.customer_id}"
        if person.source == "stripe" and person.account == "platform":
            candidate = f"stripe:{person.customer_id}"
    else:
        return None
    # Customer.io reads a leading cio_ as its own immutable id; never send one.
    return f"id:{candidate}" if candidate.lower().startswith("cio_") else candidate


def anonymous_id(person: Person) -> str | None:
    """An anonymous id from the checkout or cart token, for guests."""
    token = person.checkout_token or person.cart_token
    return f"{person.source}:{token}" if token else None


def _size(value: Any) -> int:
    return len(json.dumps(value, separators=(",", ":")).encode("utf-8"))


def _attribute_problem(attributes: dict[str, Any]) -> str | None:
    if len(attributes) > MAX_ATTRIBUTES:
        return f"more than {MAX_ATTRIBUTES} attributes"
    for name, value in attributes.items():
        if len(name.encode("utf-8")) > MAX_ATTRIBUTE_NAME_BYTES:
            return f"attribute name over {MAX_ATTRIBUTE_NAME_BYTES} bytes"
        text = value if isinstance(value, str) else json.dumps(value)
        if len(text.encode("utf-8")) > MAX_ATTRIBUTE_VALUE_BYTES:
            return f"attribute {name!r} value over {MAX_ATTRIBUTE_VALUE_BYTES} bytes"
    return None


def check_limits(kind: str, payload: dict[str, Any], pid: str | None) -> str | None:
    """The first Customer.io limit `payload` breaks, or None."""
    if pid is not None and len(pid.encode("utf-8")) > MAX_ID_BYTES:
        return f"person id over {MAX_ID_BYTES} bytes"
    if kind == OperationKind.IDENTIFY:
        problem = _attribute_problem(payload.get("attributes", {}))
        if problem:
            return problem
    if kind in (OperationKind.EVENT, OperationKind.ANONYMOUS_EVENT):
        if len(payload["name"].encode("utf-8")) > MAX_EVENT_NAME_BYTES:
            return f"event name over {MAX_EVENT_NAME_BYTES} bytes"
        data = payload.get("attributes", payload.get("data", {}))
        if _size(data) > MAX_EVENT_DATA_BYTES:
            return f"event data over {MAX_EVENT_DATA_BYTES} bytes"
    if _size(payload) > MAX_ITEM_BYTES:
        return f"operation over {MAX_ITEM_BYTES} bytes"
    return None


def _at(timestamp: int) -> datetime:
    return datetime.fromtimestamp(timestamp, UTC)


def to_operations(actions: list[Action], delivery_key: str) -> list[Operation]:
    """Customer.io operations for one delivery's actions, identify before events."""
    ops: list[Operation] = []
    for index, action in enumerate(actions):
        op = _operation(action, f"{delivery_key}:{index}")
        if op is not None:
            problem = check_limits(op.kind, op.payload, op.person_id)
            ops.append(op if problem is None else _with_problem(op, problem))
    # A person's identify goes before the event that introduced them.
    return sorted(ops, key=lambda o: (o.occurred_at, o.kind != OperationKind.IDENTIFY))


def _with_problem(op: Operation, problem: str) -> Operation:
    return Operation(op.op_key, op.kind, op.person_id, op.payload, op.occurred_at, problem)


def _operation(action: Action, fallback_key: str) -> Operation | None:
    if isinstance(action, Identify):
        return _identify(action, fallback_key)
    if isinstance(action, Track):
        return _event(action)
    if isinstance(action, RedactPerson):
        pid = person_id(action.person)
        if pid is None:
            return None
        payload = {"type": "person", "identifiers": {"id": pid}, "action": "delete"}
        key = f"delete:{pid}:{action.timestamp}"
        return Operation(key, OperationKind.DELETE, pid, payload, _at(action.timestamp))
    return None  # shop redaction and data export are executed locally, not sent


def _identify(action: Identify, fallback_key: str) -> Operation | None:
    pid = person_id(action.person)
    if pid is None:
        return None  # a guest's attributes wait for an id (identity resolution)
    attributes = action.attributes.model_dump(exclude_none=True)
    if action.person.email and "email" not in attributes:
        attributes["email"] = action.person.email
    anon = anonymous_id(action.person)
    if anon:
        attributes["anonymous_id"] = anon  # merges the guest's earlier events
    payload = {
        "type": "person",
        "identifiers": {"id": pid},
        "action": "identify",
        "attributes": attributes,
        # The event time orders attribute updates that arrive out of order.
        "timestamp": action.timestamp,
    }
    key = f"identify:{fallback_key}"
    return Operation(key, OperationKind.IDENTIFY, pid, payload, _at(action.timestamp))


def _event(action: Track) -> Operation | None:
    pid = person_id(action.person)
    data = action.payload()
    if pid is not None:
        payload = {
            "type": "person",
            "identifiers": {"id": pid},
            "action": "event",
            "name": action.event.value,
            "timestamp": action.timestamp,
            "attributes": data,
        }
        kind = OperationKind.EVENT
    else:
        anon = anonymous_id(action.person)
        if anon is None:
            return Operation(
                action.semantic_key,
                OperationKind.EVENT,
                None,
                {"name": action.event.value, "attributes": data},
                _at(action.timestamp),
                problem="no person id or token to send it by",
            )
        payload = {
            "name": action.event.value,
            "anonymous_id": anon,
            "timestamp": action.timestamp,
            "data": data,
        }
        kind = OperationKind.ANONYMOUS_EVENT
    return Operation(
        action.semantic_key,
        kind,
        pid or payload.get("anonymous_id"),
        payload,
        _at(action.timestamp),
    )
