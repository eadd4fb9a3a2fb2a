"""The app endpoint over HTTP: what a sender sees for each answer, and what is stored."""

from __future__ import annotations

import json
import time
from typing import Any

from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from tests.conftest import APP_OLD_SECRET, APP_SECRET, make_settings, stored_rows
from webhooks.app import create_app
from webhooks.providers.app.signature import sign


def event(event_id: str = "evt_app_1", **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": event_id,
        "name": "product_viewed",
        "customer_id": "user_8842",
        "timestamp": int(time.time()),
        "properties": {"product_id": "prod_ColdBrew", "price": 15, "currency": "USD"},
    }
    body.update(overrides)
    return body


def post(client: FlaskClient, payload: Any, secret: str = APP_SECRET, **kw: Any) -> TestResponse:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    headers = {**sign(body, secret), **kw.pop("headers", {})}
    return client.post("/webhooks/app", data=body, headers=headers, content_type="application/json")


def test_an_event_is_stored_and_accepted_like_a_webhook(app: Flask, client: FlaskClient) -> None:
    answer = post(client, event())
    assert (answer.status_code, answer.json) == (200, {"status": "accepted"})
    [row] = stored_rows(app)
    assert (row.provider, row.account, row.event_type, row.delivery_id) == (
        "app",
        "backend",
        "product_viewed",
        "evt_app_1",
    )
    assert row.secret_index == 0


def test_the_same_id_again_is_a_duplicate_stored_once(app: Flask, client: FlaskClient) -> None:
    post(client, event())
    # A retry signed with the previous secret (mid-rotation) and a new message id.
    answer = post(client, event(), secret=APP_OLD_SECRET)
    assert (answer.status_code, answer.json) == (200, {"status": "duplicate"})
    [row] = stored_rows(app)
    assert row.duplicates == 1


def test_an_invalid_event_gets_422_with_every_field_error_and_nothing_is_stored(
    app: Flask, client: FlaskClient
) -> None:
    bad = event(name="checkout_started", properties={"items": [{"quantity": -1}]})
    answer = post(client, bad)
    assert answer.status_code == 422
    assert answer.json is not None
    assert answer.json["error"] == "invalid_event"
    assert answer.json["errors"] == [
        {"path": "properties.cart_id", "message": "Field required"},
        {
            "path": "properties.items[0].quantity",
            "message": "Input should be greater than or equal to 0",
        },
    ]
    assert answer.json["message"].startswith("properties.cart_id: Field required")
    assert stored_rows(app) == []


def test_a_batch_is_stored_whole_and_answers_each_events_outcome(
    app: Flask, client: FlaskClient
) -> None:
    post(client, event("evt_2"))
    answer = post(client, {"events": [event("evt_1"), event("evt_2"), event("evt_1")]})
    assert answer.status_code == 200
    assert answer.json == {
        "status": "accepted",
        "accepted": 1,
        "duplicates": 2,
        "events": [
            {"id": "evt_1", "status": "accepted"},
            {"id": "evt_2", "status": "duplicate"},
            {"id": "evt_1", "status": "duplicate"},
        ],
    }
    assert sorted(row.delivery_id for row in stored_rows(app)) == ["evt_1", "evt_2"]


def test_a_batch_with_one_bad_event_stores_none_of_them(app: Flask, client: FlaskClient) -> None:
    batch = {"events": [event("evt_1"), event("evt_2", name="order_completed"), event("evt_3")]}
    answer = post(client, batch)
    assert answer.status_code == 422
    assert answer.json is not None
    assert [error["path"] for error in answer.json["errors"]] == ["events[1].name"]
    assert stored_rows(app) == []
    # Fixed and sent again, the whole batch goes in.
    batch["events"][1] = event("evt_2")
    assert post(client, batch).json == {
        "status": "accepted",
        "accepted": 3,
        "duplicates": 0,
        "events": [{"id": f"evt_{n}", "status": "accepted"} for n in (1, 2, 3)],
    }


def test_a_bad_signature_is_refused_before_the_body_is_validated(
    app: Flask, client: FlaskClient
) -> None:
    answer = post(client, b"not even json", secret="whsec_" + "QUFBQUFBQUFBQUFBQUFBQUFBQUFB")
    assert (answer.status_code, answer.json["error"]) == (401, "invalid_signature")
    stale = json.dumps(event()).encode()
    old = sign(stale, APP_SECRET, timestamp=int(time.time()) - 3600)
    answer = client.post("/webhooks/app", data=stale, headers=old)
    assert (answer.status_code, answer.json["error"]) == (401, "timestamp_out_of_tolerance")
    assert stored_rows(app) == []


def test_a_body_that_is_not_json_is_a_400(app: Flask, client: FlaskClient) -> None:
    answer = post(client, b"{truncated")
    assert (answer.status_code, answer.json["error"]) == (400, "invalid_json")


def test_a_body_over_the_limit_is_413_and_not_stored(sqlite_url: str) -> None:
    app = create_app(make_settings(sqlite_url, max_body_bytes=4096))
    big = {"events": [event(f"evt_{n}") for n in range(60)]}
    answer = post(app.test_client(), big)
    assert (answer.status_code, answer.json["error"]) == (413, "body_too_large")
    assert stored_rows(app) == []
    app.extensions["webhooks.engine"].dispose()


def test_without_a_secret_the_endpoint_is_not_there(sqlite_url: str) -> None:
    app = create_app(make_settings(sqlite_url, app_webhook_secret=""))
    answer = post(app.test_client(), event())
    assert (answer.status_code, answer.json["error"]) == (404, "provider_not_configured")
    app.extensions["webhooks.engine"].dispose()
