"""A fake Shopify Admin API (REST lists, GraphQL webhook subscriptions) for tests."""

from __future__ import annotations

from webhooks.fakes.shopify.server import DEFAULT_TOKEN, FakeShopify

__all__ = ["DEFAULT_TOKEN", "FakeShopify"]
