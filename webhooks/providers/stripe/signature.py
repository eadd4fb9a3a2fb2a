"""Stripe's ingest side: `Stripe-Signature` verified with the stripe library, keyed by event id."""

from __future__ import annotations

import time
from collections.abc import Sequence

import stripe

from webhooks.errors import (
    MalformedSignature,
    MissingSignature,
    StaleSignature,
    VerificationError,
)
from webhooks.providers.base import (
    Headers,
    load_json_object,
    optional_str,
    parse_time,
    required_str,
)
from webhooks.storage.inbox import Delivery

NAME = "stripe"
SIGNATURE_HEADER = "stripe-signature"
# Events of the platform account itself carry no `account`; Connect events name theirs.
PLATFORM_ACCOUNT = "platform"


def sign(body: bytes, secrets: str | Sequence[str], timestamp: int | None = None) -> str:
    """Build a real `Stripe-Signature` header for `body`: one v1 value per secret."""
    if isinstance(secrets, str):
        secrets = [secrets]
    ts = int(time.time()) if timestamp is None else timestamp
    payload = body.decode("utf-8")
    parts = [f"t={ts}"]
    for secret in secrets:
        header = stripe.WebhookSignature.generate_signature_header(payload, secret, ts)
        parts.append(header.split(",", 1)[1])
    return ",".join(parts)


def _header_timestamp(header: str) -> int | None:
    # Parsed exactly as the stripe library parses it (first "t", no stripping of keys),
    # so the future check below reads the same timestamp the signature was checked with.
    for item in header.split(","):
        parts = item.split("=", 2)
        if parts[0] == "t":
            try:
                return int(parts[1])
            except (IndexError, ValueError):
                return None
    return None


class StripeReceiver:
    """Verifies with every configured secret in turn (rotation, test and live)."""

    name = NAME

    def __init__(self, secrets: Sequence[str], tolerance: int = 300) -> None:
        self._secrets = list(secrets)
        self._tolerance = tolerance

    def verify(self, body: bytes, headers: Headers) -> int:
        """Accept when any v1 signature matches any secret and the timestamp is fresh."""
        header = headers.get(SIGNATURE_HEADER)
        if not header:
            raise MissingSignature("Stripe-Signature header is missing")
        if not header.isascii():
            # Signatures are hex; a byte outside ASCII (anyone can send one) would reach
            # the library's constant-time comparison, which refuses non-ASCII text.
            raise MalformedSignature("Stripe-Signature header is not ASCII")
        timestamp = _header_timestamp(header)
        if timestamp is None:
            raise MalformedSignature("Stripe-Signature header has no t= timestamp")
        try:
            payload = body.decode("utf-8")
        except UnicodeDecodeError:
            # Stripe signs UTF-8 JSON only, so these bytes cannot carry a valid signature.
            raise VerificationError("body is not UTF-8, so no signature can match") from None
        # The library parses t= and every v1=, ignores v0 and compares in constant
        # time; the timestamp is checked here, on both sides, so that a stale delivery
        # is told apart by the timestamp itself, never by the library's message text.
        matched = next(
            (
                index
                for index, secret in enumerate(self._secrets)
                if self._matches(payload, header, secret)
            ),
            None,
        )
        if matched is None:
            raise VerificationError("no v1 signature matches a configured secret")
        if abs(time.time() - timestamp) > self._tolerance:
            # A far-future timestamp means a broken clock on one side, and replaying
            # it later would pass, so it is refused like an old one.
            raise StaleSignature("signature timestamp is outside the tolerance")
        return matched

    @staticmethod
    def _matches(payload: str, header: str, secret: str) -> bool:
        try:
            stripe.WebhookSignature.verify_header(payload, header, secret, tolerance=None)
        except stripe.SignatureVerificationError:
            return False
        return True

    def parse(self, body: bytes, headers: Headers) -> Delivery:
        """Key by (account, event id); keep the event type, API version and `created`."""
        event = load_json_object(body)
        event_id = required_str(event.get("id"), "event_id")
        event_type = required_str(event.get("type"), "event_type")
        account = event.get("account") or PLATFORM_ACCOUNT
        return Delivery(
            provider=NAME,
            account=required_str(account, "account"),
            event_type=event_type,
            delivery_id=event_id,
            event_id=event_id,
            api_version=optional_str(event.get("api_version"), 64),
            occurred_at=parse_time(event.get("created")),
            body=body,
        )
