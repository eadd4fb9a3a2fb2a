"""The fake Shopify Admin API speaks Shopify's REST and GraphQL contract over HTTP."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from webhooks.fakes.shopify import DEFAULT_TOKEN, FakeShopify

SHOP = "example-shop.myshopify.com"


@pytest.fixture
def fake() -> Iterator[FakeShopify]:
    with FakeShopify() as running:
        running.add_shop(SHOP)
        for n in range(5):
            running.add(SHOP, "orders", {"id": n + 1, "updated_at": "2026-11-30T10:00:00Z"})
        yield running


def get(fake: FakeShopify, path: str, token: str = DEFAULT_TOKEN, **params: Any) -> httpx.Response:
    url = f"{fake.url}/{SHOP}/admin/api/2025-10/{path}"
    return httpx.get(url, params=params, headers={"X-Shopify-Access-Token": token})


def test_pages_follow_the_link_header_and_the_cursor_keeps_the_filters(fake: FakeShopify) -> None:
    first = get(fake, "orders.json", limit=2, status="any", updated_at_min="2026-11-30T09:00:00Z")
    assert [o["id"] for o in first.json()["orders"]] == [1, 2]
    assert 'rel="next"' in first.headers["link"]
    assert first.headers["x-shopify-shop-api-call-limit"] == "1/40"
    next_url = first.headers["link"].split(";")[0].strip("<>")
    second = httpx.get(next_url, headers={"X-Shopify-Access-Token": DEFAULT_TOKEN})
    assert [o["id"] for o in second.json()["orders"]] == [3, 4]
    assert 'rel="previous"' in second.headers["link"]
    mixed = get(fake, "orders.json", page_info="x", status="any")
    assert mixed.status_code == 400  # Shopify refuses filters beside a cursor
    assert get(fake, "orders/count.json", status="any").json() == {"count": 5}


def test_the_bucket_the_token_and_an_uninstalled_app(fake: FakeShopify) -> None:
    fake.set_bucket(SHOP, capacity=2, leak_per_second=0.1)
    assert [get(fake, "orders.json").status_code for _ in range(3)] == [200, 200, 429]
    throttled = get(fake, "orders.json")
    assert throttled.headers["retry-after"] == "2.0"
    assert "Exceeded 2 calls per second" in throttled.json()["errors"]
    assert get(fake, "orders.json", token="wrong").status_code == 401
    fake.uninstall(SHOP)
    revoked = get(fake, "orders.json")
    assert revoked.status_code == 401
    assert "Invalid API key or access token" in revoked.json()["errors"]
    other = httpx.get(f"{fake.url}/nope.myshopify.com/admin/api/2025-10/orders.json")
    assert other.status_code == 404


def graphql(fake: FakeShopify, query: str, **variables: Any) -> dict[str, Any]:
    answer = httpx.post(
        f"{fake.url}/{SHOP}/admin/api/2025-10/graphql.json",
        json={"query": query, "variables": variables},
        headers={"X-Shopify-Access-Token": DEFAULT_TOKEN},
    )
    assert answer.status_code == 200
    return dict(json.loads(answer.content))


CREATE = "mutation { webhookSubscriptionCreate(...) }"


def test_subscriptions_are_created_once_and_throttling_is_reported(fake: FakeShopify) -> None:
    sub = {"uri": "https://hooks.example.test/webhooks/shopify", "format": "JSON"}
    created = graphql(fake, CREATE, topic="ORDERS_CREATE", webhookSubscription=sub)
    node = created["data"]["webhookSubscriptionCreate"]["webhookSubscription"]
    assert node["topic"] == "ORDERS_CREATE"
    assert created["extensions"]["cost"]["throttleStatus"]["maximumAvailable"] == 2000.0
    again = graphql(fake, CREATE, topic="ORDERS_CREATE", webhookSubscription=sub)
    [error] = again["data"]["webhookSubscriptionCreate"]["userErrors"]
    assert error["message"] == "Address for this topic has already been taken"
    insecure = dict(sub, uri="http://hooks.example.test/x")
    refused = graphql(fake, CREATE, topic="ORDERS_CREATE", webhookSubscription=insecure)
    assert refused["data"]["webhookSubscriptionCreate"]["userErrors"]
    fake.set_faults(graphql_throttled=True, times=1)
    throttled = graphql(fake, "query { webhookSubscriptions(first: 100) { edges } }")
    assert throttled["errors"][0]["extensions"]["code"] == "THROTTLED"
    listed = graphql(fake, "query { webhookSubscriptions(first: 100) { edges } }")
    assert [e["node"]["id"] for e in listed["data"]["webhookSubscriptions"]["edges"]] == [
        node["id"]
    ]


def test_uri_exists_from_2025_10_only(fake: FakeShopify) -> None:
    answer = httpx.post(
        f"{fake.url}/{SHOP}/admin/api/2025-07/graphql.json",
        json={"query": "query { webhookSubscriptions(first: 1) { edges { node { uri } } } }"},
        headers={"X-Shopify-Access-Token": DEFAULT_TOKEN},
    )
    assert answer.json()["errors"][0]["message"].startswith("Field 'uri' doesn't exist")
