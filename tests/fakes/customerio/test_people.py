"""The people fold of the fake Customer.io, as a pure function over an operation log."""

from __future__ import annotations

from typing import Any

import pytest

from webhooks.fakes.customerio.api import (
    ANONYMOUS_EVENT,
    BATCH,
    CUSTOMER_EVENT,
    DELETE,
    IDENTIFY,
    MERGE,
    SUPPRESS,
    UNSUPPRESS,
)
from webhooks.fakes.customerio.people import fold_people

RECEIVED_AT = 1_800_000_000.7


def ulid(n: int) -> str:
    """A valid ULID whose order follows `n`."""
    return f"01H{'0' * 21}{n:02d}"


def entry(endpoint: str, operation: Any, identifier: str | None = None) -> dict[str, Any]:
    """One operation log entry, shaped as `Recorder.accept` records it."""
    return {
        "endpoint": endpoint,
        "identifier": identifier,
        "batch_index": 0 if endpoint == BATCH else None,
        "operation": operation,
        "received_at": RECEIVED_AT,
    }


def identify(
    person: str = "p1", timestamp: int | None = None, key: str = "id", **attributes: Any
) -> dict[str, Any]:
    item: dict[str, Any] = {
        "type": "person",
        "identifiers": {key: person},
        "action": "identify",
        "attributes": attributes,
    }
    if timestamp is not None:
        item["timestamp"] = timestamp
    return entry(BATCH, item)


def event(person: str, n: int, timestamp: int | None = 100, name: str = "E") -> dict[str, Any]:
    item: dict[str, Any] = {
        "type": "person",
        "identifiers": {"id": person},
        "action": "event",
        "name": name,
        "id": ulid(n),
        "attributes": {"n": n},
    }
    if timestamp is not None:
        item["timestamp"] = timestamp
    return entry(BATCH, item)


def anonymous(anonymous_id: str | None, n: int, timestamp: int = 50) -> dict[str, Any]:
    body = {"name": "Viewed", "anonymous_id": anonymous_id, "id": ulid(n), "timestamp": timestamp}
    return entry(ANONYMOUS_EVENT, {**body, "data": {"n": n}})


def merge(primary: dict[str, str], secondary: dict[str, str]) -> dict[str, Any]:
    return entry(
        BATCH, {"type": "person", "action": "merge", "primary": primary, "secondary": secondary}
    )


def person_op(action: str, person: str) -> dict[str, Any]:
    return entry(BATCH, {"type": "person", "identifiers": {"id": person}, "action": action})


def ev(n: int, timestamp: int = 100, name: str = "E") -> dict[str, Any]:
    """An event as the view shows it."""
    return {"name": name, "id": ulid(n), "timestamp": timestamp, "data": {"n": n}}


def people(log: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The folded profiles by identifier value."""
    return {next(iter(p["identifier"].values())): p for p in fold_people(log)["people"]}


def test_empty_log() -> None:
    assert fold_people([]) == {"people": [], "anonymous_events": []}


def test_identify_merges_attributes_and_events_are_sorted() -> None:
    log = [
        identify(plan="free", email="a@example.com"),
        event("p1", 3, timestamp=200),
        event("p1", 2, timestamp=100),
        event("p1", 1, timestamp=200),
        identify(plan="pro"),
        event("p2", 4, timestamp=None),  # creates p2; stamped with the time of receipt
    ]
    view = fold_people(log)
    assert view["people"] == [
        {
            "identifier": {"id": "p1"},
            "attributes": {"plan": "pro", "email": "a@example.com"},
            "anonymous_ids": [],
            "events": [ev(2, 100), ev(1, 200), ev(3, 200)],
        },
        {
            "identifier": {"id": "p2"},
            "attributes": {},
            "anonymous_ids": [],
            "events": [ev(4, int(RECEIVED_AT))],
        },
    ]
    assert view["anonymous_events"] == []


def test_stale_identify_is_ignored_equal_is_applied_untimed_always_applies() -> None:
    log = [
        identify(timestamp=200, plan="pro", seats=3),
        identify(timestamp=199, plan="free", stale="yes"),  # older: ignored
        identify(timestamp=200, seats=5),  # equal: applied
        identify(seats=7),  # no timestamp: applied, does not move the newest
        identify(timestamp=200, seats=9),  # still not older than 200
    ]
    assert people(log)["p1"]["attributes"] == {"plan": "pro", "seats": 9}


def test_update_only_identify_never_creates() -> None:
    log = [identify("p1", _update=True, plan="pro")]
    assert people(log) == {}
    log = [identify("p1", plan="free"), identify("p1", _update=True, plan="pro")]
    assert people(log)["p1"]["attributes"] == {"plan": "pro"}


def test_v1_requests_fold_like_v2() -> None:
    log = [
        entry(IDENTIFY, {"plan": "pro", "_timestamp": 300}, "a+b@example.com"),
        entry(IDENTIFY, {"plan": "old", "_timestamp": 299}, "A+B@example.com"),  # same person
        entry(
            CUSTOMER_EVENT,
            {"name": "Paid", "id": ulid(1), "timestamp": 5, "data": {"x": 1}},
            "a+b@example.com",
        ),
        entry(IDENTIFY, {"plan": "pro"}, "cio_a3000001"),  # the fake assigns no cio_id
    ]
    view = fold_people(log)
    assert view["people"] == [
        {
            "identifier": {"email": "a+b@example.com"},
            "attributes": {"plan": "pro"},
            "anonymous_ids": [],
            "events": [{"name": "Paid", "id": ulid(1), "timestamp": 5, "data": {"x": 1}}],
        }
    ]


def test_anonymous_events_wait_then_attach_on_identify() -> None:
    log = [
        anonymous("anon-1", 1, timestamp=60),
        anonymous("anon-2", 2),
        anonymous("", 3),  # an invite event: never linked
        identify("p1", anonymous_id="anon-1"),
        anonymous("anon-1", 4, timestamp=70),  # the link stays
    ]
    view = fold_people(log)
    [p1] = view["people"]
    assert p1["anonymous_ids"] == ["anon-1"]
    assert [e["id"] for e in p1["events"]] == [ulid(1), ulid(4)]
    assert p1["events"][0] == {"name": "Viewed", "id": ulid(1), "timestamp": 60, "data": {"n": 1}}
    assert [(e["anonymous_id"], e["id"]) for e in view["anonymous_events"]] == [
        ("anon-2", ulid(2)),
        ("", ulid(3)),
    ]


def test_v1_identify_links_anonymous_events_even_when_stale() -> None:
    log = [
        entry(IDENTIFY, {"plan": "pro", "_timestamp": 10}, "p1"),
        anonymous("anon-1", 1),
        entry(IDENTIFY, {"anonymous_id": "anon-1", "_timestamp": 9}, "p1"),
    ]
    [p1] = fold_people(log)["people"]
    assert p1["attributes"] == {"plan": "pro"}  # the stale identify changed no attribute
    assert [e["id"] for e in p1["events"]] == [ulid(1)]


def test_merge_moves_attributes_events_and_anonymous_ids_then_deletes_secondary() -> None:
    log = [
        identify("p1", plan="pro", country="FR"),
        event("p1", 1, timestamp=300),
        identify("guest@example.com", key="email", plan="free", phone="555", anonymous_id="a1"),
        event("p2", 9),
        anonymous("a1", 2, timestamp=50),
        merge({"id": "p1"}, {"email": "GUEST@example.com"}),
        anonymous("a1", 3, timestamp=400),  # the moved anonymous id now leads to the primary
    ]
    found = people(log)
    assert set(found) == {"p1", "p2"}
    p1 = found["p1"]
    assert p1["attributes"] == {
        "plan": "pro",
        "country": "FR",
        "phone": "555",
        "anonymous_id": "a1",
    }
    assert [e["id"] for e in p1["events"]] == [ulid(2), ulid(1), ulid(3)]
    assert p1["anonymous_ids"] == ["a1"]
    assert fold_people(log)["anonymous_events"] == []


@pytest.mark.parametrize(
    ("primary", "secondary"),
    [
        ({"id": "nobody"}, {"id": "p2"}),  # documented: no primary, nothing happens
        ({"id": "p1"}, {"id": "nobody"}),
        ({"id": "p1"}, {"id": "p1"}),
        ({"cio_id": "a3000001"}, {"id": "p2"}),
    ],
    ids=["primary-missing", "secondary-missing", "same-person", "unknown-cio-id"],
)
def test_merge_without_two_people_does_nothing(
    primary: dict[str, str], secondary: dict[str, str]
) -> None:
    log = [identify("p1", a=1), event("p1", 1), identify("p2", b=2), event("p2", 2)]
    assert fold_people([*log, merge(primary, secondary)]) == fold_people(log)
    assert set(people(log)) == {"p1", "p2"}


def test_delete_removes_and_a_later_event_recreates_an_empty_profile() -> None:
    log = [identify("p1", plan="pro"), event("p1", 1), person_op("delete", "p1")]
    assert people(log) == {}
    log += [event("p1", 2), entry(DELETE, None, "nobody")]
    assert people(log)["p1"]["attributes"] == {}
    assert [e["id"] for e in people(log)["p1"]["events"]] == [ulid(2)]


def test_delete_forgets_the_anonymous_link() -> None:
    log = [identify("p1", anonymous_id="a1"), person_op("delete", "p1"), anonymous("a1", 1)]
    view = fold_people(log)
    assert view["people"] == []
    assert [e["id"] for e in view["anonymous_events"]] == [ulid(1)]


def test_suppress_ignores_the_identifier_until_unsuppressed() -> None:
    log = [
        identify("p1", plan="pro"),
        entry(SUPPRESS, None, "p1"),
        identify("p1", plan="again"),
        event("p1", 1),
    ]
    assert people(log) == {}
    log += [entry(UNSUPPRESS, None, "p1"), identify("p1", plan="back")]
    assert people(log)["p1"]["attributes"] == {"plan": "back"}
    assert people(log)["p1"]["events"] == []


def test_v1_merge_entry() -> None:
    log = [
        identify("p1"),
        identify("p2", b=2),
        entry(MERGE, {"primary": {"id": "p1"}, "secondary": {"id": "p2"}}),
    ]
    assert people(log)["p1"]["attributes"] == {"b": 2}
    assert "p2" not in people(log)


def test_the_view_shares_nothing_with_the_log() -> None:
    log = [identify("p1", tags=["a"]), event("p1", 1)]
    view = fold_people(log)
    view["people"][0]["attributes"]["tags"].append("b")
    view["people"][0]["events"][0]["data"]["n"] = 99
    assert log[0]["operation"]["attributes"] == {"tags": ["a"]}
    assert log[1]["operation"]["attributes"] == {"n": 1}
