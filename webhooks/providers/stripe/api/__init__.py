"""The Stripe API, for what webhooks leave out: Checkout line items, customer metadata."""

from __future__ import annotations

from webhooks.providers.stripe.api.client import StripeAPI
from webhooks.providers.stripe.api.errors import (
    StripeAPIError,
    StripeAuthError,
    StripeRefused,
    StripeUnavailable,
)

__all__ = ["StripeAPI", "StripeAPIError", "StripeAuthError", "StripeRefused", "StripeUnavailable"]
