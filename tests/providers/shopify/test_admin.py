"""The Admin API client returns each record exactly as Shopify's webhook carries it."""

from __future__ import annotations

import copy
import json
import socket
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from tests.pipeline import FIXTURES
from webhooks.fakes.shopify import DEFAULT_TOKEN, FakeShopify
from webhooks.providers.base import BackfillRequest
from webhooks.providers.shopify.admin import ShopifyAdmin, next_link
from webhooks.providers.shopify.backfill import records
from webhooks.providers.shopify.settings import ShopifySettings, parse_tokens

SHOP = "example-shop.myshopify.com"


def body(case: str) -> dict[str, object]:
    return dict(json.loads((FIXTURES / "shopify" / f"{case}.json").read_text())["body"])


@pytest.fixture
def fake() -> Iterator[FakeShopify]:
    with FakeShopify() as running:
        running.add_shop(SHOP)
        yield running


def test_records_come_back_exactly_as_the_webhooks_carry_them(fake: FakeShopify) -> None:
    # A REST record and the webhook of its topic are the same JSON (Shopify serialises
    # webhooks from the REST resource: ../shared/reference/shopify.md, "Payloads are the
    # REST resource JSON"), so the backfill must hand the mappers each record exactly as
    # the API sent it. Served webhook fixtures must come back unchanged, nested refunds'
    # order_id included (ShopifyAPI's resource objects drop it).
    order = body("order_create")
    order["refunds"] = [body("refund_create_partial")]
    served = {
        "orders": order,
        "customers": body("customers_update"),
        "checkouts": body("checkout_create_customer_2024_10"),
    }
    for resource, record in served.items():
        fake.add(SHOP, resource, record)
    with ShopifyAdmin(SHOP, DEFAULT_TOKEN, "2025-10", fake.api_base) as admin:
        for resource, record in served.items():
            pages = list(admin.pages(resource, status="any"))
            assert pages == [[record]]


def test_backfill_turns_records_into_their_webhooks(fake: FakeShopify) -> None:
    now = datetime.now(UTC)
    order = copy.deepcopy(body("order_create"))
    stamp = now.isoformat()
    order.update(created_at=stamp, processed_at=stamp, updated_at=stamp, cancelled_at=stamp)
    order["refunds"] = [dict(body("refund_create_partial"), created_at=stamp)]
    fake.add(SHOP, "orders", order)
    # An order of last year merely tagged today: listed (updated in the range), but its
    # facts are not of the range, so it stands for no missed webhook.
    old = copy.deepcopy(body("order_create"))
    old.update(id=1, created_at="2025-11-01T10:00:00Z", updated_at=stamp)
    fake.add(SHOP, "orders", old)
    settings = ShopifySettings(
        admin_token=f"{SHOP}:{DEFAULT_TOKEN}",
        admin_api_base=fake.api_base,
        order_completed_topic="orders/paid",
    )
    found = list(records(settings, BackfillRequest(now - timedelta(hours=1))))
    topics = [sample.headers["X-Shopify-Topic"] for sample in found]
    # Paid, and the merchant counts paid orders: orders/paid, not orders/create.
    assert topics == ["orders/paid", "orders/cancelled", "refunds/create"]
    assert found[0].headers["X-Shopify-Webhook-Id"] == (
        f"backfill:orders/paid:{order['id']}:{order['updated_at']}"
    )
    assert found[2].headers["X-Shopify-Triggered-At"] == order["refunds"][0]["created_at"]
    assert all(sample.keyed_by_fact for sample in found)
    assert [sample.progress for sample in found] == [1.0, 1.0, 1.0]


def test_next_link_reads_shopifys_link_header() -> None:
    header = (
        '<https://s/a.json?page_info=p>; rel="previous", <https://s/a.json?page_info=n>; rel="next"'
    )
    assert next_link({"Link": header}) == "https://s/a.json?page_info=n"
    assert next_link({"link": '<https://s/a.json?page_info=p>; rel="previous"'}) is None
    assert next_link({}) is None


def test_admin_tokens_are_pairs_or_one_bare_token() -> None:
    assert parse_tokens("a.myshopify.com:shpat_1, B.myshopify.com:shpat_2") == {
        "a.myshopify.com": "shpat_1",
        "b.myshopify.com": "shpat_2",
    }
    assert parse_tokens("shpat_only") == {"": "shpat_only"}
    for bad, reason in (
        ("shop.example.com:shpat_1", "not a myshopify.com domain"),
        ("a.myshopify.com:", "empty"),
        ("a.myshopify.com:x,a.myshopify.com:y", "twice"),
        ("shpat_1,a.myshopify.com:shpat_2", "not both"),
        ("shpat_replace_me", "placeholder"),
    ):
        with pytest.raises(ValueError, match=reason):
            parse_tokens(bad)


def test_shopify_failing_or_unreachable_is_retried_then_unavailable(
    fake: FakeShopify, monkeypatch: pytest.MonkeyPatch
) -> None:
    from webhooks.errors import LookupUnavailable
    from webhooks.providers.shopify import admin

    waits: list[float] = []
    fake.add(SHOP, "orders", {"id": 1, "updated_at": "2026-11-30T10:00:00Z"})
    fake.set_faults(status=503, times=2)
    with ShopifyAdmin(SHOP, DEFAULT_TOKEN, "2025-10", fake.api_base, sleep=waits.append) as api:
        assert api.count("orders", status="any") == 1
    assert waits == [1.0, 2.0]  # backed off, doubling
    monkeypatch.setattr(admin, "ATTEMPTS", 3)
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()  # nothing listens there now
    gone = f"http://127.0.0.1:{port}/{{shop}}"
    with (
        pytest.raises(LookupUnavailable, match=r"did not answer orders .* after 3 tries"),
        ShopifyAdmin(SHOP, DEFAULT_TOKEN, "2025-10", gone, sleep=waits.append) as api,
    ):
        list(api.pages("orders"))
