"""Fresh Shopify deliveries from the stored samples (`webhooks simulate shopify ...`)."""

from __future__ import annotations

import json
import secrets
import uuid
from datetime import UTC, datetime

from webhooks.providers import samples

PACKAGE = "webhooks.providers.shopify"


def sample(topic: str) -> samples.Sample:
    """A new delivery of `topic`: new webhook and event ids, triggered now, new resource."""
    body, headers = samples.load(PACKAGE, topic)
    body["id"] = secrets.randbelow(9 * 10**12) + 10**12  # Shopify ids are large integers
    if "token" in body:  # a checkout: its token is the cart journeys follow
        body["token"] = secrets.token_hex(16)
    now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    headers.update(
        {
            "X-Shopify-Webhook-Id": str(uuid.uuid4()),
            "X-Shopify-Event-Id": str(uuid.uuid4()),
            "X-Shopify-Triggered-At": now,
        }
    )
    return samples.Sample(json.dumps(body).encode(), headers)
