"""A fake Customer.io Track API for tests, benchmarks and local development (stdlib server)."""

from __future__ import annotations

from webhooks.fakes.customerio.client import FakeCustomerIOClient
from webhooks.fakes.customerio.server import DEFAULT_API_KEY, DEFAULT_SITE_ID, FakeCustomerIO

__all__ = ["DEFAULT_API_KEY", "DEFAULT_SITE_ID", "FakeCustomerIO", "FakeCustomerIOClient"]
