"""Shopify's side of `webhooks backfill shopify`: records read back as their webhooks.

Shopify has no event log to replay, so the backfill reads the records updated in the
range (orders with their refunds, customers, abandoned checkouts) from the Admin REST
API and turns each into the webhook that reported it: an order into `orders/create`
(`orders/paid` when the merchant counts paid orders and it was paid) and, when
cancelled, `orders/cancelled`; each refund into `refunds/create`; a customer into
`customers/update`; an abandoned checkout into `checkouts/create`. The bodies are the
records exactly as the API returned them, which is the JSON the webhooks carry.

Only facts of the range are emitted: records are listed by `updated_at`, and each
webhook is dated by its own fact (an order's `created_at`, a refund's, a cancellation's
`cancelled_at`), so an old order merely tagged in the range yields nothing.

Those deliveries have no webhook id: each is keyed by its record and version
(`backfill:orders/create:ID:UPDATED_AT`), so a rerun is a duplicate, and it counts as
new only when its facts are (see webhooks.ops.backfill): an order the webhook already
reported is not stored again, and one seen by both is one order_completed.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from webhooks.errors import ConfigError
from webhooks.providers.base import BackfillRequest, parse_time
from webhooks.providers.samples import Sample
from webhooks.providers.shopify.admin import ShopifyAdmin
from webhooks.providers.shopify.settings import ShopifySettings

# --topics groups -> the REST resource each reads.
GROUPS = {
    "orders": "orders",
    "refunds": "orders",  # an order's refunds come with it
    "customers": "customers",
    "checkouts": "checkouts",
}
PAID = {"paid", "partially_refunded", "refunded"}  # states an order reaches only once paid
SETUP_HINT = (
    "backfill reads the Admin API: set SHOPIFY_ADMIN_TOKEN to SHOP:TOKEN pairs "
    "(my-store.myshopify.com:shpat_...) of an app with read_orders and read_customers"
)


def shops(settings: ShopifySettings, asked: tuple[str, ...]) -> list[tuple[str, str]]:
    """(shop, token) for each shop asked for, or every configured one."""
    tokens = settings.tokens()
    if not tokens:
        raise ConfigError(f"no SHOPIFY_ADMIN_TOKEN: {SETUP_HINT}")
    wanted = [shop.strip().lower() for shop in asked] or [shop for shop in tokens if shop]
    if not wanted:
        raise ConfigError(
            "SHOPIFY_ADMIN_TOKEN is one bare token: name the shop with --shop, or write "
            "SHOP:TOKEN pairs (reconcile checks the shops named there)"
        )
    found = []
    for shop in wanted:
        if not shop.endswith(".myshopify.com"):
            raise ConfigError(f"{shop!r} is not a shop's myshopify.com domain")
        token = tokens.get(shop) or tokens.get("")
        if not token:
            raise ConfigError(f"SHOPIFY_ADMIN_TOKEN has no token for {shop}")
        found.append((shop, token))
    return found


def records(settings: ShopifySettings, request: BackfillRequest) -> Iterator[Sample]:
    """The webhooks the records updated in [since, until) stand for, shop by shop."""
    unknown = sorted(set(request.types) - set(GROUPS))
    if unknown:
        raise ConfigError(
            f"not Shopify backfill topics: {', '.join(unknown)} (use {', '.join(GROUPS)})"
        )
    groups = set(request.types or GROUPS)
    resources = sorted({GROUPS[group] for group in groups})
    found = shops(settings, request.accounts)
    window: dict[str, Any] = {"updated_at_min": request.since.isoformat()}
    if request.until is not None:
        window["updated_at_max"] = request.until.isoformat()
    for index, (shop, token) in enumerate(found):
        with ShopifyAdmin(shop, token, settings.api_version, settings.admin_api_base) as admin:
            params = {name: _params(name, window) for name in resources}
            total = sum(admin.count(name, **params[name]) for name in resources) or 1
            done = 0
            for name in resources:
                for page in admin.pages(name, **params[name]):
                    for record in page:
                        done += 1
                        progress = (index + min(done / total, 1.0)) / len(found)
                        for topic, body, fired in webhooks_of(name, record, groups, settings):
                            if not _within(fired, request):
                                continue  # an older fact of a record touched in the range
                            headers = _headers(shop, topic, body, fired, settings.api_version)
                            yield Sample(
                                json.dumps(body).encode(), headers, progress, keyed_by_fact=True
                            )


def _within(fired: Any, request: BackfillRequest) -> bool:
    """Whether a fact happened in the range: records are listed by `updated_at`, and an
    order from months ago that was merely tagged in it is no missed webhook of today."""
    when = parse_time(fired)
    if when is None:
        return True  # no time to judge by: let the facts' keys decide
    return request.since <= when and (request.until is None or when < request.until)


def _params(resource: str, window: dict[str, Any]) -> dict[str, Any]:
    # Orders default to status=open; cancelled and archived orders are facts too.
    return window | {"status": "any"} if resource == "orders" else dict(window)


def webhooks_of(
    resource: str, record: dict[str, Any], groups: set[str], settings: ShopifySettings
) -> Iterator[tuple[str, dict[str, Any], Any]]:
    """(topic, body, when it fired) for each webhook a record stands for."""
    if resource == "customers":
        yield "customers/update", record, record.get("updated_at")
    elif resource == "checkouts":
        # checkouts/create fires when the checkout is made: dated by a later update, an
        # old abandoned checkout would look young enough to start its journey.
        yield "checkouts/create", record, record.get("created_at")
    else:
        if "orders" in groups:
            paid = record.get("financial_status") in PAID
            if settings.order_completed_topic == "orders/paid" and paid:
                yield "orders/paid", record, record.get("processed_at") or record.get("created_at")
            else:
                yield "orders/create", record, record.get("created_at")
            if record.get("cancelled_at"):
                yield "orders/cancelled", record, record.get("cancelled_at")
        if "refunds" in groups:
            for refund in record.get("refunds") or []:
                if isinstance(refund, dict) and refund.get("id") is not None:
                    yield "refunds/create", refund, refund.get("created_at")


def _headers(
    shop: str, topic: str, body: dict[str, Any], fired: Any, version: str
) -> dict[str, str]:
    # The record's version keys it: the same order read again unchanged is a duplicate.
    version_of = body.get("updated_at") or body.get("created_at") or ""
    headers = {
        "X-Shopify-Topic": topic,
        "X-Shopify-Shop-Domain": shop,
        "X-Shopify-API-Version": version,
        "X-Shopify-Webhook-Id": f"backfill:{topic}:{body.get('id')}:{version_of}"[:255],
    }
    if isinstance(fired, str) and fired:
        headers["X-Shopify-Triggered-At"] = fired
    return headers
