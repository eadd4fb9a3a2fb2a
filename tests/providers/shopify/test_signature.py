"""Shopify HMAC verification and delivery keying, on real Shopify-scheme signatures."""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import UTC, datetime

import pytest

from tests.conftest import SHOPIFY_OLD_SECRET, SHOPIFY_SECRET, shopify_headers, shopify_order
from webhooks.errors import MissingSignature, PayloadError, VerificationError
from webhooks.providers.shopify.signature import ShopifyReceiver, sign

BODY = shopify_order()


def provider(*secrets: str) -> ShopifyReceiver:
    return ShopifyReceiver(list(secrets) or [SHOPIFY_SECRET])


def lower(headers: dict[str, str]) -> dict[str, str]:
    return {key.lower(): value for key, value in headers.items()}


def test_sign_is_base64_hmac_sha256_of_the_raw_body() -> None:
    digest = hmac.new(SHOPIFY_SECRET.encode(), BODY, hashlib.sha256).digest()
    assert sign(BODY, SHOPIFY_SECRET) == base64.b64encode(digest).decode()


def test_valid_signature_is_accepted() -> None:
    provider().verify(BODY, lower(shopify_headers(BODY)))


@pytest.mark.parametrize("name", ["x-shopify-hmac-sha256", "shopify-hmac-sha256"])
def test_both_header_names_are_accepted(name: str) -> None:
    provider().verify(BODY, {name: sign(BODY, SHOPIFY_SECRET)})


def test_previous_secret_and_admin_keys_verify() -> None:
    several = provider(SHOPIFY_SECRET, SHOPIFY_OLD_SECRET, "admin-created-webhook-key")
    for secret in (SHOPIFY_OLD_SECRET, "admin-created-webhook-key"):
        several.verify(BODY, {"x-shopify-hmac-sha256": sign(BODY, secret)})


def test_wrong_secret_is_rejected() -> None:
    with pytest.raises(VerificationError) as caught:
        provider().verify(BODY, {"x-shopify-hmac-sha256": sign(BODY, "not-the-secret")})
    assert caught.value.status == 401


def test_tampered_body_is_rejected() -> None:
    header = {"x-shopify-hmac-sha256": sign(BODY, SHOPIFY_SECRET)}
    with pytest.raises(VerificationError):
        provider().verify(BODY.replace(b"42.00", b"0.01"), header)


def test_hex_digest_instead_of_base64_is_rejected() -> None:
    hexdigest = hmac.new(SHOPIFY_SECRET.encode(), BODY, hashlib.sha256).hexdigest()
    with pytest.raises(VerificationError):
        provider().verify(BODY, {"x-shopify-hmac-sha256": hexdigest})


@pytest.mark.parametrize("garbled", ["!!!not base64!!!", "é", " "])
def test_garbled_header_is_rejected_not_crashed(garbled: str) -> None:
    with pytest.raises((VerificationError, MissingSignature)):
        provider().verify(BODY, {"x-shopify-hmac-sha256": garbled})


def test_missing_header_is_a_400() -> None:
    with pytest.raises(MissingSignature) as caught:
        provider().verify(BODY, {"x-shopify-topic": "orders/create"})
    assert caught.value.status == 400


def test_parse_keeps_the_headers_that_matter() -> None:
    delivery = provider().parse(BODY, lower(shopify_headers(BODY, **{"X-Shopify-Name": "sub1"})))
    assert delivery.account == "example-shop.myshopify.com"
    assert delivery.event_type == "orders/create"
    assert delivery.delivery_id == "b54557e4-bdd9-4b37-8a5f-bf7d70bcd043"
    assert delivery.event_id == "98880550-7158-44d4-b7cd-2c97c8a091b5"
    assert delivery.api_version == "2026-04"
    assert delivery.headers == {
        "topic": "orders/create",
        "shop_domain": "example-shop.myshopify.com",
        "api_version": "2026-04",
        "webhook_id": "b54557e4-bdd9-4b37-8a5f-bf7d70bcd043",
        "event_id": "98880550-7158-44d4-b7cd-2c97c8a091b5",
        "triggered_at": "2026-11-28T15:00:01.123456789Z",
        "name": "sub1",
    }
    # Triggered-at wins over the payload's updated_at (retries resend old payloads).
    assert delivery.occurred_at == datetime(2026, 11, 28, 15, 0, 1, 123456, tzinfo=UTC)


def test_parse_reads_unprefixed_event_delivery_headers() -> None:
    headers = {
        "shopify-topic": "orders/paid",
        "shopify-shop-domain": "Example-Shop.myshopify.com",
        "shopify-webhook-id": "wh-1",
    }
    delivery = provider().parse(BODY, headers)
    assert (delivery.event_type, delivery.account, delivery.delivery_id) == (
        "orders/paid",
        "example-shop.myshopify.com",
        "wh-1",
    )


def test_parse_falls_back_to_event_id_and_updated_at() -> None:
    headers = lower(shopify_headers(BODY, webhook_id=None))
    del headers["x-shopify-triggered-at"]
    delivery = provider().parse(BODY, headers)
    assert delivery.delivery_id == "98880550-7158-44d4-b7cd-2c97c8a091b5"
    assert delivery.occurred_at == datetime(2026, 11, 28, 15, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("drop", "code"),
    [
        (["x-shopify-topic"], "missing_topic"),
        (["x-shopify-webhook-id", "x-shopify-event-id"], "missing_webhook_id"),
    ],
)
def test_parse_rejects_deliveries_it_cannot_key(drop: list[str], code: str) -> None:
    headers = lower(shopify_headers(BODY))
    for name in drop:
        del headers[name]
    with pytest.raises(PayloadError) as caught:
        provider().parse(BODY, headers)
    assert (caught.value.status, caught.value.code) == (400, code)


@pytest.mark.parametrize("body", [b"not json", b'"a string"', b""])
def test_parse_rejects_bodies_that_are_not_json_objects(body: bytes) -> None:
    with pytest.raises(PayloadError) as caught:
        provider().parse(body, lower(shopify_headers(body)))
    assert caught.value.code == "invalid_json"


def test_missing_shop_header_falls_back_to_the_body_then_unknown() -> None:
    # Shopify's Events delivery has no shop-domain header; a signed delivery is kept.
    headers = lower(shopify_headers(BODY))
    del headers["x-shopify-shop-domain"]
    assert provider().parse(BODY, headers).account == "unknown"
    redact = b'{"shop_id": 1, "shop_domain": "Other-Shop.myshopify.com"}'
    assert provider().parse(redact, headers).account == "other-shop.myshopify.com"


def test_overlong_webhook_id_is_refused_not_silently_replaced() -> None:
    headers = lower(shopify_headers(BODY, webhook_id="w" * 300))
    with pytest.raises(PayloadError) as caught:
        provider().parse(BODY, headers)
    assert caught.value.code == "invalid_webhook_id"
