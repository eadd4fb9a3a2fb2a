"""What the app endpoint accepts: the envelope and the taxonomy, checked before storing."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from webhooks.errors import InvalidEvent
from webhooks.providers.app.events import MAX_BATCH, parse_body

NOW = time.time()


def checkout(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": "evt_app_cs1",
        "name": "checkout_started",
        "customer_id": "user_8842",
        "email": "ada@example.test",
        "timestamp": int(NOW),
        "properties": {
            "cart_id": "cs_test_a1B2c3D4e5",
            "items": [{"product_id": "prod_ColdBrew", "quantity": 2, "price": 15}],
            "total": 30,
            "currency": "USD",
        },
    }
    body.update(overrides)
    return body


def errors_of(body: Any) -> list[dict[str, str]]:
    """The field errors the endpoint would answer 422 with."""
    with pytest.raises(InvalidEvent) as caught:
        parse_body(json.dumps(body).encode(), now=NOW, tolerance=300)
    assert (caught.value.status, caught.value.code) == (422, "invalid_event")
    return caught.value.errors


def test_a_valid_event_parses_with_its_time() -> None:
    events, batch = parse_body(json.dumps(checkout()).encode(), now=NOW, tolerance=300)
    assert not batch
    assert [(e.id, e.name, int(e.occurred_at.timestamp())) for e in events] == [
        ("evt_app_cs1", "checkout_started", int(NOW))
    ]


def test_an_iso_8601_timestamp_is_accepted() -> None:
    body = checkout(timestamp="2025-11-28T08:48:20Z")
    events, _ = parse_body(json.dumps(body).encode(), now=NOW, tolerance=300)
    assert int(events[0].occurred_at.timestamp()) == 1764319700


def test_an_unknown_event_name_lists_what_the_endpoint_takes() -> None:
    assert errors_of(checkout(name="cart_abandoned")) == [
        {
            "path": "name",
            "message": "unknown event; the app endpoint takes checkout_started, "
            "cart_updated, product_viewed, subscription_skipped",
        }
    ]


def test_an_event_the_providers_report_is_refused_here() -> None:
    # A second report of an order from the backend would be a second order_completed.
    [error] = errors_of(checkout(name="order_completed"))
    assert error["path"] == "name"
    assert error["message"].startswith("order_completed comes from the providers' webhooks")


def test_a_missing_required_property_is_named_by_its_path() -> None:
    body = checkout()
    del body["properties"]["cart_id"]
    assert errors_of(body) == [{"path": "properties.cart_id", "message": "Field required"}]


def test_a_property_of_the_wrong_type_is_named_down_to_the_item() -> None:
    body = checkout()
    body["properties"]["items"][0]["quantity"] = "two"
    body["properties"]["currency"] = "usd"
    paths = {error["path"] for error in errors_of(body)}
    assert paths == {"properties.items[0].quantity", "properties.currency"}


def test_an_unknown_property_is_refused_not_dropped() -> None:
    body = checkout()
    body["properties"]["coupon"] = "SAVE10"
    [error] = errors_of(body)
    assert error["path"] == "properties.coupon"


@pytest.mark.parametrize(
    ("cart_id", "message"),
    [
        ("", "String should have at least 1 character"),
        ("   ", "String should match pattern '\\S'"),
        ("c" * 256, "String should have at most 255 characters"),
    ],
)
def test_an_id_property_that_cannot_key_a_fact_is_refused(cart_id: str, message: str) -> None:
    body = checkout()
    body["properties"]["cart_id"] = cart_id
    assert errors_of(body) == [{"path": "properties.cart_id", "message": message}]


@pytest.mark.parametrize("amount", ["1e999999999", "1e-999999999", "NaN", "Infinity"])
def test_an_absurd_amount_is_refused_before_it_can_stall_the_worker(amount: str) -> None:
    body = checkout()
    body["properties"]["total"] = amount
    [error] = errors_of(body)
    assert error["path"] == "properties.total"


def test_source_is_the_services_to_set() -> None:
    body = checkout()
    body["properties"]["source"] = "stripe"
    assert errors_of(body) == [{"path": "properties.source", "message": "is set by the service"}]


def test_someone_must_be_named() -> None:
    body = checkout()
    del body["customer_id"]
    assert errors_of(body) == [
        {"path": "customer_id", "message": "customer_id or anonymous_id is required"}
    ]


@pytest.mark.parametrize(
    ("field", "value", "path"),
    [
        ("id", "", "id"),
        ("id", "x" * 256, "id"),
        ("id", "evt\u0000", "id"),
        ("email", "not-an-address", "email"),
        ("customer_id", 42, "customer_id"),
        ("timestamp", "yesterday", "timestamp"),
        # An explicit id: a time in the id would differ between pytest-xdist workers.
        pytest.param("timestamp", int(NOW) + 3600, "timestamp", id="timestamp-future"),
        ("timestamp", True, "timestamp"),
        ("timestamp", 1764319700.5, "timestamp"),
        ("id", "   ", "id"),
        ("customer_id", " ", "customer_id"),
        ("surprise", 1, "surprise"),
    ],
)
def test_envelope_problems_are_named(field: str, value: Any, path: str) -> None:
    paths = [error["path"] for error in errors_of(checkout(**{field: value}))]
    assert paths == [path]


def test_a_batch_is_parsed_item_by_item() -> None:
    items = [checkout(id=f"evt_{n}") for n in range(MAX_BATCH)]
    events, batch = parse_body(json.dumps({"events": items}).encode(), now=NOW, tolerance=300)
    assert batch
    assert [e.id for e in events] == [f"evt_{n}" for n in range(MAX_BATCH)]


def test_a_batch_with_one_bad_event_is_refused_whole_naming_its_index() -> None:
    items = [checkout(id="evt_ok"), checkout(id="evt_bad", name="nope"), checkout(id="evt_ok2")]
    items[2]["properties"]["total"] = "lots"
    paths = [error["path"] for error in errors_of({"events": items})]
    assert paths == ["events[1].name", "events[2].properties.total"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"events": []}, "must be a list of 1 to 100 events"),
        ({"events": {"id": 1}}, "must be a list of 1 to 100 events"),
        ({"events": [checkout()] * (MAX_BATCH + 1)}, "at most 100 events per batch"),
    ],
)
def test_a_batch_of_the_wrong_size_is_refused(body: Any, message: str) -> None:
    assert {"path": "events", "message": message} in errors_of(body)


def test_a_batch_item_that_is_not_an_object_is_named() -> None:
    assert errors_of({"events": [checkout(), 7]}) == [
        {"path": "events[1]", "message": "must be a JSON object"}
    ]


def test_a_batch_has_nothing_beside_its_events() -> None:
    paths = [error["path"] for error in errors_of({"events": [checkout()], "sent_at": 1})]
    assert paths == ["sent_at"]


def test_the_message_summarises_the_first_problem_and_counts_the_rest() -> None:
    items = [checkout(name="nope"), checkout(name="nope")]
    with pytest.raises(InvalidEvent, match=r"^events\[0\]\.name: unknown event.*\(and 1 more\)$"):
        parse_body(json.dumps({"events": items}).encode(), now=NOW, tolerance=300)
