"""Actions to Customer.io operations: ids, shapes and Customer.io's limits."""

from __future__ import annotations

import time

import pytest

from mappers.actions import Identify, Person, RedactPerson, Track
from mappers.taxonomy import EventName, OrderCompleted, PersonAttributes
from webhooks.delivery.customerio import RateLimiter
from webhooks.delivery.operations import OperationKind, check_limits, person_id, to_operations

STRIPE = Person(source="stripe", account="platform", customer_id="cus_1")


def track(person: Person = STRIPE, **props: object) -> Track:
    return Track(
        person=person,
        event=EventName.ORDER_COMPLETED,
        timestamp=1_764_320_000,
        properties=OrderCompleted(source=person.source, order_id="pi_1", **props),  # type: ignore[arg-type]
        semantic_key=f"order_completed:{person.source}:{person.account}:pi_1",
    )


@pytest.mark.parametrize(
    ("person", "expected"),
    [
        (
            Person(source="stripe", account="platform", customer_id="cus_1", internal_id="u_7"),
            "u_7",
        ),
        (STRIPE, "stripe:cus_1"),
        (Person(source="stripe", account="acct_9", customer_id="cus_1"), "stripe:acct_9:cus_1"),
        (
            Person(source="shopify", account="shop.myshopify.com", customer_id="42"),
            "shopify:shop.myshopify.com:42",
        ),
        (Person(source="stripe", account="platform", internal_id="cio_abc"), "id:cio_abc"),
        (Person(source="shopify", account="s", email="a@example.test"), None),
    ],
)
def test_person_ids_never_split_on_email_nor_start_with_cio(
    person: Person, expected: str | None
) -> None:
    assert person_id(person) == expected


def test_identify_goes_before_the_event_it_introduces() -> None:
    identify = Identify(
        person=STRIPE, attributes=PersonAttributes(email="a@example.test"), timestamp=1_764_320_000
    )
    ops = to_operations([track(), identify], "stripe:platform:x:evt_1")
    assert [op.kind for op in ops] == [OperationKind.IDENTIFY, OperationKind.EVENT]
    assert ops[0].payload["timestamp"] == 1_764_320_000
    assert ops[0].payload["attributes"] == {"email": "a@example.test"}
    assert ops[1].op_key == "order_completed:stripe:platform:pi_1"


def test_guest_event_is_anonymous_by_token() -> None:
    guest = Person(source="shopify", account="s", checkout_token="tok1", email="g@example.test")
    [op] = to_operations([track(guest)], "k")
    assert op.kind == OperationKind.ANONYMOUS_EVENT
    assert op.payload["anonymous_id"] == "shopify:tok1"
    assert "identifiers" not in op.payload


def test_event_naming_nobody_is_held_with_a_reason() -> None:
    [op] = to_operations([track(Person(source="stripe", account="platform", order_id="pi_1"))], "k")
    assert op.problem == "no person id or token to send it by"


def test_redaction_becomes_a_delete() -> None:
    [op] = to_operations([RedactPerson(person=STRIPE, timestamp=5)], "k")
    assert (op.kind, op.payload["action"], op.payload["identifiers"]) == (
        OperationKind.DELETE,
        "delete",
        {"id": "stripe:cus_1"},
    )


@pytest.mark.parametrize(
    ("kind", "payload", "pid", "problem"),
    [
        ("identify", {"attributes": {"x" * 151: 1}}, "p", "attribute name"),
        ("identify", {"attributes": {"note": "y" * 1001}}, "p", "value over"),
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


def test_an_operation_within_the_limits_passes() -> None:
    [op] = to_operations([track(total=None)], "k")
    assert op.problem is None
    assert check_limits(op.kind, op.payload, op.person_id) is None


def test_rate_limiter_spaces_calls() -> None:
    limiter = RateLimiter(rate=50)
    started = time.monotonic()
    for _ in range(11):
        limiter.wait()
    assert time.monotonic() - started >= 10 / 50 * 0.9
