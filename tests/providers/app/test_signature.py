"""The app endpoint's Standard Webhooks verification and keying, on real signatures."""

from __future__ import annotations

import base64
import json
import time

import pytest
from standardwebhooks.webhooks import Webhook

from tests.conftest import APP_OLD_SECRET, APP_SECRET
from webhooks.errors import (
    InvalidEvent,
    MalformedSignature,
    MissingSignature,
    PayloadError,
    StaleSignature,
    VerificationError,
)
from webhooks.providers.app.settings import AppSettings, key_bytes
from webhooks.providers.app.signature import AppReceiver, sign
from webhooks.providers.base import Batch

NOW = int(time.time())


def event(**overrides: object) -> dict[str, object]:
    body: dict[str, object] = {
        "id": "evt_app_1",
        "name": "product_viewed",
        "customer_id": "user_8842",
        "timestamp": NOW,
        "properties": {"product_id": "prod_ColdBrew"},
    }
    body.update(overrides)
    return body


BODY = json.dumps(event()).encode()


def receiver(*secrets: str, tolerance: int = 300) -> AppReceiver:
    return AppReceiver(list(secrets) or [APP_SECRET], tolerance=tolerance)


def test_sign_reproduces_the_standard_webhooks_test_vector() -> None:
    # The vector published with the scheme (standard-webhooks spec, svix docs).
    headers = sign(
        b'{"test": 2432232314}',
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        "msg_p5jXN8AQM9LWM0D4loKWxJek",
        1614265330,
    )
    assert headers["webhook-signature"] == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_a_senders_standard_webhooks_library_and_this_receiver_agree() -> None:
    # What a sender's library signs, the receiver accepts, and the other way round.
    headers = sign(BODY, APP_SECRET)
    assert Webhook(APP_SECRET).verify(BODY, headers) == json.loads(BODY)
    assert receiver().verify(BODY, headers) == 0


def test_every_configured_secret_verifies_during_rotation() -> None:
    rotated = receiver(APP_SECRET, APP_OLD_SECRET)
    assert rotated.verify(BODY, sign(BODY, APP_OLD_SECRET)) == 1
    assert rotated.verify(BODY, sign(BODY, APP_SECRET)) == 0


def test_a_header_with_several_signatures_matches_any_of_them() -> None:
    # A sender rotating its key signs with both, space-separated.
    headers = sign(BODY, APP_OLD_SECRET)
    new = sign(BODY, APP_SECRET, headers["webhook-id"], int(headers["webhook-timestamp"]))
    headers["webhook-signature"] += " " + new["webhook-signature"]
    assert receiver(APP_SECRET).verify(BODY, headers) == 0


def test_a_wrong_secret_is_refused() -> None:
    with pytest.raises(VerificationError) as caught:
        receiver().verify(BODY, sign(BODY, APP_OLD_SECRET))
    assert (caught.value.status, caught.value.code) == (401, "invalid_signature")


def test_a_tampered_body_id_or_timestamp_is_refused() -> None:
    headers = sign(BODY, APP_SECRET)
    with pytest.raises(VerificationError):
        receiver().verify(BODY.replace(b"prod_ColdBrew", b"prod_Other"), headers)
    with pytest.raises(VerificationError):
        receiver().verify(BODY, {**headers, "webhook-id": "msg_other"})
    later = str(int(headers["webhook-timestamp"]) + 1)
    with pytest.raises(VerificationError):
        receiver().verify(BODY, {**headers, "webhook-timestamp": later})


@pytest.mark.parametrize("version", ["v1a", "v2", "v0"])
def test_another_scheme_version_matches_nothing(version: str) -> None:
    headers = sign(BODY, APP_SECRET)
    value = headers["webhook-signature"].split(",", 1)[1]
    headers["webhook-signature"] = f"{version},{value}"
    with pytest.raises(VerificationError) as caught:
        receiver().verify(BODY, headers)
    assert caught.value.code == "invalid_signature"


@pytest.mark.parametrize("offset", [-301, 301])
def test_a_stale_or_future_timestamp_is_refused_after_the_signature_matched(offset: int) -> None:
    headers = sign(BODY, APP_SECRET, timestamp=int(time.time()) + offset)
    with pytest.raises(StaleSignature) as caught:
        receiver().verify(BODY, headers)
    assert (caught.value.status, caught.value.code) == (401, "timestamp_out_of_tolerance")
    # Within a wider tolerance the same request passes.
    assert receiver(tolerance=600).verify(BODY, headers) == 0


@pytest.mark.parametrize("missing", ["webhook-id", "webhook-timestamp", "webhook-signature"])
def test_a_missing_header_is_named(missing: str) -> None:
    headers = sign(BODY, APP_SECRET)
    del headers[missing]
    with pytest.raises(MissingSignature, match=missing) as caught:
        receiver().verify(BODY, headers)
    assert caught.value.status == 400


@pytest.mark.parametrize(
    ("name", "value", "error"),
    [
        ("webhook-timestamp", "1700000000.5", MalformedSignature),
        ("webhook-timestamp", "soon", MalformedSignature),
        # Past what a date can hold: a clear 400, never a 500 from the conversion.
        ("webhook-timestamp", "999999999999", MalformedSignature),
        ("webhook-signature", "garbage", MalformedSignature),
        ("webhook-signature", "v1,ünïcode", MalformedSignature),
        ("webhook-signature", "v1,not-base64!!", VerificationError),
    ],
)
def test_a_garbled_header_is_a_clear_refusal(name: str, value: str, error: type[Exception]) -> None:
    headers = {**sign(BODY, APP_SECRET), name: value}
    with pytest.raises(error):
        receiver().verify(BODY, headers)


def test_a_body_that_is_not_utf8_cannot_match() -> None:
    body = b'{"id": "\xff"}'
    headers = sign(BODY, APP_SECRET)
    with pytest.raises(VerificationError, match="UTF-8"):
        receiver().verify(body, headers)


def test_no_secret_configured_refuses_even_a_signed_body() -> None:
    with pytest.raises(VerificationError):
        AppReceiver([]).verify(BODY, sign(BODY, APP_SECRET))


@pytest.mark.parametrize(
    ("secret", "reason"),
    [
        ("sk_test_123", "starts with whsec_"),
        ("whsec_***", "base64"),
        ("whsec_c2hvcnQ=", "at least 16 bytes"),
    ],
)
def test_a_secret_that_is_not_standard_webhooks_is_refused_at_start(
    secret: str, reason: str
) -> None:
    with pytest.raises(ValueError, match=reason):
        key_bytes(secret)
    with pytest.raises(ValueError, match=reason):
        AppSettings(_env_file=None, webhook_secret=secret)  # type: ignore[call-arg]


def test_an_unpadded_key_is_accepted_as_senders_libraries_accept_it() -> None:
    key = base64.b64encode(b"0123456789abcdef0123").decode().rstrip("=")
    assert key_bytes(f"whsec_{key}") == b"0123456789abcdef0123"


def test_parse_keys_a_single_event_by_its_id_and_stores_it_as_signed() -> None:
    headers = sign(BODY, APP_SECRET)
    delivery = receiver().parse(BODY, headers)
    assert (delivery.provider, delivery.account) == ("app", "backend")
    assert (delivery.event_type, delivery.delivery_id, delivery.event_id) == (
        "product_viewed",
        "evt_app_1",
        "evt_app_1",
    )
    assert delivery.body == BODY
    assert delivery.occurred_at is not None
    assert int(delivery.occurred_at.timestamp()) == NOW
    assert delivery.headers == {"webhook-id": headers["webhook-id"]}


def test_parse_batch_keys_each_event_of_a_batch_on_its_own() -> None:
    items = [event(id=f"evt_app_{n}") for n in range(3)]
    parsed = receiver().parse_batch(json.dumps({"events": items}).encode(), {})
    assert isinstance(parsed, Batch)
    assert [d.delivery_id for d in parsed.deliveries] == ["evt_app_0", "evt_app_1", "evt_app_2"]
    # Each stored as its own JSON object: a replay maps exactly that event.
    assert [json.loads(d.body) for d in parsed.deliveries] == items


def test_parse_refuses_a_body_that_is_not_a_json_object() -> None:
    with pytest.raises(PayloadError) as caught:
        receiver().parse_batch(b"[1, 2]", {})
    assert (caught.value.status, caught.value.code) == (400, "invalid_json")


def test_parse_of_a_batch_through_the_single_event_method_says_to_use_parse_batch() -> None:
    body = json.dumps({"events": [event()]}).encode()
    with pytest.raises(PayloadError, match="parse_batch"):
        receiver().parse(body, {})


def test_an_invalid_event_is_refused_before_it_is_keyed() -> None:
    with pytest.raises(InvalidEvent):
        receiver().parse_batch(json.dumps(event(name="order_completed")).encode(), {})
