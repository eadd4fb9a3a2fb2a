"""Merges and the people view of the fake Customer.io, over real HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from webhooks.fakes.customerio import FakeCustomerIO, FakeCustomerIOClient

P1 = {"id": "stripe:cus_1"}
GUEST = {"email": "guest@example.com"}


def ulid(n: int) -> str:
    """A valid ULID whose order follows `n`."""
    return f"01H{'0' * 21}{n:02d}"


def identify(who: dict[str, str], timestamp: int | None = None, **attributes: Any) -> dict:
    item: dict[str, Any] = {
        "type": "person",
        "identifiers": who,
        "action": "identify",
        "attributes": attributes,
    }
    if timestamp is not None:
        item["timestamp"] = timestamp
    return item


def event(who: dict[str, str], n: int, timestamp: int, name: str = "Order Completed") -> dict:
    return {
        "type": "person",
        "identifiers": who,
        "action": "event",
        "name": name,
        "id": ulid(n),
        "timestamp": timestamp,
        "attributes": {"n": n},
    }


def merge(primary: Any, secondary: Any) -> dict[str, Any]:
    return {"type": "person", "action": "merge", "primary": primary, "secondary": secondary}


@pytest.fixture
def fake() -> Iterator[FakeCustomerIO]:
    with FakeCustomerIO(hold_seconds=5.0) as server:
        yield server


@pytest.fixture
def api(fake: FakeCustomerIO) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=fake.url, auth=fake.auth, timeout=5.0) as client:
        yield client


@pytest.fixture
def control(fake: FakeCustomerIO) -> Iterator[FakeCustomerIOClient]:
    with FakeCustomerIOClient(fake.url) as client:
        yield client


def send(api: httpx.Client, *items: dict[str, Any]) -> None:
    response = api.post("/api/v2/batch", json={"batch": list(items)})
    assert (response.status_code, response.json()) == (200, {})


def by_identifier(control: FakeCustomerIOClient) -> dict[str, dict[str, Any]]:
    return {next(iter(p["identifier"].values())): p for p in control.people()["people"]}


# --- merge: accepted and validated -------------------------------------------------------------


def test_v2_merge_is_accepted_and_recorded(fake: FakeCustomerIO, api: httpx.Client) -> None:
    item = merge(P1, {"cio_id": "a3000001"})
    send(api, item)
    [op] = fake.operations()
    assert (op["endpoint"], op["batch_index"], op["operation"]) == ("POST /api/v2/batch", 0, item)


@pytest.mark.parametrize(
    ("primary", "secondary", "field"),
    [
        ({"id": "a", "email": "a@example.com"}, GUEST, "primary"),
        (P1, {"id": "b", "email": "b@example.com"}, "secondary"),
        (None, GUEST, "primary"),
        (P1, {"phone": "+15555550100"}, "secondary.phone"),
        ({"id": "cio_x"}, GUEST, "primary.id"),
        (P1, {"email": "no-at-sign"}, "secondary.email"),
    ],
    ids=["two-primary", "two-secondary", "no-primary", "phone", "cio-prefixed-id", "bad-email"],
)
def test_invalid_v2_merge_is_a_207_item_error(
    fake: FakeCustomerIO, api: httpx.Client, primary: Any, secondary: Any, field: str
) -> None:
    good = identify(P1, plan="pro")
    response = api.post("/api/v2/batch", json={"batch": [merge(primary, secondary), good]})
    assert response.status_code == 207
    [error] = response.json()["errors"]
    assert (error["batch_index"], error["field"], error["reason"]) == (0, field, "invalid")
    assert [op["operation"] for op in fake.operations()] == [good]


def test_v1_merge_customers(fake: FakeCustomerIO, api: httpx.Client) -> None:
    body = {"primary": P1, "secondary": GUEST}
    response = api.post("/api/v1/merge_customers", json=body)
    assert (response.status_code, response.json()) == (200, {})
    bad = api.post(
        "/api/v1/merge_customers",
        json={"primary": {"id": "a", "email": "a@example.com"}, "secondary": {}},
    )
    assert bad.status_code == 400
    assert [e["field"] for e in bad.json()["errors"]] == ["primary", "secondary"]
    assert api.post("/api/v1/merge_customers", json=[body]).status_code == 400
    assert api.get("/api/v1/merge_customers").status_code == 404  # POST only
    [op] = fake.operations()
    assert (op["endpoint"], op["identifier"], op["operation"]) == (
        "POST /api/v1/merge_customers",
        None,
        body,
    )


# --- the people view ---------------------------------------------------------------------------


def test_identify_and_events(
    fake: FakeCustomerIO, api: httpx.Client, control: FakeCustomerIOClient
) -> None:
    assert control.people() == {"people": [], "anonymous_events": []}
    send(
        api,
        identify(P1, 100, plan="free", email="a@example.com"),
        event(P1, 2, timestamp=300),
        event(P1, 1, timestamp=300),
    )
    v1_event = {"name": "Refund Issued", "id": ulid(3), "timestamp": 200, "data": {"r": 1}}
    assert api.post("/api/v1/customers/stripe%3Acus_1/events", json=v1_event).status_code == 200
    assert api.put("/api/v1/customers/stripe%3Acus_1", json={"plan": "pro"}).status_code == 200
    view = control.people()
    assert view == {
        "people": [
            {
                "identifier": P1,
                "attributes": {"plan": "pro", "email": "a@example.com"},
                "anonymous_ids": [],
                "events": [
                    {"name": "Refund Issued", "id": ulid(3), "timestamp": 200, "data": {"r": 1}},
                    {"name": "Order Completed", "id": ulid(1), "timestamp": 300, "data": {"n": 1}},
                    {"name": "Order Completed", "id": ulid(2), "timestamp": 300, "data": {"n": 2}},
                ],
            }
        ],
        "anonymous_events": [],
    }
    assert fake.people() == view  # in-process, the same fold
    control.reset()
    assert control.people() == {"people": [], "anonymous_events": []}


def test_stale_identify_is_ignored(api: httpx.Client, control: FakeCustomerIOClient) -> None:
    send(api, identify(P1, 200, plan="pro"), identify(P1, 150, plan="free", churned=True))
    assert api.put("/api/v1/customers/stripe%3Acus_1", json={"_timestamp": 199, "x": 1}).is_success
    assert by_identifier(control)["stripe:cus_1"]["attributes"] == {"plan": "pro"}
    send(api, identify(P1, 200, plan="team"))  # equal to the newest: applied
    assert by_identifier(control)["stripe:cus_1"]["attributes"] == {"plan": "team"}


def test_anonymous_events_merge_on_identify(
    api: httpx.Client, control: FakeCustomerIOClient
) -> None:
    for n, anonymous_id in ((1, "cart-1"), (2, "cart-2")):
        body = {"name": "Checkout Started", "anonymous_id": anonymous_id, "id": ulid(n)}
        response = api.post("/api/v1/events", json={**body, "timestamp": 100 + n})
        assert response.status_code == 200
    before = control.people()
    assert before["people"] == []
    assert [e["anonymous_id"] for e in before["anonymous_events"]] == ["cart-1", "cart-2"]
    send(api, identify(P1, anonymous_id="cart-1"))
    after = control.people()
    [person] = after["people"]
    assert person["anonymous_ids"] == ["cart-1"]
    assert person["events"] == [
        {"name": "Checkout Started", "id": ulid(1), "timestamp": 101, "data": {}}
    ]
    assert [e["id"] for e in after["anonymous_events"]] == [ulid(2)]


def test_merge_semantics(api: httpx.Client, control: FakeCustomerIOClient) -> None:
    send(
        api,
        identify(GUEST, plan="free", phone="555", anonymous_id="cart-9"),
        event(GUEST, 1, timestamp=100),
        merge(P1, GUEST),  # no primary yet: nothing happens
    )
    assert set(by_identifier(control)) == {"guest@example.com"}
    send(api, identify(P1, plan="pro"), event(P1, 2, timestamp=50))
    response = api.post(
        "/api/v1/merge_customers",
        json={"primary": P1, "secondary": {"email": "Guest@Example.com"}},
    )
    assert response.status_code == 200
    found = by_identifier(control)
    assert set(found) == {"stripe:cus_1"}
    person = found["stripe:cus_1"]
    assert person["attributes"] == {"plan": "pro", "phone": "555", "anonymous_id": "cart-9"}
    assert [e["id"] for e in person["events"]] == [ulid(2), ulid(1)]
    assert person["anonymous_ids"] == ["cart-9"]


def test_delete(api: httpx.Client, control: FakeCustomerIOClient) -> None:
    send(api, identify(P1, plan="pro"), event(P1, 1, timestamp=100), identify(GUEST, a=1))
    assert api.delete("/api/v1/customers/stripe%3Acus_1").status_code == 200
    assert set(by_identifier(control)) == {"guest@example.com"}
    send(api, {"type": "person", "identifiers": GUEST, "action": "delete"})
    assert control.people() == {"people": [], "anonymous_events": []}
