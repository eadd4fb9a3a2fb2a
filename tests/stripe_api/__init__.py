"""Tests of the Stripe API client (webhooks.stripe_api)."""
