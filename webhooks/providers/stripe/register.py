"""Stripe's side of `webhooks register stripe`: one endpoint with exactly the handled types.

Idempotent: an endpoint already at the URL is brought to the handled types (and left
alone when it has them); none is created otherwise, and Stripe shows the new
endpoint's signing secret in that one answer only.
"""

from __future__ import annotations

from typing import Any

from mappers.stripe import HANDLERS
from webhooks.errors import ConfigError
from webhooks.providers.base import RegisterRequest
from webhooks.providers.stripe.api.client import StripeAPI
from webhooks.providers.stripe.settings import StripeSettings

DESCRIPTION = "webhooks: retention events for Customer.io"
KEY_HINT = (
    "register manages webhook endpoints: set STRIPE_API_KEY to a key with write access "
    "to Webhook Endpoints (a restricted key: Webhook Endpoints: Write)"
)


def register(settings: StripeSettings, request: RegisterRequest) -> list[dict[str, Any]]:
    """Create or update the endpoint at the URL; what exists and what changed."""
    # One endpoint per account: no target to name (Shopify's name their shops).
    return [_register(settings, request.url, request.dry_run) | {"target": None}]


def _register(settings: StripeSettings, url: str, dry_run: bool) -> dict[str, Any]:
    key = settings.api_key.get_secret_value() if settings.api_key else ""
    if not key:
        raise ConfigError(f"no STRIPE_API_KEY: {KEY_HINT}")
    wanted = sorted(HANDLERS)
    api = StripeAPI.create(key, base_url=settings.api_base, max_rps=settings.api_max_rps)
    try:
        endpoints = api.webhook_endpoints()
        others = sorted(e.get("url", "") for e in endpoints if e.get("url") != url)
        same = [e for e in endpoints if e.get("url") == url]
        if not same:
            found: dict[str, Any] = {"action": "create", "url": url, "events": wanted}
            if not dry_run:
                created = api.create_webhook_endpoint(url, wanted, DESCRIPTION) or {}
                found |= {"endpoint": created.get("id"), "secret": created.get("secret")}
            return found | {"other_endpoints": others}
        endpoint = same[0]
        current = set(endpoint.get("enabled_events") or [])
        added, removed = sorted(set(wanted) - current), sorted(current - set(wanted))
        found = {
            "endpoint": endpoint.get("id"),
            "url": url,
            "events": wanted,
            "added": added,
            "removed": removed,
            "other_endpoints": others,
        }
        if not added and not removed:
            return found | {"action": "unchanged"}
        if not dry_run:
            api.update_webhook_endpoint(str(endpoint.get("id")), wanted)
        return found | {"action": "update"}
    finally:
        api.close()
