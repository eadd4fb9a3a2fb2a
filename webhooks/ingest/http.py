"""HTTP endpoints: the webhook ingest path and the health probes."""

from __future__ import annotations

import socket
import time
from dataclasses import replace
from typing import Any

import structlog
from flask import Blueprint, Flask, Response, current_app, jsonify, request
from gunicorn.http.errors import ParseException
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError
from werkzeug.exceptions import ClientDisconnected, HTTPException, RequestEntityTooLarge

from webhooks.core.metrics import INGEST_SECONDS, RECEIVED
from webhooks.errors import (
    BodyTimeout,
    IngestError,
    InvalidEvent,
    MalformedBody,
    ProviderNotConfigured,
)
from webhooks.ingest.deadline import deadlines
from webhooks.providers import registry
from webhooks.providers.base import Batch, Receiver
from webhooks.storage import heartbeat, migrate
from webhooks.storage.inbox import store_deliveries, store_delivery

log = structlog.get_logger("webhooks.ingest.http")
bp = Blueprint("webhooks", __name__)


# The `type` of a request carrying several events, in logs and metrics.
BATCH = "batch"

# The two answers of the hot path, serialised once.
_ACK = {
    True: b'{"status":"accepted"}\n',
    False: b'{"status":"duplicate"}\n',
}


def _reply(code: int, /, **body: Any) -> Response:
    response = jsonify(body)
    response.status_code = code
    return response


def _read_body(max_bytes: int, timeout: float) -> bytes:
    """The raw body: 413 over `max_bytes` (unread), 400 when its framing is broken,
    408 when it has not fully arrived within `timeout` seconds."""
    sock = request.environ.get("gunicorn.socket")
    with deadlines.watch(sock if isinstance(sock, socket.socket) else None, timeout) as watch:
        try:
            body = _read_framed(max_bytes)
        except (ParseException, OSError, ClientDisconnected) as exc:
            broken: str | None = type(exc).__name__
        else:
            declared = request.content_length
            # gunicorn marks its input terminated, so a body cut short ends early
            # instead of raising: compare with what the client declared.
            broken = "short body" if declared is not None and len(body) < declared else None
    if broken and watch.expired:  # the watchdog cut the read: too slow, not gone
        raise BodyTimeout(f"body not received within {timeout:g} s (BODY_TIMEOUT_SECONDS)")
    if broken:
        # gunicorn's chunk parser (a bad chunk size, a missing terminator) or a client
        # gone mid-body (NoMoreData is an OSError): the request is broken, not the app.
        raise MalformedBody(f"body framing is broken ({broken})")
    return body


def _read_framed(max_bytes: int) -> bytes:
    if (
        request.content_length is not None
        or "chunked" not in request.headers.get("Transfer-Encoding", "").lower()
    ):
        # Werkzeug refuses a declared Content-Length over MAX_CONTENT_LENGTH before
        # reading a byte.
        return request.get_data(cache=False)
    # Chunked: Werkzeug's limited stream would silently truncate a body at the limit
    # (a 100 KB body read as its first MAX_BODY_BYTES, then refused as a bad signature),
    # so read one byte past the limit ourselves and refuse with 413.
    body: bytes = request.environ["wsgi.input"].read(max_bytes + 1)
    if len(body) > max_bytes:
        raise RequestEntityTooLarge()
    return body


# No automatic OPTIONS answers (an empty, non-JSON 200): OPTIONS is a 405 in JSON.
@bp.post("/webhooks/<provider_name>", provide_automatic_options=False)
def receive(provider_name: str) -> Response:
    """Verify on the raw bytes, store with the exact dedup key, then acknowledge."""
    started = time.perf_counter()
    provider: Receiver | None = current_app.extensions["webhooks.providers"].get(provider_name)
    # The URL segment is caller-controlled: only a registered name reaches the logs.
    fields: dict[str, Any] = {"provider": provider_name if provider else "unknown"}
    try:
        if provider is None:
            raise ProviderNotConfigured("no such provider is configured")
        settings = current_app.extensions["webhooks.settings"]
        body = _read_body(settings.max_body_bytes, settings.body_timeout_seconds)
        headers = {key.lower(): value for key, value in request.headers.items()}
        secret_index = provider.verify(body, headers)
        parse_batch = getattr(provider, "parse_batch", None)  # see BatchReceiver
        parsed = parse_batch(body, headers) if parse_batch else provider.parse(body, headers)
        if isinstance(parsed, Batch):
            status, outcome = 200, "accepted"
            response = _store_batch(parsed, secret_index, fields)
        else:
            delivery = replace(parsed, secret_index=secret_index)
            fields.update(delivery_id=delivery.delivery_id, type=delivery.event_type)
            fields["account"] = delivery.account
            is_new = store_delivery(current_app.extensions["webhooks.engine"], delivery)
            if is_new:
                current_app.extensions["webhooks.waker"].wake()
            status, outcome = 200, ("accepted" if is_new else "duplicate")
            response = Response(_ACK[is_new], status=200, mimetype="application/json")
    except IngestError as exc:
        status, outcome = exc.status, exc.code
        extra = {"errors": exc.errors} if isinstance(exc, InvalidEvent) else {}
        response = _reply(exc.status, error=exc.code, message=str(exc), **extra)
        if exc.status == 503:
            fields["reason"] = str(exc)  # our own text: error class and database code
            response.headers["Retry-After"] = "5"
    except RequestEntityTooLarge:
        status, outcome = 413, "body_too_large"
        response = _reply(413, error=outcome, message="body exceeds MAX_BODY_BYTES")
    except Exception as exc:  # a bug: still one log line and a JSON answer, never a body
        status, outcome = 500, "internal_error"
        fields["error"] = type(exc).__name__
        response = _reply(500, error=outcome, message="unexpected error; the provider retries")
    elapsed = time.perf_counter() - started
    duration_ms = round(elapsed * 1000, 2)
    _count(provider, fields, outcome, elapsed)
    level = "error" if status >= 500 else "warning" if status >= 400 else "info"
    getattr(log, level)(
        "webhook_received", outcome=outcome, status=status, duration_ms=duration_ms, **fields
    )
    return response


def _store_batch(batch: Batch, secret_index: int, fields: dict[str, Any]) -> Response:
    """Store every event of a batch in one transaction; answer each one's outcome."""
    deliveries = [replace(delivery, secret_index=secret_index) for delivery in batch.deliveries]
    fields.update(type=BATCH, events=len(deliveries))
    fields["account"] = deliveries[0].account  # a batch holds 1 to 100 events
    new = store_deliveries(current_app.extensions["webhooks.engine"], deliveries)
    if any(new):
        current_app.extensions["webhooks.waker"].wake()
    fields["new"] = sum(new)
    outcomes = [
        {"id": delivery.delivery_id, "status": "accepted" if is_new else "duplicate"}
        for delivery, is_new in zip(deliveries, new, strict=True)
    ]
    return _reply(
        200,
        status="accepted",
        accepted=sum(new),
        duplicates=len(new) - sum(new),
        events=outcomes,
    )


def _count(provider: Receiver | None, fields: dict[str, Any], outcome: str, elapsed: float) -> None:
    """Count the request; a metrics failure (a full or missing PROMETHEUS_MULTIPROC_DIR)
    never turns a stored webhook into a 500 the provider would retry for days."""
    kind = fields.get("type", "")
    # Only types the provider's mappers know become label values: a topic header can
    # say anything, and every distinct label value is a new series.
    spec = registry.get(fields["provider"]) if provider is not None else None
    if kind and kind != BATCH and (spec is None or kind not in spec.handlers):
        kind = "other"
    try:
        RECEIVED.labels(fields["provider"], kind, outcome).inc()
        INGEST_SECONDS.labels(fields["provider"]).observe(elapsed)
    except Exception as exc:  # counting is best effort; the answer is what matters
        log.warning("metrics_failed", error=type(exc).__name__)


@bp.get("/healthz", provide_automatic_options=False)
def healthz() -> Response:
    """The process is alive and serving HTTP."""
    return _reply(200, status="ok")


@bp.get("/readyz", provide_automatic_options=False)
def readyz() -> Response:
    """The database is reachable and its schema matches this code."""
    engine = current_app.extensions["webhooks.engine"]
    try:
        current = _current_revision(engine)
    except Exception as exc:  # any failure to reach the database means "not ready"
        log.warning("readiness_failed", reason="database_unreachable", error=type(exc).__name__)
        return _reply(503, status="unavailable", error="database_unreachable")
    head = migrate.head_revision()
    if current != head:
        return _reply(
            503, status="unavailable", error="schema_outdated", current=current, expected=head
        )
    # Delivery workers may run on other hosts: their beats say whether any is alive.
    # Not a reason to refuse traffic (webhooks are stored whatever the workers do),
    # so reported, not failed: alert on workers.live == 0.
    return _reply(200, status="ok", schema=current, workers=heartbeat.workers(engine))


def _current_revision(engine: Engine) -> str | None:
    """The schema revision, asked again once on a pooled connection found dead.

    A database restart or failover leaves each process one dead pooled connection;
    ingest retries it once (store_delivery), and so does the probe, or every gunicorn
    worker would report unready once after a blip it has already recovered from.
    """
    try:
        return migrate.current_revision(engine)
    except DBAPIError as exc:
        if not exc.connection_invalidated:
            raise
    return migrate.current_revision(engine)


def register_error_handlers(app: Flask) -> None:
    """Answer every HTTP error (404, 405, 413 ...) with a JSON body like the rest."""

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Response:
        code = (exc.name or "error").lower().replace(" ", "_")
        response = _reply(exc.code or 500, error=code, message=exc.description or "")
        for key, value in exc.get_headers():
            if key.lower() == "allow":
                response.headers[key] = value
        return response
