"""`webhooks backfill|reconcile|register shopify` against the fake Shopify Admin API over
HTTP (ShopifyAPI's REST client, GraphQL through httpx), through the pipeline to the fake
Customer.io over HTTP."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from click.testing import CliRunner, Result
from sqlalchemy.engine import Engine

from tests.conftest import SHOPIFY_SECRET, ShopifySender, make_settings, shopify_headers
from tests.ops.conftest import as_json, worker
from tests.pipeline import FIXTURES, inbox_rows, outbox_rows
from webhooks.app import create_app
from webhooks.cli import main
from webhooks.fakes.customerio import FakeCustomerIO
from webhooks.fakes.shopify import DEFAULT_TOKEN, FakeShopify
from webhooks.providers.shopify import admin
from webhooks.stage2.customerio import CustomerIO

SHOP = "example-shop.myshopify.com"
OTHER = "second-shop.myshopify.com"
ORDER = json.loads((FIXTURES / "shopify" / "order_create.json").read_text())["body"]
REFUND = json.loads((FIXTURES / "shopify" / "refund_create_partial.json").read_text())["body"]
CUSTOMER = json.loads((FIXTURES / "shopify" / "customers_update.json").read_text())["body"]
CHECKOUT = json.loads((FIXTURES / "shopify" / "checkout_create_customer_2024_10.json").read_text())[
    "body"
]
URL = "https://hooks.example.test/webhooks/shopify"


def ago(minutes: float) -> str:
    return (datetime.now(UTC) - timedelta(minutes=minutes)).isoformat(timespec="seconds")


def order(n: int, minutes_ago: float) -> dict[str, Any]:
    """An order of the webhook's (= the REST resource's) shape, its own id and checkout."""
    record = copy.deepcopy(ORDER)
    record.update(
        id=7_000_000 + n,
        name=f"#{1000 + n}",
        created_at=ago(minutes_ago),
        updated_at=ago(minutes_ago),
        checkout_token=f"ck{n:030d}",
        refunds=[],
    )
    return record


@pytest.fixture
def fake_shopify() -> Iterator[FakeShopify]:
    with FakeShopify() as fake:
        fake.add_shop(SHOP)
        yield fake


@pytest.fixture
def cio() -> Iterator[tuple[FakeCustomerIO, CustomerIO]]:
    import httpx

    with (
        FakeCustomerIO() as fake,
        httpx.Client(base_url=fake.url, auth=fake.auth, timeout=5) as http,
    ):
        yield fake, CustomerIO(http)


@pytest.fixture(autouse=True)
def small_pages(monkeypatch: pytest.MonkeyPatch) -> None:
    # 50 a page instead of 250, so a few dozen orders take several Link-header pages.
    monkeypatch.setattr(admin, "PAGE", 50)


def cli(engine: Engine, fake: FakeShopify, *args: str, token: str | None = None) -> Result:
    env = cli_env(engine, fake, token)
    return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)


def cli_env(engine: Engine, fake: FakeShopify, token: str | None = None) -> dict[str, str]:
    return {
        "DATABASE_URL": engine.url.render_as_string(hide_password=False),
        "STRIPE_WEBHOOK_SECRET": "",
        "SHOPIFY_WEBHOOK_SECRET": SHOPIFY_SECRET,
        "SHOPIFY_ADMIN_TOKEN": f"{SHOP}:{DEFAULT_TOKEN}" if token is None else token,
        "SHOPIFY_ADMIN_API_BASE": fake.api_base,
        "LOG_LEVEL": "WARNING",
    }


def webhook(engine: Engine, topic: str, body: dict[str, Any], webhook_id: str) -> None:
    app = create_app(make_settings(engine.url.render_as_string(hide_password=False)))
    try:
        data = json.dumps(body).encode()
        headers = shopify_headers(data, topic=topic, webhook_id=webhook_id)
        headers["X-Shopify-Triggered-At"] = body.get("updated_at") or ago(0)
        assert ShopifySender(app.test_client()).post(data, headers).status_code == 200
    finally:
        app.extensions["webhooks.engine"].dispose()


def deliver(engine: Engine, client: CustomerIO) -> None:
    run = worker(engine, client)
    for _ in range(20):
        if not run.run_once():
            return


def events(fake: FakeCustomerIO, name: str) -> list[dict[str, Any]]:
    accepted = [op["operation"] for op in fake.operations()]
    return [op for op in accepted if op.get("action") == "event" and op.get("name") == name]


def test_after_a_six_hour_outage_backfill_delivers_exactly_the_missing_orders_once(
    engine: Engine, fake_shopify: FakeShopify, cio: tuple[FakeCustomerIO, CustomerIO]
) -> None:
    fake_cio, client = cio
    # 120 orders over the last 7 hours, one every 3.5 minutes (none near the 60-minute
    # live window, so the split is not decided by a second); the endpoint was down for
    # the 6 hours before the last 30 minutes (Shopify gave up and removed the subscription).
    orders = [order(n, minutes_ago=421 - 3.5 * n) for n in range(120)]
    for record in orders:
        fake_shopify.add(SHOP, "orders", record)
    received = [r for r in orders if not 30 < _age(r) <= 390]
    for record in received:
        webhook(engine, "orders/create", record, f"wh-{record['id']}")
    deliver(engine, client)
    assert len(events(fake_cio, "order_completed")) == len(received)

    dry = cli(engine, fake_shopify, "backfill", "shopify", "--since", "8h", "--dry-run", "--json")
    assert dry.exit_code == 0, dry.output
    missing = len(orders) - len(received)
    assert (as_json(dry)["new"], as_json(dry)["duplicates"]) == (missing, len(received))
    stored_before = len(inbox_rows(engine))
    result = cli(engine, fake_shopify, "backfill", "shopify", "--since", "8h", "--topics", "orders")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"fetched 120: stored {missing} new in the backfill lane")
    # Orders the webhooks reported are not stored again: only the missing ones are.
    assert len(inbox_rows(engine)) == stored_before + missing
    pages = [r for r in fake_shopify.requests() if r["path"].endswith("/orders.json")]
    assert len(pages) == 3 * 2  # 120 at 50 a page, for the dry run and the real one
    assert "page_info" in pages[1]["query"]

    deliver(engine, client)
    sent = events(fake_cio, "order_completed")
    ids = sorted(int(e["attributes"]["order_id"]) for e in sent)
    # Missed orders younger than the live window (1 h) go out as their webhooks would
    # have; older ones are history: their event withheld, so no journey starts late.
    young = [r for r in orders if r not in received and _age(r) < 60]
    assert ids == sorted(r["id"] for r in received + young)  # each once
    completed = [row for row in outbox_rows(engine) if row.op_key.startswith("order_completed:")]
    assert len(completed) == len(orders)  # one fact per order, whatever reported it
    withheld = [row for row in completed if row.state == "suppressed"]
    assert len(withheld) == len(orders) - len(ids)
    assert all(row.last_error.startswith("history: backfilled") for row in withheld)

    again = cli(engine, fake_shopify, "backfill", "shopify", "--since", "8h", "--json")
    assert (as_json(again)["new"], as_json(again)["fetched"]) == (0, 120)
    deliver(engine, client)
    assert len(events(fake_cio, "order_completed")) == len(sent)  # a rerun sends nothing


def _age(record: dict[str, Any]) -> float:
    created = datetime.fromisoformat(record["created_at"])
    return (datetime.now(UTC) - created).total_seconds() / 60


def test_a_webhook_arriving_during_the_backfill_gives_one_event(
    engine: Engine, fake_shopify: FakeShopify, cio: tuple[FakeCustomerIO, CustomerIO]
) -> None:
    fake_cio, client = cio
    record = order(1, minutes_ago=10)
    fake_shopify.add(SHOP, "orders", record)
    result = cli(engine, fake_shopify, "backfill", "shopify", "--since", "1h", "--json")
    assert as_json(result)["new"] == 1
    # Shopify's own retry lands after the backfill stored the order, before mapping.
    webhook(engine, "orders/create", record, "wh-late-retry")
    deliver(engine, client)
    [completed] = events(fake_cio, "order_completed")
    assert completed["attributes"]["order_id"] == str(record["id"])


def test_refunds_cancellations_customers_and_abandoned_checkouts(
    engine: Engine, fake_shopify: FakeShopify, cio: tuple[FakeCustomerIO, CustomerIO]
) -> None:
    fake_cio, client = cio
    refunded = order(1, minutes_ago=20)
    refund = dict(copy.deepcopy(REFUND), order_id=refunded["id"], created_at=ago(15))
    refunded["refunds"] = [refund]
    cancelled = order(2, minutes_ago=25)
    cancelled.update(cancelled_at=ago(5), updated_at=ago(5), cancel_reason="customer")
    for record in (refunded, cancelled):
        fake_shopify.add(SHOP, "orders", record)
    fake_shopify.add(SHOP, "customers", dict(copy.deepcopy(CUSTOMER), updated_at=ago(30)))
    checkout = dict(copy.deepcopy(CHECKOUT), created_at=ago(12), updated_at=ago(11))
    fake_shopify.add(SHOP, "checkouts", checkout)
    result = cli(engine, fake_shopify, "backfill", "shopify", "--since", "1h", "--json")
    assert result.exit_code == 0, result.output
    summary = as_json(result)
    assert summary["new_by_type"] == {
        "checkouts/create": 1,
        "orders/cancelled": 1,
        "orders/create": 2,
        "refunds/create": 1,
    }
    # A customer record reports no fact of its own: it refreshes the person's attributes.
    assert summary["refreshed"] == 1
    deliver(engine, client)
    assert [e["attributes"]["order_id"] for e in events(fake_cio, "order_canceled")] == [
        str(cancelled["id"])
    ]
    [issued] = events(fake_cio, "refund_issued")
    assert issued["attributes"]["refund_id"] == str(refund["id"])
    # The abandoned checkout of 12 minutes ago is young enough to start its journey.
    [started] = events(fake_cio, "checkout_started")
    assert started["attributes"]["cart_id"] == CHECKOUT["token"]


def test_rate_limits_are_honoured(engine: Engine, fake_shopify: FakeShopify) -> None:
    for n in range(120):
        fake_shopify.add(SHOP, "orders", order(n, minutes_ago=30))
    # A bucket of 4 leaking 20 a second: the client paces itself by the call-limit header
    # and waits out a 429's Retry-After.
    fake_shopify.set_bucket(SHOP, capacity=4, leak_per_second=20.0)
    fake_shopify.set_faults(status=429, retry_after=0.2, times=2)
    result = cli(engine, fake_shopify, "backfill", "shopify", "--since", "1h", "--json")
    assert result.exit_code == 0, result.output
    assert as_json(result)["new"] == 120
    statuses = [r["status"] for r in fake_shopify.requests()]
    assert statuses[:2] == [429, 429]
    assert 429 not in statuses[2:]  # paced by the header after that


def test_a_refused_token_or_an_uninstalled_app_is_a_clear_error(
    engine: Engine, fake_shopify: FakeShopify
) -> None:
    wrong = cli(engine, fake_shopify, "backfill", "shopify", "--since", "1h", token=f"{SHOP}:x")
    assert wrong.exit_code == 1
    assert "refused the Admin API token of example-shop.myshopify.com (401)" in wrong.stderr
    fake_shopify.uninstall(SHOP)
    gone = cli(engine, fake_shopify, "backfill", "shopify", "--since", "1h")
    assert gone.exit_code == 1
    assert "the app was uninstalled from the shop" in gone.stderr
    missing = cli(engine, fake_shopify, "backfill", "shopify", "--since", "1h", token="")
    assert (missing.exit_code, "no SHOPIFY_ADMIN_TOKEN" in missing.stderr) == (1, True)
    unknown = cli(engine, fake_shopify, "backfill", "shopify", "--since", "1h", "--topics", "x")
    assert "not Shopify backfill topics: x" in unknown.stderr
    assert inbox_rows(engine) == []


def test_several_shops_each_with_its_token(engine: Engine, fake_shopify: FakeShopify) -> None:
    fake_shopify.add_shop(OTHER, "shpat_second")
    fake_shopify.add(SHOP, "orders", order(1, minutes_ago=10))
    fake_shopify.add(OTHER, "orders", order(2, minutes_ago=10))
    tokens = f"{SHOP}:{DEFAULT_TOKEN},{OTHER}:shpat_second"
    both = cli(engine, fake_shopify, "backfill", "shopify", "--since", "1h", "--json", token=tokens)
    assert as_json(both)["new"] == 2
    assert sorted(row.account for row in inbox_rows(engine)) == [SHOP, OTHER]
    one = cli(engine, fake_shopify, "backfill", "shopify", "--since", "1h", "--shop", OTHER,
              "--json", token=tokens)  # fmt: skip
    assert (as_json(one)["fetched"], as_json(one)["duplicates"]) == (1, 1)


def test_reconcile_reports_what_the_shopify_webhooks_missed(
    engine: Engine, fake_shopify: FakeShopify
) -> None:
    received, missed = order(1, minutes_ago=40), order(2, minutes_ago=30)
    for record in (received, missed):
        fake_shopify.add(SHOP, "orders", record)
    webhook(engine, "orders/create", received, "wh-received")
    worker(engine, None).run_once()  # mapped: its order_completed is in the outbox
    first = cli(engine, fake_shopify, "reconcile", "--since", "24h")
    assert first.exit_code == 1, first.output
    assert "shopify: 2 fetched, 1 already received, 1 missed by the webhooks" in first.stdout
    again = cli(engine, fake_shopify, "reconcile", "--since", "24h")
    assert again.exit_code == 0, again.output
    fake_shopify.uninstall(SHOP)
    refused = cli(engine, fake_shopify, "reconcile", "--since", "24h")
    assert refused.exit_code == 3
    assert "shopify: not checked (LookupUnauthorized" in refused.stdout


def test_register_creates_the_handled_topics_once_and_repairs_drift(
    engine: Engine, fake_shopify: FakeShopify
) -> None:
    from webhooks.providers.shopify.register import handled_topics, topic_enum

    dry = cli(engine, fake_shopify, "register", "shopify", "--url", URL, "--dry-run")
    assert dry.stdout.startswith(f"{SHOP}: would create {URL}"), dry.output
    assert fake_shopify.subscriptions(SHOP) == []
    # One THROTTLED answer on the way: waited out by the restore rate.
    fake_shopify.set_faults(graphql_throttled=True, times=1)
    created = cli(engine, fake_shopify, "register", "shopify", "--url", URL, "--json")
    assert created.exit_code == 0, created.output
    [found] = as_json(created)["targets"]
    assert found["action"] == "create"
    topics = sorted(s["topic"] for s in fake_shopify.subscriptions(SHOP))
    assert topics == sorted(topic_enum(t) for t in handled_topics())
    assert "CUSTOMERS_REDACT" not in topics  # privacy topics live in the app's config

    # Someone deletes one and subscribes the URL to a topic no mapper handles.
    first = fake_shopify.subscriptions(SHOP)[0]
    del fake_shopify.state.shops[SHOP].subscriptions[first["id"]]
    stale = dict(first, id="gid://shopify/WebhookSubscription/999", topic="PRODUCTS_UPDATE")
    fake_shopify.state.shops[SHOP].subscriptions[stale["id"]] = stale
    other = dict(first, id="gid://shopify/WebhookSubscription/998", uri="https://other.test/x")
    fake_shopify.state.shops[SHOP].subscriptions[other["id"]] = other
    updated = cli(engine, fake_shopify, "register", "shopify", "--url", URL)
    [deleted] = [topic for topic in handled_topics() if topic_enum(topic) == first["topic"]]
    assert f"  + {deleted}" in updated.stdout
    assert "  - PRODUCTS_UPDATE" in updated.stdout
    assert "other endpoint: https://other.test/x" in updated.stdout

    before = fake_shopify.subscriptions(SHOP)
    again = cli(engine, fake_shopify, "register", "shopify", "--url", URL, "--json")
    assert [t["action"] for t in as_json(again)["targets"]] == ["unchanged"]
    assert fake_shopify.subscriptions(SHOP) == before  # the second run changed nothing


def test_register_with_a_refused_token_says_so(engine: Engine, fake_shopify: FakeShopify) -> None:
    fake_shopify.uninstall(SHOP)
    refused = cli(engine, fake_shopify, "register", "shopify", "--url", URL)
    assert refused.exit_code == 1
    assert "uninstalled" in refused.stderr


def test_shopify_down_is_waited_out_then_reported(
    engine: Engine, fake_shopify: FakeShopify, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(admin, "BACKOFF", 0.01)
    fake_shopify.add(SHOP, "orders", order(1, minutes_ago=10))
    fake_shopify.set_faults(status=503, times=3)
    result = cli(engine, fake_shopify, "backfill", "shopify", "--since", "1h", "--json")
    assert result.exit_code == 0, result.output  # three 503s, then it answered
    assert as_json(result)["new"] == 1
    fake_shopify.set_faults(status=500, times=100)
    down = cli(engine, fake_shopify, "backfill", "shopify", "--since", "1h")
    assert down.exit_code == 1
    assert "Shopify did not answer" in down.stderr
    assert "rerun to go on" in down.stderr
    checked = cli(engine, fake_shopify, "reconcile", "--since", "1h")
    assert checked.exit_code == 3  # could not check: alert, do not claim all is well
    assert "shopify: not checked (LookupUnavailable" in checked.stdout


def test_register_needs_an_api_version_with_uri_and_pages_the_list(
    engine: Engine, fake_shopify: FakeShopify
) -> None:
    old = cli(engine, fake_shopify, "register", "shopify", "--url", URL)
    assert old.exit_code == 0, old.output
    fake_shopify.state.page_size = 3  # the existing subscriptions take several pages
    again = cli(engine, fake_shopify, "register", "shopify", "--url", URL, "--json")
    assert [t["action"] for t in as_json(again)["targets"]] == ["unchanged"]
    env_old = cli_env(engine, fake_shopify) | {"SHOPIFY_API_VERSION": "2025-07"}
    refused = CliRunner().invoke(main, ["register", "shopify", "--url", URL], env=env_old)
    assert refused.exit_code == 1
    assert "register needs SHOPIFY_API_VERSION 2025-10 or later" in refused.stderr
