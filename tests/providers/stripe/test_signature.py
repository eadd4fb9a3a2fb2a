"""Stripe signature verification and delivery keying, on real Stripe-scheme signatures."""

from __future__ import annotations

import hashlib
import hmac
import json
import time

import pytest

from tests.conftest import STRIPE_OLD_SECRET, STRIPE_SECRET, stripe_event
from webhooks.errors import MalformedSignature, MissingSignature, PayloadError, VerificationError
from webhooks.providers.stripe.signature import PLATFORM_ACCOUNT, StripeReceiver, sign

BODY = stripe_event()


def provider(*secrets: str, tolerance: int = 300) -> StripeReceiver:
    return StripeReceiver(list(secrets) or [STRIPE_SECRET], tolerance=tolerance)


def headers_for(header: str) -> dict[str, str]:
    return {"stripe-signature": header}


def test_sign_matches_the_documented_scheme() -> None:
    ts = 1_700_000_000
    expected = hmac.new(STRIPE_SECRET.encode(), f"{ts}.".encode() + BODY, hashlib.sha256)
    assert sign(BODY, STRIPE_SECRET, ts) == f"t={ts},v1={expected.hexdigest()}"


def test_valid_signature_is_accepted() -> None:
    provider().verify(BODY, headers_for(sign(BODY, STRIPE_SECRET)))


def test_any_configured_secret_verifies_during_rotation() -> None:
    rotated = provider(STRIPE_SECRET, STRIPE_OLD_SECRET)
    rotated.verify(BODY, headers_for(sign(BODY, STRIPE_OLD_SECRET)))
    rotated.verify(BODY, headers_for(sign(BODY, STRIPE_SECRET)))


def test_header_with_several_v1_values_matches_any_of_them() -> None:
    # During a roll Stripe signs with both the old and the new secret.
    header = sign(BODY, ["whsec_someone_elses", STRIPE_SECRET])
    assert header.count("v1=") == 2
    provider().verify(BODY, headers_for(header))


def test_v0_only_header_is_rejected() -> None:
    ts = int(time.time())
    v1 = sign(BODY, STRIPE_SECRET, ts).split("v1=")[1]
    with pytest.raises(VerificationError) as caught:
        provider().verify(BODY, headers_for(f"t={ts},v0={v1}"))
    assert caught.value.status == 401


def test_v0_beside_a_valid_v1_is_ignored() -> None:
    header = (
        sign(BODY, STRIPE_SECRET)
        + ",v0=6ffbb59b2300aae63f272406069a9788598b792a944a07aba816edb039989a39"
    )
    provider().verify(BODY, headers_for(header))


def test_stale_timestamp_is_rejected_with_its_own_code() -> None:
    stale = int(time.time()) - 301
    with pytest.raises(VerificationError) as caught:
        provider().verify(BODY, headers_for(sign(BODY, STRIPE_SECRET, stale)))
    assert (caught.value.status, caught.value.code) == (401, "timestamp_out_of_tolerance")


def test_timestamp_within_tolerance_is_accepted() -> None:
    provider().verify(BODY, headers_for(sign(BODY, STRIPE_SECRET, int(time.time()) - 290)))


def test_far_future_timestamp_is_rejected() -> None:
    future = int(time.time()) + 3600
    with pytest.raises(VerificationError) as caught:
        provider().verify(BODY, headers_for(sign(BODY, STRIPE_SECRET, future)))
    assert caught.value.code == "timestamp_out_of_tolerance"


def test_configured_tolerance_is_honoured() -> None:
    ts = int(time.time()) - 100
    with pytest.raises(VerificationError):
        provider(tolerance=60).verify(BODY, headers_for(sign(BODY, STRIPE_SECRET, ts)))
    provider(tolerance=120).verify(BODY, headers_for(sign(BODY, STRIPE_SECRET, ts)))


def test_tampered_body_is_rejected() -> None:
    header = sign(BODY, STRIPE_SECRET)
    tampered = BODY.replace(b"4200", b"4201")
    with pytest.raises(VerificationError) as caught:
        provider().verify(tampered, headers_for(header))
    assert caught.value.code == "invalid_signature"


def test_reserialised_body_is_rejected() -> None:
    # The classic integration bug: verifying json.dumps(json.loads(raw)) instead of raw.
    header = sign(BODY, STRIPE_SECRET)
    reserialised = json.dumps(json.loads(BODY), indent=2).encode()
    with pytest.raises(VerificationError):
        provider().verify(reserialised, headers_for(header))


def test_wrong_secret_is_rejected() -> None:
    with pytest.raises(VerificationError):
        provider().verify(BODY, headers_for(sign(BODY, "whsec_wrong")))


def test_missing_header_is_a_400() -> None:
    with pytest.raises(MissingSignature) as caught:
        provider().verify(BODY, {})
    assert caught.value.status == 400


@pytest.mark.parametrize("header", ["garbage", "v1=abc", "t=notanumber,v1=abc", "t=,v1=abc"])
def test_garbled_header_is_a_400(header: str) -> None:
    with pytest.raises(MalformedSignature) as caught:
        provider().verify(BODY, headers_for(header))
    assert caught.value.status == 400


def test_header_without_signatures_is_rejected() -> None:
    with pytest.raises(VerificationError):
        provider().verify(BODY, headers_for(f"t={int(time.time())}"))


def test_body_that_is_not_utf8_cannot_be_signed() -> None:
    with pytest.raises(VerificationError) as caught:
        provider().verify(b"\xff\xfe{}", headers_for(f"t={int(time.time())},v1=00"))
    assert caught.value.status == 401


@pytest.mark.parametrize("prefix", [" t=1,", "t =1,"])
def test_future_check_reads_the_timestamp_the_signature_was_checked_with(prefix: str) -> None:
    # The library ignores " t" and "t " keys; so must the future check, or a decoy t=1
    # in front of a real far-future header would slip through.
    future = sign(BODY, STRIPE_SECRET, int(time.time()) + 3600)
    with pytest.raises(VerificationError) as caught:
        provider().verify(BODY, headers_for(prefix + future))
    assert caught.value.code == "timestamp_out_of_tolerance"


def test_lone_surrogate_in_a_key_field_is_a_400_not_a_storage_error() -> None:
    body = b'{"id": "evt_1", "type": "x", "account": "acct_\\udfff"}'
    with pytest.raises(PayloadError) as caught:
        provider().parse(body, {})
    assert caught.value.code == "invalid_account"


def test_parse_keys_platform_events_by_event_id() -> None:
    delivery = provider().parse(BODY, {})
    assert delivery.provider == "stripe"
    assert delivery.account == PLATFORM_ACCOUNT
    assert delivery.delivery_id == delivery.event_id == "evt_1NqK2aLkdIwHu7ix0aBcDeF"
    assert delivery.event_type == "checkout.session.completed"
    assert delivery.api_version == "2025-03-31.basil"
    assert delivery.occurred_at is not None
    assert int(delivery.occurred_at.timestamp()) == json.loads(BODY)["created"]
    assert delivery.body is BODY


def test_parse_keys_connect_events_by_their_account() -> None:
    delivery = provider().parse(stripe_event(account="acct_1Connected"), {})
    assert delivery.account == "acct_1Connected"


def test_parse_accepts_thin_event_iso_timestamps() -> None:
    body = json.dumps(
        {
            "id": "evt_thin",
            "object": "v2.core.event",
            "type": "v1.customer.created",
            "created": "2026-11-28T10:00:00.000Z",
        }
    ).encode()
    delivery = provider().parse(body, {})
    assert delivery.occurred_at is not None
    assert delivery.occurred_at.hour == 10


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"not json", "invalid_json"),
        (b"[1, 2]", "invalid_json"),
        (b'{"type": "customer.created"}', "missing_event_id"),
        (b'{"id": "evt_1"}', "missing_event_type"),
        (b'{"id": "", "type": "customer.created"}', "missing_event_id"),
        (b'{"id": "evt_\\u0000", "type": "customer.created"}', "invalid_event_id"),
        (json.dumps({"id": "e" * 300, "type": "x"}).encode(), "invalid_event_id"),
    ],
)
def test_parse_rejects_bodies_it_cannot_key(body: bytes, code: str) -> None:
    with pytest.raises(PayloadError) as caught:
        provider().parse(body, {})
    assert (caught.value.status, caught.value.code) == (400, code)
