"""Tests of the fake Customer.io shipped in webhooks.fakes.customerio."""
