"""Fresh backend events from the stored samples (`webhooks simulate app ...`)."""

from __future__ import annotations

import json
import secrets
import time

from webhooks.providers import samples

PACKAGE = "webhooks.providers.app"


def sample(name: str) -> samples.Sample:
    """A new event `name`: a new event id, now, and a new checkout or skipped period."""
    body, headers = samples.load(PACKAGE, name)
    token = secrets.token_hex(6)
    now = int(time.time())
    body.update(id=f"evt_sim{token}", timestamp=now)
    properties = body.get("properties", {})
    if "cart_id" in properties:  # a new Checkout Session: its own journey
        properties["cart_id"] = f"cs_test_sim{token}"
    if "skipped_period_start" in properties:
        properties["skipped_period_start"] = now - secrets.randbelow(10**6)
    return samples.Sample(json.dumps(body, indent=2).encode(), headers)
