"""A fake Stripe API (line items, customers, faults) for tests and local development."""

from __future__ import annotations

from webhooks.fakes.stripe.server import DEFAULT_API_KEY, FakeStripe

__all__ = ["DEFAULT_API_KEY", "FakeStripe"]
