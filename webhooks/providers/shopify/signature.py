"""Shopify's ingest side: base64 HMAC-SHA256 of the raw body, keyed by (shop, topic, webhook id)."""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Sequence

from webhooks.errors import MissingSignature, PayloadError, VerificationError
from webhooks.providers.base import (
    Headers,
    load_json_object,
    optional_str,
    parse_time,
    required_str,
)
from webhooks.storage.inbox import Delivery

NAME = "shopify"
SIGNATURE_HEADER = "x-shopify-hmac-sha256"
UNKNOWN_SHOP = "unknown"

# Classic webhooks use X-Shopify-*; the newer Events delivery drops the X- prefix.
_PREFIXES = ("x-shopify-", "shopify-")
# Header suffix -> name kept with the stored delivery.
KEPT_HEADERS = {
    "topic": "topic",
    "shop-domain": "shop_domain",
    "api-version": "api_version",
    "webhook-id": "webhook_id",
    "event-id": "event_id",
    "triggered-at": "triggered_at",
    "name": "name",
    "sub-topic": "sub_topic",
}


def sign(body: bytes, secret: str) -> str:
    """The `X-Shopify-Hmac-Sha256` value Shopify sends for `body` signed with `secret`."""
    digest = hmac.new(secret.encode("utf-8"), body, hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


def _header(headers: Headers, suffix: str) -> str | None:
    for prefix in _PREFIXES:
        value = headers.get(prefix + suffix)
        if value:
            return value.strip()
    return None


class ShopifyReceiver:
    """Verifies against every configured secret: app secret, previous one, admin keys."""

    name = NAME

    def __init__(self, secrets: Sequence[str]) -> None:
        self._keys = [secret.encode("utf-8") for secret in secrets]

    def verify(self, body: bytes, headers: Headers) -> int:
        """Accept when the base64 HMAC of the raw body matches under any secret."""
        received = _header(headers, "hmac-sha256")
        if not received:
            raise MissingSignature("X-Shopify-Hmac-Sha256 header is missing")
        received_bytes = received.encode("ascii", "replace")
        for index, key in enumerate(self._keys):
            expected = base64.b64encode(hmac.new(key, body, hashlib.sha256).digest())
            if hmac.compare_digest(expected, received_bytes):
                return index
        raise VerificationError("HMAC does not match a configured secret")

    def parse(self, body: bytes, headers: Headers) -> Delivery:
        """Key by (shop, topic, webhook id), falling back to the event id."""
        payload = load_json_object(body)
        kept = {
            name: value
            for suffix, name in KEPT_HEADERS.items()
            if (value := optional_str(_header(headers, suffix))) is not None
        }
        topic = required_str(_header(headers, "topic"), "topic")
        # Shopify's newer Events delivery sends no shop-domain header; the privacy topics
        # carry it in the body. A signed delivery is never refused for lacking it.
        shop = (
            optional_str(_header(headers, "shop-domain"))
            or optional_str(payload.get("shop_domain"))
            or optional_str(payload.get("myshopify_domain"))
            or UNKNOWN_SHOP
        ).lower()
        delivery_id = _header(headers, "webhook-id") or _header(headers, "event-id")
        if delivery_id is None:
            raise PayloadError(
                "no X-Shopify-Webhook-Id or X-Shopify-Event-Id to key the delivery by",
                code="missing_webhook_id",
            )
        return Delivery(
            provider=NAME,
            account=shop,
            event_type=topic,
            delivery_id=required_str(delivery_id, "webhook_id"),
            event_id=kept.get("event_id"),
            api_version=optional_str(kept.get("api_version"), 64),
            # Retries resend the original payload; triggered-at is when the event fired.
            occurred_at=(
                parse_time(kept.get("triggered_at")) or parse_time(payload.get("updated_at"))
            ),
            headers=kept,
            body=body,
        )
