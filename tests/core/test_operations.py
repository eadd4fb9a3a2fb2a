"""Customer.io operations for resolved people: shapes and Customer.io's limits."""

from __future__ import annotations

import time

import pytest

from mappers.actions import Person, Track
from mappers.taxonomy import EventName, OrderCompleted
from webhooks.core.operations import (
    OperationKind,
    check_limits,
    delete_op,
    event_op,
    identify_op,
    merge_op,
    unsendable_op,
)
from webhooks.core.ratelimit import TokenBucket
from webhooks.stage1.state.identity import ANONYMOUS, CUSTOMER, EMAIL, INTERNAL, Identity

STRIPE = Person(source="stripe", account="platform", customer_id="cus_1")


def track(person: Person = STRIPE, **props: object) -> Track:
    return Track(
        person=person,
        event=EventName.ORDER_COMPLETED,
        timestamp=1_764_320_000,
        properties=OrderCompleted(source=person.source, order_id="pi_1", **props),  # type: ignore[arg-type]
        semantic_key=f"order_completed:{person.source}:{person.account}:pi_1",
    )


ADA = Identity("stripe:cus_1", CUSTOMER)


def test_identify_carries_the_attributes_and_the_timestamp_given() -> None:
    op = identify_op("identify:k:stripe:cus_1", ADA, {"email": "a@example.test"}, 1_764_320_000)
    assert op.kind == OperationKind.IDENTIFY
    assert op.payload == {
        "type": "person",
        "identifiers": {"id": "stripe:cus_1"},
        "action": "identify",
        "attributes": {"email": "a@example.test"},
        "timestamp": 1_764_320_000,
    }
    assert op.problem is None


def test_event_is_keyed_by_its_business_fact() -> None:
    t = track()
    op = event_op(t, Identity("u_7", INTERNAL), t.payload())
    assert (op.kind, op.op_key, op.person_id) == (
        OperationKind.EVENT,
        "order_completed:stripe:platform:pi_1",
        "u_7",
    )
    assert op.payload["identifiers"] == {"id": "u_7"}
    assert op.payload["attributes"]["order_id"] == "pi_1"


def test_email_keyed_profiles_are_addressed_by_email() -> None:
    t = track()
    op = event_op(t, Identity("g@example.test", EMAIL), t.payload())
    assert op.payload["identifiers"] == {"email": "g@example.test"}


def test_guest_event_is_anonymous_by_token() -> None:
    guest = Person(source="shopify", account="s", checkout_token="tok1", email="g@example.test")
    t = track(guest)
    op = event_op(t, Identity("shopify:tok1", ANONYMOUS), t.payload())
    assert op.kind == OperationKind.ANONYMOUS_EVENT
    assert op.payload["anonymous_id"] == "shopify:tok1"
    assert "identifiers" not in op.payload


def test_event_naming_nobody_is_held_with_a_reason() -> None:
    t = track(Person(source="stripe", account="platform"))
    op = unsendable_op(t, t.payload(), "no person id, link or token to send it by")
    assert (op.person_id, op.problem) == (None, "no person id, link or token to send it by")


def test_redaction_becomes_a_delete() -> None:
    op = delete_op(ADA, 5)
    assert (op.kind, op.payload["action"], op.payload["identifiers"]) == (
        OperationKind.DELETE,
        "delete",
        {"id": "stripe:cus_1"},
    )


def test_merge_names_the_primary_and_the_secondary() -> None:
    op = merge_op(Identity("u_7", INTERNAL), Identity("a@example.test", EMAIL), 9)
    assert op.kind == OperationKind.MERGE
    assert op.payload == {
        "type": "person",
        "action": "merge",
        "primary": {"id": "u_7"},
        "secondary": {"email": "a@example.test"},
    }
    assert op.op_key == "merge:a@example.test:u_7"


@pytest.mark.parametrize(
    ("kind", "payload", "pid", "problem"),
    [
        ("identify", {"attributes": {"x" * 151: 1}}, "p", "attribute name"),
        ("identify", {"attributes": {"note": "y" * 1001}}, "p", "value over"),
        # Limits count UTF-8 bytes, not characters: 152 bytes in 76, 1,002 in 334.
        ("identify", {"attributes": {"é" * 76: 1}}, "p", "attribute name"),
        ("identify", {"attributes": {"note": "€" * 334}}, "p", "value over"),
        ("identify", {"attributes": {f"a{i}": i for i in range(301)}}, "p", "300 attributes"),
        ("event", {"name": "e" * 101, "attributes": {}}, "p", "event name"),
        ("event", {"name": "e", "attributes": {"blob": "z" * 100_001}}, "p", "event data"),
        ("event", {"name": "e", "attributes": {"blob": "z" * 40_000}}, "p", "operation over"),
        ("event", {"name": "e", "attributes": {}}, "i" * 151, "person id"),
    ],
)
def test_customerio_limits_are_enforced_before_sending(
    kind: str, payload: dict[str, object], pid: str, problem: str
) -> None:
    found = check_limits(kind, payload, pid)
    assert found is not None
    assert problem in found


def test_attributes_at_the_byte_limits_pass() -> None:
    attributes = {"x" * 150: 1, "é" * 75: 2, "note": "€" * 333, "other": "y" * 1000}
    assert check_limits("identify", {"attributes": attributes}, "p") is None


def test_an_operation_over_a_limit_is_marked_not_sent() -> None:
    op = identify_op("k", ADA, {"note": "y" * 1001}, 5)
    assert op.problem is not None
    assert "value over" in op.problem


def test_an_operation_within_the_limits_passes() -> None:
    t = track(total=None)
    op = event_op(t, ADA, t.payload())
    assert op.problem is None
    assert check_limits(op.kind, op.payload, op.person_id) is None


def test_rate_limiter_spaces_calls() -> None:
    limiter = TokenBucket(50, capacity=2)  # as the Customer.io client uses it
    started = time.monotonic()
    for _ in range(11):
        limiter.acquire()
    # Two at once (the bucket is full), then one every 1/rate.
    assert time.monotonic() - started >= 9 / 50 * 0.9


def test_a_lone_surrogate_is_measured_not_refused_whatever_the_length() -> None:
    # JSON's "\ud800" parses to one; short and long text are measured alike (3 bytes).
    assert check_limits("identify", {"attributes": {"note": "\ud800"}}, "p") is None
    found = check_limits("identify", {"attributes": {"note": "\ud800" * 334}}, "p")
    assert found is not None
    assert "value over" in found
