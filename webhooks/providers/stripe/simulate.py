"""Fresh Stripe deliveries from the stored samples (`webhooks simulate stripe ...`)."""

from __future__ import annotations

import json
import secrets
import time

from webhooks.providers import samples

PACKAGE = "webhooks.providers.stripe"
# Ids that make a delivery a new fact; each gets a fresh value with its own prefix.
FRESH = ("payment_intent", "invoice", "charge")


def sample(event_type: str) -> samples.Sample:
    """A new event of `event_type`: new event, object and payment ids, created now."""
    event, headers = samples.load(PACKAGE, event_type)
    token = secrets.token_hex(6)
    event.update(id=f"evt_sim{token}", created=int(time.time()))
    obj = event["data"]["object"]
    obj["id"] = _fresh(obj["id"], token)
    for key in FRESH:
        if isinstance(obj.get(key), str):
            obj[key] = _fresh(obj[key], token)
    return samples.Sample(json.dumps(event, indent=2).encode(), headers)


def _fresh(stripe_id: str, token: str) -> str:
    prefix, _, _rest = stripe_id.partition("_")
    return f"{prefix}_sim{token}"
