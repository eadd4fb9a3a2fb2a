"""The HTTP contract of the ingest endpoints and the health probes."""

from __future__ import annotations

import json
import sqlite3
import time
from datetime import UTC, datetime, timedelta

import pytest
from alembic import command
from flask import Flask
from flask.testing import FlaskClient
from structlog.testing import capture_logs

from tests.conftest import (
    SHOPIFY_OLD_SECRET,
    STRIPE_OLD_SECRET,
    STRIPE_SECRET,
    ShopifySender,
    StripeSender,
    make_settings,
    shopify_headers,
    shopify_order,
    stored_rows,
    stripe_event,
)
from webhooks.app import create_app
from webhooks.providers.stripe.signature import sign
from webhooks.storage import migrate

# --- accepted, duplicate, unknown types ------------------------------------------------


def test_new_stripe_delivery_is_stored_then_accepted(
    app: Flask, stripe_sender: StripeSender
) -> None:
    # Odd spacing and non-ASCII text: the exact bytes must survive.
    body = b'{"id": "evt_A",  "type":"customer.created", "created": 1764300000,\n "n":"\xc3\xa9"}'
    before = datetime.now(UTC)
    response = stripe_sender.post(body)
    assert (response.status_code, response.json) == (200, {"status": "accepted"})
    [row] = stored_rows(app)
    assert row.body == body
    assert (row.provider, row.account, row.event_type, row.delivery_id) == (
        "stripe",
        "platform",
        "customer.created",
        "evt_A",
    )
    assert row.state == "pending"
    assert row.attempts == 0
    assert row.processed_at is None
    assert row.occurred_at == datetime.fromtimestamp(1764300000, UTC)
    assert before - timedelta(seconds=1) <= row.received_at <= datetime.now(UTC)


def test_duplicate_delivery_is_acknowledged_and_stored_once(
    app: Flask, stripe_sender: StripeSender
) -> None:
    body = stripe_event()
    first = stripe_sender.post(body)
    # A retry arrives with a fresh signature (new timestamp, old secret still active).
    second = stripe_sender.post(body, secret=STRIPE_OLD_SECRET)
    assert first.json == {"status": "accepted"}
    assert (second.status_code, second.json) == (200, {"status": "duplicate"})
    assert len(stored_rows(app)) == 1


def test_same_event_id_on_two_connected_accounts_is_two_deliveries(
    app: Flask, stripe_sender: StripeSender
) -> None:
    for account in ("acct_One", "acct_Two"):
        assert stripe_sender.post(stripe_event(account=account)).json == {"status": "accepted"}
    assert {row.account for row in stored_rows(app)} == {"acct_One", "acct_Two"}


def test_event_type_nothing_maps_is_still_stored_and_acknowledged(
    app: Flask, stripe_sender: StripeSender, shopify_sender: ShopifySender
) -> None:
    assert stripe_sender.post(stripe_event(event_type="issuing_card.created")).status_code == 200
    body = b'{"id": 1}'
    assert shopify_sender.post(body, topic="inventory_levels/update").status_code == 200
    assert [row.event_type for row in stored_rows(app)] == [
        "issuing_card.created",
        "inventory_levels/update",
    ]


def test_shopify_delivery_is_stored_with_its_headers(
    app: Flask, shopify_sender: ShopifySender
) -> None:
    body = shopify_order()
    response = shopify_sender.post(body)
    assert (response.status_code, response.json) == (200, {"status": "accepted"})
    [row] = stored_rows(app)
    assert row.body == body
    assert row.account == "example-shop.myshopify.com"
    assert row.event_type == "orders/create"
    assert row.headers["webhook_id"] == row.delivery_id
    assert row.headers["triggered_at"] == "2026-11-28T15:00:01.123456789Z"
    assert row.api_version == "2026-04"


def test_shopify_duplicates_are_per_shop_topic_and_webhook_id(
    app: Flask, shopify_sender: ShopifySender
) -> None:
    body = shopify_order()
    assert shopify_sender.post(body).json == {"status": "accepted"}
    assert shopify_sender.post(body).json == {"status": "duplicate"}
    # Same webhook id on another topic is another delivery (e.g. orders/paid).
    assert shopify_sender.post(body, topic="orders/paid").json == {"status": "accepted"}
    assert len(stored_rows(app)) == 2


@pytest.mark.parametrize(
    "name",
    [
        "X-Shopify-Hmac-Sha256",
        "x-shopify-hmac-sha256",
        "Shopify-Hmac-Sha256",
        "SHOPIFY-HMAC-SHA256",
    ],
)
def test_shopify_hmac_header_name_variants(client: FlaskClient, name: str) -> None:
    body = shopify_order()
    headers = shopify_headers(body)
    headers[name] = headers.pop("X-Shopify-Hmac-Sha256")
    response = ShopifySender(client).post(body, headers=headers)
    assert response.status_code == 200


# --- rejected requests store nothing ----------------------------------------------------


def test_missing_signature_is_400(app: Flask, client: FlaskClient) -> None:
    response = client.post("/webhooks/stripe", data=stripe_event())
    assert (response.status_code, response.json["error"]) == (400, "missing_signature")
    response = client.post(
        "/webhooks/shopify", data=shopify_order(), headers={"X-Shopify-Topic": "orders/create"}
    )
    assert (response.status_code, response.json["error"]) == (400, "missing_signature")
    assert stored_rows(app) == []


def test_garbled_stripe_header_is_400(app: Flask, stripe_sender: StripeSender) -> None:
    response = stripe_sender.post(stripe_event(), headers={"Stripe-Signature": "nonsense"})
    assert (response.status_code, response.json["error"]) == (400, "malformed_signature")
    assert stored_rows(app) == []


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"secret": "whsec_wrong"}, "invalid_signature"),
        ({"timestamp": int(time.time()) - 3600}, "timestamp_out_of_tolerance"),
        ({"timestamp": int(time.time()) + 3600}, "timestamp_out_of_tolerance"),
    ],
)
def test_bad_stripe_signature_is_401(
    app: Flask, stripe_sender: StripeSender, kwargs: dict[str, object], error: str
) -> None:
    response = stripe_sender.post(stripe_event(), **kwargs)  # type: ignore[arg-type]
    assert (response.status_code, response.json["error"]) == (401, error)
    assert stored_rows(app) == []


def test_tampered_stripe_body_is_401(app: Flask, client: FlaskClient) -> None:
    body = stripe_event()
    response = client.post(
        "/webhooks/stripe",
        data=body.replace(b"4200", b"1"),
        headers={"Stripe-Signature": sign(body, STRIPE_SECRET)},
    )
    assert (response.status_code, response.json["error"]) == (401, "invalid_signature")
    assert stored_rows(app) == []


def test_bad_shopify_signature_is_401(app: Flask, shopify_sender: ShopifySender) -> None:
    response = shopify_sender.post(shopify_order(), secret="wrong")
    assert (response.status_code, response.json["error"]) == (401, "invalid_signature")
    assert stored_rows(app) == []


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (b"this is not json", "invalid_json"),
        (b'["an", "array"]', "invalid_json"),
        (b'{"type": "customer.created"}', "missing_event_id"),
        (b'{"id": "evt_1"}', "missing_event_type"),
    ],
)
def test_signed_stripe_body_without_a_key_is_400(
    app: Flask, stripe_sender: StripeSender, body: bytes, error: str
) -> None:
    response = stripe_sender.post(body)
    assert (response.status_code, response.json["error"]) == (400, error)
    assert stored_rows(app) == []


def test_signed_shopify_delivery_without_topic_is_400(
    app: Flask, shopify_sender: ShopifySender
) -> None:
    body = shopify_order()
    headers = shopify_headers(body)
    del headers["X-Shopify-Topic"]
    response = shopify_sender.post(body, headers=headers)
    assert (response.status_code, response.json["error"]) == (400, "missing_topic")
    assert stored_rows(app) == []


def test_body_over_the_limit_is_413_before_verification(sqlite_url: str) -> None:
    app = create_app(make_settings(sqlite_url, max_body_bytes=4096))
    body = stripe_event(padding="x" * 5000)
    response = StripeSender(app.test_client()).post(body)
    assert (response.status_code, response.json["error"]) == (413, "body_too_large")
    assert stored_rows(app) == []
    # Under the limit is fine (the exact boundary is tested over real gunicorn).
    small = stripe_event()
    assert StripeSender(app.test_client()).post(small).status_code == 200


def test_wrong_method_is_405(client: FlaskClient) -> None:
    response = client.get("/webhooks/stripe")
    assert (response.status_code, response.json["error"]) == (405, "method_not_allowed")
    assert "POST" in response.headers["Allow"]


@pytest.mark.parametrize("path", ["/webhooks/stripe", "/healthz", "/readyz"])
def test_options_is_a_json_405_not_an_empty_page(client: FlaskClient, path: str) -> None:
    # Every answer the service gives is JSON; Flask's automatic OPTIONS is an empty 200.
    response = client.open(path, method="OPTIONS")
    assert (response.status_code, response.json["error"]) == (405, "method_not_allowed")
    assert "OPTIONS" not in response.headers["Allow"]


def test_unconfigured_provider_is_404(sqlite_url: str) -> None:
    app = create_app(make_settings(sqlite_url, shopify_webhook_secret=""))
    client = app.test_client()
    response = ShopifySender(client).post(shopify_order())
    assert (response.status_code, response.json["error"]) == (404, "provider_not_configured")
    assert client.post("/webhooks/paypal", data=b"{}").status_code == 404
    assert stored_rows(app) == []


# --- storage trouble becomes a 503 the provider retries --------------------------------


def test_locked_sqlite_database_is_503_and_nothing_half_written(sqlite_url: str) -> None:
    app = create_app(make_settings(sqlite_url, database_timeout=0.2))
    sender = StripeSender(app.test_client())
    locker = sqlite3.connect(sqlite_url.removeprefix("sqlite:///"), isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")
    try:
        started = time.monotonic()
        response = sender.post(stripe_event())
        elapsed = time.monotonic() - started
    finally:
        locker.execute("ROLLBACK")
        locker.close()
    assert (response.status_code, response.json["error"]) == (503, "storage_unavailable")
    assert response.headers["Retry-After"] == "5"
    assert elapsed < 2, "the lock wait must stay short, far inside Shopify's 5 s"
    assert stored_rows(app) == []
    # The provider's retry then succeeds and is not mistaken for a duplicate.
    assert sender.post(stripe_event()).json == {"status": "accepted"}


def test_unreachable_postgresql_is_503(sqlite_url: str) -> None:
    url = "postgresql+psycopg://nobody@127.0.0.1:1/none"
    app = create_app(make_settings(url, database_timeout=1))
    response = StripeSender(app.test_client()).post(stripe_event())
    assert (response.status_code, response.json["error"]) == (503, "storage_unavailable")
    ready = app.test_client().get("/readyz")
    assert (ready.status_code, ready.json["error"]) == (503, "database_unreachable")


# --- probes --------------------------------------------------------------------------------


def test_healthz_and_readyz(client: FlaskClient) -> None:
    assert client.get("/healthz").json == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json == {
        "status": "ok",
        "schema": migrate.head_revision(),
        # No delivery worker has beaten yet: reported, not a reason to refuse webhooks.
        "workers": {"live": 0, "stale": 0, "last_beat_seconds": None, "delivery": {}},
    }


def test_readyz_reports_an_outdated_schema(app: Flask, client: FlaskClient) -> None:
    engine = app.extensions["webhooks.engine"]
    config = migrate.alembic_config(engine.url.render_as_string(hide_password=False))
    command.downgrade(config, "base")
    response = client.get("/readyz")
    assert (response.status_code, response.json["error"]) == (503, "schema_outdated")
    assert response.json["expected"] == migrate.head_revision()


# --- logging -------------------------------------------------------------------------------


def test_one_log_event_per_request_without_body_secret_or_email(
    stripe_sender: StripeSender,
) -> None:
    body = stripe_event()
    assert b"buyer@example.test" in body
    with capture_logs() as logs:
        stripe_sender.post(body)
        stripe_sender.post(body, secret="whsec_wrong")
    assert [entry["event"] for entry in logs] == ["webhook_received"] * 2
    accepted, rejected = logs
    assert accepted["provider"] == "stripe"
    assert accepted["delivery_id"] == "evt_1NqK2aLkdIwHu7ix0aBcDeF"
    assert accepted["type"] == "checkout.session.completed"
    assert accepted["outcome"] == "accepted"
    assert accepted["status"] == 200
    assert isinstance(accepted["duration_ms"], float)
    assert (rejected["outcome"], rejected["log_level"]) == ("invalid_signature", "warning")
    text = json.dumps(logs)
    for secret_or_pii in ("buyer@example.test", "whsec_", "cus_Test123", "4200"):
        assert secret_or_pii not in text


class _BrokenProvider:
    """A provider with a bug, to see what the endpoint does with the unexpected."""

    name = "stripe"

    def verify(self, body: bytes, headers: dict[str, str]) -> None:
        raise RuntimeError("a bug")

    def parse(self, body: bytes, headers: dict[str, str]) -> None:
        raise AssertionError("not reached")


def test_unexpected_error_is_a_json_500_with_one_log_line(app: Flask, client: FlaskClient) -> None:
    app.extensions["webhooks.providers"]["stripe"] = _BrokenProvider()
    with capture_logs() as logs:
        response = client.post("/webhooks/stripe", data=stripe_event())
    assert (response.status_code, response.json["error"]) == (500, "internal_error")
    [entry] = logs
    assert (entry["outcome"], entry["error"], entry["log_level"]) == (
        "internal_error",
        "RuntimeError",
        "error",
    )
    assert stored_rows(app) == []


def test_unregistered_provider_name_is_not_logged_verbatim(client: FlaskClient) -> None:
    with capture_logs() as logs:
        client.post("/webhooks/someone@example.test", data=b"{}")
    assert logs[0]["provider"] == "unknown"
    assert "someone@example.test" not in json.dumps(logs)


def test_storage_failure_logs_its_reason_without_the_body(sqlite_url: str) -> None:
    app = create_app(make_settings(sqlite_url, database_timeout=0.2))
    locker = sqlite3.connect(sqlite_url.removeprefix("sqlite:///"), isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")
    try:
        with capture_logs() as logs:
            StripeSender(app.test_client()).post(stripe_event())
    finally:
        locker.execute("ROLLBACK")
        locker.close()
    [entry] = logs
    assert entry["outcome"] == "storage_unavailable"
    assert entry["reason"] == "inbox write failed: OperationalError (SQLITE_BUSY)"
    assert "buyer@example.test" not in json.dumps(logs)


def test_metrics_are_off_without_a_token(client: FlaskClient) -> None:
    response = client.get("/metrics")
    assert (response.status_code, response.json["error"]) == (404, "metrics_disabled")
    assert "METRICS_TOKEN" in response.json["message"]


def test_the_inbox_records_which_secret_verified_and_how_often_it_came(
    app: Flask, stripe_sender: StripeSender, shopify_sender: ShopifySender
) -> None:
    # During a rotation the old secret still signs some deliveries: trace shows which.
    assert stripe_sender.post(stripe_event("evt_new_secret")).json == {"status": "accepted"}
    old = stripe_sender.post(stripe_event("evt_old_secret"), secret=STRIPE_OLD_SECRET)
    assert old.json == {"status": "accepted"}
    for _ in range(2):  # Stripe retries it twice more
        again = stripe_sender.post(stripe_event("evt_old_secret"), secret=STRIPE_OLD_SECRET)
        assert again.json == {"status": "duplicate"}
    rows = {row.delivery_id: row for row in stored_rows(app)}
    assert (rows["evt_new_secret"].secret_index, rows["evt_new_secret"].duplicates) == (0, 0)
    assert (rows["evt_old_secret"].secret_index, rows["evt_old_secret"].duplicates) == (1, 2)
    shopify_sender.post(shopify_order(), secret=SHOPIFY_OLD_SECRET)
    [shop] = [row for row in stored_rows(app) if row.provider == "shopify"]
    assert shop.secret_index == 1


def test_a_metrics_failure_never_fails_a_stored_webhook(
    app: Flask, stripe_sender: StripeSender, monkeypatch: pytest.MonkeyPatch
) -> None:
    class Broken:
        def labels(self, *_labels: str) -> None:
            raise OSError("PROMETHEUS_MULTIPROC_DIR is full")

    monkeypatch.setattr("webhooks.ingest.http.RECEIVED", Broken())
    answer = stripe_sender.post(stripe_event("evt_metrics_broken"))
    assert (answer.status_code, answer.json) == (200, {"status": "accepted"})
    assert [row.delivery_id for row in stored_rows(app)] == ["evt_metrics_broken"]


def test_only_handled_types_become_metric_labels(stripe_sender: StripeSender) -> None:
    from prometheus_client import REGISTRY

    def accepted(kind: str) -> float:
        labels = {"provider": "stripe", "type": kind, "outcome": "accepted"}
        return REGISTRY.get_sample_value("webhooks_received_total", labels) or 0.0

    before = accepted("other"), accepted("checkout.session.completed")
    stripe_sender.post(stripe_event("evt_label_1", event_type="checkout.session.completed"))
    stripe_sender.post(stripe_event("evt_label_2", event_type="anything.the.sender.likes"))
    assert (accepted("other"), accepted("checkout.session.completed")) == (
        before[0] + 1,
        before[1] + 1,
    )
    assert accepted("anything.the.sender.likes") == 0
