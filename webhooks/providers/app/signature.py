"""The app endpoint's ingest side: Standard Webhooks signatures, events keyed by their id.

Standard Webhooks (https://www.standardwebhooks.com) signs `{webhook-id}.{webhook-timestamp}.{body}`
with HMAC-SHA256 under the base64 key after `whsec_`, and sends `v1,<base64>` values,
space-separated, in `webhook-signature`. The `standardwebhooks` library computes the
signature here, exactly as the senders' libraries in every language do; the headers,
the comparison and the timestamp are checked here, so that a stale event is told apart
by its timestamp, never by a library's message text.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import time
from collections.abc import Sequence
from datetime import UTC, datetime

from standardwebhooks.webhooks import Webhook
from ulid import ULID

from webhooks.errors import (
    MalformedSignature,
    MissingSignature,
    PayloadError,
    StaleSignature,
    VerificationError,
)
from webhooks.providers.app.events import ACCOUNT, NAME, parse_body
from webhooks.providers.app.settings import key_bytes
from webhooks.providers.base import Batch, Headers
from webhooks.storage.inbox import Delivery

ID_HEADER = "webhook-id"
TIMESTAMP_HEADER = "webhook-timestamp"
SIGNATURE_HEADER = "webhook-signature"
MAX_SIGNATURES = 10  # values in one header: rotation needs two, a few more is abuse


def sign(
    body: bytes, secret: str, msg_id: str | None = None, timestamp: int | None = None
) -> dict[str, str]:
    """The three Standard Webhooks headers that sign `body` with `secret`."""
    msg_id = msg_id or f"msg_{ULID()}"
    ts = int(time.time()) if timestamp is None else timestamp
    signed_at = datetime.fromtimestamp(ts, tz=UTC)
    signature = Webhook(secret).sign(msg_id, signed_at, body.decode("utf-8"))
    return {ID_HEADER: msg_id, TIMESTAMP_HEADER: str(ts), SIGNATURE_HEADER: signature}


class AppReceiver:
    """Verifies with every configured secret in turn (rotation)."""

    name = NAME

    def __init__(self, secrets: Sequence[str], tolerance: int = 300) -> None:
        for secret in secrets:
            key_bytes(secret)  # the settings checked it; a direct caller gets the same rule
        self._webhooks = [Webhook(secret) for secret in secrets]
        self._tolerance = tolerance

    def verify(self, body: bytes, headers: Headers) -> int:
        """Accept when a v1 signature matches a secret and the timestamp is fresh."""
        missing = [
            name
            for name in (ID_HEADER, TIMESTAMP_HEADER, SIGNATURE_HEADER)
            if not headers.get(name)
        ]
        if missing:
            raise MissingSignature(f"Standard Webhooks header missing: {', '.join(missing)}")
        msg_id, stamp = headers[ID_HEADER], headers[TIMESTAMP_HEADER]
        # Ten digits reach the year 2286; more cannot be a clock's time (and overflow
        # the date conversion below).
        if not stamp.isascii() or not stamp.isdigit() or len(stamp) > 10:
            raise MalformedSignature("webhook-timestamp is not Unix seconds")
        offered = _v1_signatures(headers[SIGNATURE_HEADER])
        try:
            payload = body.decode("utf-8")
        except UnicodeDecodeError:
            # Senders sign the UTF-8 text of the body, so these bytes cannot match.
            raise VerificationError("body is not UTF-8, so no signature can match") from None
        timestamp = int(stamp)
        signed_at = datetime.fromtimestamp(timestamp, tz=UTC)
        matched = None
        for index, webhook in enumerate(self._webhooks):
            expected = base64.b64decode(webhook.sign(msg_id, signed_at, payload)[3:])
            # Every offered value is compared (constant time each), never stopping at
            # the first mismatch of a secret: which secret matched is the only answer.
            if any(hmac.compare_digest(expected, value) for value in offered):
                matched = index
                break
        if matched is None:
            raise VerificationError("no v1 signature matches a configured secret")
        if abs(time.time() - timestamp) > self._tolerance:
            # A future timestamp means a broken clock on one side, and replaying it
            # later would pass, so it is refused like an old one.
            raise StaleSignature("webhook-timestamp is outside the tolerance")
        return matched

    def parse(self, body: bytes, headers: Headers) -> Delivery:
        """A single event's delivery (a batch is refused: use parse_batch)."""
        parsed = self.parse_batch(body, headers)
        if isinstance(parsed, Batch):
            raise PayloadError("a batch has several deliveries: use parse_batch", code="batch")
        return parsed

    def parse_batch(self, body: bytes, headers: Headers) -> Delivery | Batch:
        """Validate against the taxonomy, then key each event by its id; InvalidEvent
        (422, every problem listed) and nothing stored when any event is wrong."""
        events, batch = parse_body(body, now=time.time(), tolerance=self._tolerance)
        msg_id = headers.get(ID_HEADER, "")
        deliveries = [
            Delivery(
                provider=NAME,
                account=ACCOUNT,
                event_type=event.name,
                delivery_id=event.id,
                event_id=event.id,
                occurred_at=event.occurred_at,
                body=event.body,
                # The signed message a batched event came in, for `webhooks trace`.
                headers={ID_HEADER: msg_id[:255]} if msg_id else {},
            )
            for event in events
        ]
        return Batch(deliveries) if batch else deliveries[0]


def _v1_signatures(header: str) -> list[bytes]:
    """The v1 signature values of a webhook-signature header, decoded.

    Other versions (v1a is asymmetric) are skipped, as the scheme says; a header with no
    readable `version,value` entry at all is malformed, one with no v1 entry matches
    nothing.
    """
    entries = header.split(" ")[:MAX_SIGNATURES]
    readable = [entry.split(",", 1) for entry in entries if entry.count(",") == 1]
    if not readable or not header.isascii():
        raise MalformedSignature("webhook-signature holds no version,signature value")
    values = []
    for version, value in readable:
        if version != "v1":
            continue
        try:
            values.append(base64.b64decode(value, validate=True))
        except (binascii.Error, ValueError):
            continue
    return values
