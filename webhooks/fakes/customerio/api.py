"""The Track API endpoints of the fake Customer.io: routing, parsing, validation and recording."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from webhooks.fakes.customerio.state import Recorder
from webhooks.fakes.customerio.validation import (
    FieldError,
    check_path_identifier,
    validate_batch_item,
    validate_v1_event,
    validate_v1_identify,
    validate_v1_merge,
)

BATCH = "POST /api/v2/batch"
ANONYMOUS_EVENT = "POST /api/v1/events"
CUSTOMER_EVENT = "POST /api/v1/customers/{identifier}/events"
IDENTIFY = "PUT /api/v1/customers/{identifier}"
DELETE = "DELETE /api/v1/customers/{identifier}"
SUPPRESS = "POST /api/v1/customers/{identifier}/suppress"
UNSUPPRESS = "POST /api/v1/customers/{identifier}/unsuppress"
MERGE = "POST /api/v1/merge_customers"


@dataclass(frozen=True)
class Reply:
    """A response to send: status, JSON body and extra headers."""

    status: int
    body: Any
    headers: tuple[tuple[str, str], ...] = ()


def error_reply(status: int, message: str, errors: list[FieldError] | None = None) -> Reply:
    """An error in Customer.io's v1 shape, `{"meta": {"error": ...}}`, plus the field errors."""
    body: dict[str, Any] = {"meta": {"error": message}}
    if errors:
        body["errors"] = [
            {"field": e.field, "reason": e.reason, "message": e.message} for e in errors
        ]
    return Reply(status, body)


UNAUTHORIZED = error_reply(401, "Unauthorized request")
NOT_FOUND = error_reply(404, "Not found")


class _BadJSON(ValueError):
    pass


def _reject_constant(name: str) -> Any:
    raise _BadJSON(f"{name} is not valid JSON")


def _parse(body: bytes, *, empty: Any = None) -> Any:
    """The JSON value of `body`; raises _BadJSON. NaN and Infinity are not JSON."""
    if not body.strip() and empty is not None:
        return empty
    try:
        return json.loads(body, parse_constant=_reject_constant)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _BadJSON(f"the body is not JSON: {exc}") from None


def _route(method: str, segments: list[str]) -> tuple[str, str | None] | None:
    """The endpoint name and the percent-decoded path identifier, or None when unknown."""
    match method, segments:
        case "POST", ["api", "v2", "batch"]:
            return BATCH, None
        case "POST", ["api", "v1", "events"]:
            return ANONYMOUS_EVENT, None
        case "POST", ["api", "v1", "merge_customers"]:
            return MERGE, None
        case "PUT", ["api", "v1", "customers", raw]:
            return IDENTIFY, unquote(raw)
        case "DELETE", ["api", "v1", "customers", raw]:
            return DELETE, unquote(raw)
        case "POST", ["api", "v1", "customers", raw, "events"]:
            return CUSTOMER_EVENT, unquote(raw)
        case "POST", ["api", "v1", "customers", raw, "suppress"]:
            return SUPPRESS, unquote(raw)
        case "POST", ["api", "v1", "customers", raw, "unsuppress"]:
            return UNSUPPRESS, unquote(raw)
    return None


def handle(method: str, path: str, body: bytes, recorder: Recorder, base_url: str) -> Reply:
    """Answer one authenticated Track API request; `path` is the raw (still encoded) path."""
    # Split before decoding, so an identifier holding %2F stays one segment.
    segments = path.strip("/").split("/")
    if method == "GET" and segments == ["api", "v1", "accounts", "region"]:
        return Reply(200, {"url": base_url, "region": "us", "environment_id": 1})
    route = _route(method, segments)
    if route is None:
        return NOT_FOUND
    endpoint, identifier = route
    try:
        if endpoint == BATCH:
            return _batch(_parse(body), recorder)
        return _v1(endpoint, identifier, body, recorder)
    except _BadJSON as exc:
        return error_reply(400, str(exc))


def _batch(payload: Any, recorder: Recorder) -> Reply:
    if not isinstance(payload, dict) or not isinstance(payload.get("batch"), list):
        return error_reply(400, 'the body must be {"batch": [...]}')
    errors: list[dict[str, Any]] = []
    for index, item in enumerate(payload["batch"]):
        problems = validate_batch_item(item)
        if problems:
            errors.extend(problem.as_batch_error(index) for problem in problems)
            continue
        # Valid items are accepted even when others are not: that is what a 207 means.
        dedup_id = item["id"] if item["action"] == "event" else None
        recorder.accept(BATCH, item, dedup_id=dedup_id, batch_index=index)
    return Reply(207, {"errors": errors}) if errors else Reply(200, {})


def _v1(endpoint: str, identifier: str | None, body: bytes, recorder: Recorder) -> Reply:
    errors = check_path_identifier(identifier) if identifier is not None else []
    payload: Any = None
    dedup_id: str | None = None
    if endpoint in (ANONYMOUS_EVENT, CUSTOMER_EVENT):
        payload = _parse(body)
        errors += validate_v1_event(payload, anonymous=endpoint == ANONYMOUS_EVENT)
        dedup_id = payload.get("id") if isinstance(payload, dict) else None
    elif endpoint == IDENTIFY:
        payload = _parse(body, empty={})
        errors += validate_v1_identify(payload)
    elif endpoint == MERGE:
        payload = _parse(body)
        errors += validate_v1_merge(payload)
    elif body.strip():
        # delete and suppress take no body; one that is sent must at least be JSON.
        payload = _parse(body)
    if errors:
        return error_reply(400, "invalid request", errors)
    recorder.accept(endpoint, payload, dedup_id=dedup_id, identifier=identifier)
    return Reply(200, {})
