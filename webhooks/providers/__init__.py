"""The provider registry: one module per provider, listed here by name, no discovery."""

from __future__ import annotations

from webhooks.config import Settings
from webhooks.providers.base import Delivery, Headers, Provider
from webhooks.providers.shopify.signature import ShopifyProvider
from webhooks.providers.stripe.signature import StripeProvider

__all__ = ["Delivery", "Headers", "Provider", "build_providers"]


def build_providers(settings: Settings) -> dict[str, Provider]:
    """The enabled providers by URL name; a provider without secrets is left out (404)."""
    providers: dict[str, Provider] = {}
    if settings.stripe_webhook_secret:
        providers["stripe"] = StripeProvider(
            [s.get_secret_value() for s in settings.stripe_webhook_secret],
            tolerance=settings.stripe_webhook_tolerance,
        )
    if settings.shopify_webhook_secret:
        providers["shopify"] = ShopifyProvider(
            [s.get_secret_value() for s in settings.shopify_webhook_secret]
        )
    return providers
