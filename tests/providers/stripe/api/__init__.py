"""Tests of the Stripe API client (webhooks.providers.stripe.api)."""
