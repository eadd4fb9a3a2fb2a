"""Errors of the Stripe API client: try later, or fix the configuration."""

from __future__ import annotations

from webhooks.errors import WebhooksError


class StripeAPIError(WebhooksError):
    """A Stripe API call failed in a way a retry will not fix (a refused request)."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class StripeUnavailable(StripeAPIError):
    """Stripe is rate limiting, failing or unreachable: try the same call later.

    `retry_after` is Stripe's own hint in seconds (Retry-After), when it gave one.
    """

    def __init__(
        self, message: str, *, status: int | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message, status=status)
        self.retry_after = retry_after


class StripeAuthError(StripeAPIError):
    """Stripe refused the key (401) or its permissions (403): STRIPE_API_KEY needs fixing.

    `fresh` is False when the client refused the call itself, without asking Stripe,
    because the key failed moments ago (see `AUTH_PAUSE`).
    """

    def __init__(self, message: str, *, status: int | None = None, fresh: bool = True) -> None:
        super().__init__(message, status=status)
        self.fresh = fresh
