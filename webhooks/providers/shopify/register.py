"""Shopify's side of `webhooks register shopify`: one subscription per handled topic.

Subscriptions are managed through the GraphQL Admin API (`webhookSubscriptions`,
`webhookSubscriptionCreate`, `webhookSubscriptionDelete`): the topics the mappers handle
that are missing at the URL are created, subscriptions at the URL to topics no mapper
handles are deleted, and a second run changes nothing. The privacy (compliance) topics
are not subscriptions: they are set in the app's configuration.
"""

from __future__ import annotations

from typing import Any

from mappers.shopify import HANDLERS
from webhooks.errors import ConfigError, LookupRefused
from webhooks.providers.base import RegisterRequest
from webhooks.providers.shopify.admin import ShopifyAdmin
from webhooks.providers.shopify.backfill import shops
from webhooks.providers.shopify.settings import ShopifySettings

MIN_VERSION = "2025-10"  # the first with `uri` on WebhookSubscription and its input
COMPLIANCE = frozenset({"customers/redact", "customers/data_request", "shop/redact"})
NOTE = (
    "Shopify signs these with the app's client secret (SHOPIFY_WEBHOOK_SECRET); the "
    "privacy topics customers/redact, customers/data_request and shop/redact are set in "
    "the app's configuration, not here"
)

LIST = """
query Subscriptions($after: String) {
  webhookSubscriptions(first: 100, after: $after) {
    edges { node { id topic uri format } }
    pageInfo { hasNextPage endCursor }
  }
}"""
CREATE = """
mutation Create(
  $topic: WebhookSubscriptionTopic!
  $webhookSubscription: WebhookSubscriptionInput!
) {
  webhookSubscriptionCreate(topic: $topic, webhookSubscription: $webhookSubscription) {
    webhookSubscription { id topic uri format }
    userErrors { field message }
  }
}"""
DELETE = """
mutation Delete($id: ID!) {
  webhookSubscriptionDelete(id: $id) {
    deletedWebhookSubscriptionId
    userErrors { field message }
  }
}"""


def topic_enum(topic: str) -> str:
    """`orders/create` as GraphQL's WebhookSubscriptionTopic: ORDERS_CREATE."""
    return topic.replace("/", "_").upper()


def handled_topics() -> list[str]:
    """The topics to subscribe to: every handled one but the privacy topics."""
    return sorted(set(HANDLERS) - COMPLIANCE)


def register(settings: ShopifySettings, request: RegisterRequest) -> list[dict[str, Any]]:
    """Bring each shop's subscriptions at the URL to exactly the handled topics."""
    if settings.api_version < MIN_VERSION:
        raise ConfigError(
            f"register needs SHOPIFY_API_VERSION {MIN_VERSION} or later (subscriptions' "
            f"`uri` field); it is {settings.api_version}"
        )
    results = []
    for shop, token in shops(settings, request.accounts):
        with ShopifyAdmin(shop, token, settings.api_version, settings.admin_api_base) as admin:
            results.append(_register_shop(admin, request))
    return results


def _register_shop(admin: ShopifyAdmin, request: RegisterRequest) -> dict[str, Any]:
    wanted = {topic_enum(topic): topic for topic in handled_topics()}
    existing = _subscriptions(admin)
    here = [node for node in existing if node.get("uri") == request.url]
    have = {str(node.get("topic")) for node in here}
    added = sorted(wanted[enum] for enum in set(wanted) - have)
    stale = [node for node in here if node.get("topic") not in wanted]
    removed = sorted(str(node.get("topic")) for node in stale)
    others = sorted({str(node.get("uri")) for node in existing if node.get("uri") != request.url})
    action = "unchanged" if not added and not removed else "create" if not here else "update"
    if not request.dry_run:
        for topic in added:
            subscription = {"uri": request.url, "format": "JSON"}
            _mutate(
                admin,
                CREATE,
                "webhookSubscriptionCreate",
                topic=topic_enum(topic),
                webhookSubscription=subscription,
            )
        for node in stale:
            _mutate(admin, DELETE, "webhookSubscriptionDelete", id=node["id"])
    return {
        "target": admin.shop,
        "action": action,
        "url": request.url,
        "events": sorted(wanted.values()),
        "added": added,
        "removed": removed,
        "other_endpoints": others,
        "note": NOTE,
    }


def _subscriptions(admin: ShopifyAdmin) -> list[dict[str, Any]]:
    nodes: list[dict[str, Any]] = []
    after = None
    while True:
        page = admin.graphql(LIST, {"after": after}).get("webhookSubscriptions") or {}
        nodes += [edge["node"] for edge in page.get("edges") or [] if edge.get("node")]
        info = page.get("pageInfo") or {}
        if not info.get("hasNextPage"):
            return nodes
        after = info.get("endCursor")


def _mutate(admin: ShopifyAdmin, query: str, name: str, **variables: Any) -> None:
    answer = admin.graphql(query, variables).get(name) or {}
    errors = answer.get("userErrors") or []
    if errors:
        messages = "; ".join(str(error.get("message")) for error in errors)
        raise LookupRefused(f"Shopify refused {name} for {admin.shop}: {messages}")
