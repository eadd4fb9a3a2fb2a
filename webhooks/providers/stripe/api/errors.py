"""Errors of the Stripe API client, placed in the service's one tree by what they mean."""

from __future__ import annotations

from webhooks.errors import (
    LookupRefused,
    LookupUnauthorized,
    LookupUnavailable,
    ProcessingError,
)


class StripeAPIError(ProcessingError):
    """Any failed Stripe API call (catch the subclasses to act on one)."""


class StripeRefused(StripeAPIError, LookupRefused):
    """Stripe refused this request; a retry of it will not help."""


class StripeUnavailable(StripeAPIError, LookupUnavailable):
    """Stripe is rate limiting, failing or unreachable: try the same call later."""


class StripeAuthError(StripeAPIError, LookupUnauthorized):
    """Stripe refused the key (401) or its permissions (403): STRIPE_API_KEY needs fixing.

    `fresh` is False when the client refused the call itself, without asking Stripe,
    because the key failed moments ago (see `AUTH_PAUSE`).
    """

    def __init__(self, message: str, *, status: int | None = None, fresh: bool = True) -> None:
        super().__init__(message, status=status)
        self.fresh = fresh
