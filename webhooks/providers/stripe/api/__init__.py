"""The Stripe API, for what webhooks leave out: Checkout line items, customer metadata."""

from __future__ import annotations

from webhooks.providers.stripe.api.client import StripeAPI, stripe_api_client
from webhooks.providers.stripe.api.errors import StripeAPIError, StripeAuthError, StripeUnavailable

__all__ = [
    "StripeAPI",
    "StripeAPIError",
    "StripeAuthError",
    "StripeUnavailable",
    "stripe_api_client",
]
