"""Shared fixtures: a fresh database per test (SQLite always, PostgreSQL when configured)."""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from webhooks.app import create_app
from webhooks.config import Settings, load_settings
from webhooks.fakes.stripe import FakeStripe
from webhooks.providers.shopify import signature as shopify
from webhooks.providers.stripe import signature as stripe
from webhooks.storage.db import create_db_engine
from webhooks.storage.schema import inbox

STRIPE_SECRET = "whsec_test_primary"
STRIPE_OLD_SECRET = "whsec_test_previous"
SHOPIFY_SECRET = "shpss_test_client_secret"
SHOPIFY_OLD_SECRET = "shpss_test_previous_secret"
# Standard Webhooks secrets: whsec_ + base64 of a 24-byte key.
APP_SECRET = "whsec_YXBwLXRlc3QtcHJpbWFyeS1rZXktMjRi"
APP_OLD_SECRET = "whsec_YXBwLXRlc3QtcHJldmlvdXMta2V5LTI0"

TEST_DATABASE_URL = os.environ.get("TEST_DATABASE_URL")


def backend_params() -> list[Any]:
    """SQLite always; PostgreSQL as well when TEST_DATABASE_URL is set."""
    params: list[Any] = ["sqlite"]
    if TEST_DATABASE_URL:
        params.append("postgresql")
    return params


def _pg_schema_url(schema: str) -> str:
    assert TEST_DATABASE_URL
    sep = "&" if "?" in TEST_DATABASE_URL else "?"
    return f"{TEST_DATABASE_URL}{sep}options=-csearch_path%3D{schema}"


@pytest.fixture(params=backend_params())
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A URL to an empty database: a temp SQLite file, or a fresh PostgreSQL schema.

    With TEST_DATABASE_URL set but unreachable this fixture errors: a configured
    PostgreSQL that cannot be reached fails the run instead of silently skipping.
    """
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'inbox.db'}"
        return
    with fresh_pg_schema() as url:
        yield url


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL schema, for behaviour only a database server has."""
    if not TEST_DATABASE_URL:
        pytest.skip("TEST_DATABASE_URL is not set (CI sets it)")
    with fresh_pg_schema() as url:
        yield url


@contextmanager
def fresh_pg_schema() -> Iterator[str]:
    """Create an empty schema on TEST_DATABASE_URL; yield a URL bound to it; drop it."""
    assert TEST_DATABASE_URL
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(TEST_DATABASE_URL, poolclass=sa.NullPool)
    with admin.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield _pg_schema_url(schema)
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A temp SQLite database, for tests that are about HTTP rather than storage."""
    return f"sqlite:///{tmp_path / 'inbox.db'}"


def make_settings(database_url: str, **overrides: Any) -> Settings:
    """Settings for tests, isolated from the developer's environment and .env file."""
    values: dict[str, Any] = {
        "database_url": database_url,
        "stripe_webhook_secret": f"{STRIPE_SECRET},{STRIPE_OLD_SECRET}",
        "shopify_webhook_secret": f"{SHOPIFY_SECRET},{SHOPIFY_OLD_SECRET}",
        "app_webhook_secret": f"{APP_SECRET},{APP_OLD_SECRET}",
        "log_format": "console",
    }
    values.update(overrides)
    return load_settings(_env_file=None, **values)


@pytest.fixture
def app(sqlite_url: str) -> Iterator[Flask]:
    """A fresh app on a temp SQLite database with both providers configured."""
    application = create_app(make_settings(sqlite_url))
    yield application
    application.extensions["webhooks.engine"].dispose()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    """A test client for `app`."""
    return app.test_client()


def stored_rows(app: Flask) -> list[sa.Row[Any]]:
    """Every inbox row of the app's database, oldest first."""
    with app.extensions["webhooks.engine"].connect() as conn:
        return list(conn.execute(sa.select(inbox).order_by(inbox.c.id)))


def count_rows(url: str) -> int:
    """How many deliveries the inbox at `url` holds."""
    db = create_db_engine(url)
    try:
        with db.connect() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(inbox)).scalar_one())
    finally:
        db.dispose()


def stripe_event(
    event_id: str = "evt_1NqK2aLkdIwHu7ix0aBcDeF",
    event_type: str = "checkout.session.completed",
    **extra: Any,
) -> bytes:
    """A Stripe event body shaped like the real thing (no personal data)."""
    event: dict[str, Any] = {
        "id": event_id,
        "object": "event",
        "api_version": "2025-03-31.basil",
        "created": int(time.time()) - 5,
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None},
        "type": event_type,
        "data": {
            "object": {
                "id": "cs_test_a1b2c3",
                "object": "checkout.session",
                "amount_total": 4200,
                "currency": "usd",
                "customer": "cus_Test123",
                "customer_details": {"email": "buyer@example.test"},
                "payment_status": "paid",
            }
        },
    }
    event.update(extra)
    return json.dumps(event).encode()


def shopify_order(order_id: int = 820982911946154508) -> bytes:
    """A Shopify order body shaped like the real thing (no personal data)."""
    return json.dumps(
        {
            "id": order_id,
            "email": "buyer@example.test",
            "total_price": "42.00",
            "currency": "USD",
            "updated_at": "2026-11-28T10:00:00-05:00",
            "line_items": [{"id": 1, "sku": "SKU-1", "quantity": 1, "price": "42.00"}],
        }
    ).encode()


class StripeSender:
    """Posts Stripe deliveries signed the way Stripe signs them."""

    def __init__(self, client: FlaskClient) -> None:
        self.client = client

    def post(
        self,
        body: bytes,
        secret: str | list[str] = STRIPE_SECRET,
        timestamp: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> TestResponse:
        """Sign `body` with `secret` (unless headers override) and post it."""
        sent = {"Stripe-Signature": stripe.sign(body, secret, timestamp)}
        sent.update(headers or {})
        return self.client.post(
            "/webhooks/stripe", data=body, headers=sent, content_type="application/json"
        )


def shopify_headers(
    body: bytes,
    secret: str = SHOPIFY_SECRET,
    topic: str = "orders/create",
    webhook_id: str | None = "b54557e4-bdd9-4b37-8a5f-bf7d70bcd043",
    **extra: str,
) -> dict[str, str]:
    """The headers of a classic Shopify delivery of `body`."""
    headers = {
        "X-Shopify-Hmac-Sha256": shopify.sign(body, secret),
        "X-Shopify-Topic": topic,
        "X-Shopify-Shop-Domain": "example-shop.myshopify.com",
        "X-Shopify-API-Version": "2026-04",
        "X-Shopify-Event-Id": "98880550-7158-44d4-b7cd-2c97c8a091b5",
        "X-Shopify-Triggered-At": "2026-11-28T15:00:01.123456789Z",
    }
    if webhook_id is not None:
        headers["X-Shopify-Webhook-Id"] = webhook_id
    headers.update(extra)
    return headers


class ShopifySender:
    """Posts Shopify deliveries signed the way Shopify signs them."""

    def __init__(self, client: FlaskClient) -> None:
        self.client = client

    def post(self, body: bytes, headers: dict[str, str] | None = None, **kw: Any) -> TestResponse:
        """Post `body` with `headers` (default: a valid signed orders/create delivery)."""
        sent = headers if headers is not None else shopify_headers(body, **kw)
        return self.client.post(
            "/webhooks/shopify", data=body, headers=sent, content_type="application/json"
        )


@pytest.fixture
def stripe_sender(client: FlaskClient) -> StripeSender:
    """Signed Stripe requests against the test app."""
    return StripeSender(client)


@pytest.fixture
def shopify_sender(client: FlaskClient) -> ShopifySender:
    """Signed Shopify requests against the test app."""
    return ShopifySender(client)


@pytest.fixture
def fake_stripe() -> Iterator[FakeStripe]:
    """A fake Stripe API on a free port, served from a thread for this test."""
    with FakeStripe() as fake:
        yield fake


# The pipeline fixtures (a migrated database of each backend, a scripted Customer.io).
from tests.pipeline import cio, engine  # noqa: E402, F401
