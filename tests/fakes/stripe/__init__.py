"""Tests of the fake Stripe API shipped in webhooks.fakes.stripe."""
