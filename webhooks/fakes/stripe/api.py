"""The Stripe API endpoints the service uses, answered from the fake's state in Stripe's shapes."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from webhooks.fakes.stripe.state import FakeState

DEFAULT_LIMIT = 10  # Stripe's default page size
MAX_LIMIT = 100


@dataclass(frozen=True)
class Reply:
    """A response to send: status, JSON body and extra headers."""

    status: int
    body: Any
    headers: tuple[tuple[str, str], ...] = ()


def error_reply(
    status: int,
    message: str,
    *,
    type_: str = "invalid_request_error",
    code: str | None = None,
    param: str | None = None,
    headers: tuple[tuple[str, str], ...] = (),
) -> Reply:
    """An error in Stripe's shape: `{"error": {"type", "message", "code"?, "param"?}}`."""
    error: dict[str, Any] = {"type": type_, "message": message}
    if code is not None:
        error["code"] = code
        error["doc_url"] = f"https://stripe.com/docs/error-codes/{code.replace('_', '-')}"
    if param is not None:
        error["param"] = param
    return Reply(status, {"error": error}, headers)


# The real message quotes the key, masked; the fake quotes nothing of it.
UNAUTHORIZED = error_reply(401, "Invalid API Key provided")


def fault_reply(status: int, retry_after: int | None, should_retry: bool | None) -> Reply:
    """The answer of a status fault, with Stripe's headers for it."""
    headers: list[tuple[str, str]] = []
    if retry_after is not None:
        headers.append(("Retry-After", str(retry_after)))
    if should_retry is not None:
        headers.append(("Stripe-Should-Retry", "true" if should_retry else "false"))
    if status == 401:
        return Reply(401, UNAUTHORIZED.body, tuple(headers))
    if status == 429:
        message = "Request rate limit exceeded (fake fault)"
        return error_reply(429, message, code="rate_limit", headers=tuple(headers))
    kind = "api_error" if status >= 500 else "invalid_request_error"
    return error_reply(status, f"fake fault: HTTP {status}", type_=kind, headers=tuple(headers))


def handle(
    method: str, path: str, query: dict[str, list[str]], account: str | None, state: FakeState
) -> Reply:
    """Answer one authenticated API request; `path` is the raw (still encoded) path."""
    # Split before decoding, so an id holding %2F stays one segment.
    match method, path.strip("/").split("/"):
        case "GET", ["v1", "checkout", "sessions", session_id, "line_items"]:
            return _line_items(unquote(session_id), query, account, state)
        case "GET", ["v1", "customers", customer_id]:
            return _customer(unquote(customer_id), account, state)
        case "GET", ["v1", "invoice_payments"]:
            return _invoice_payments(query, account, state)
        case "GET", ["v1", "events"]:
            return _events(query, account, state)
        case "GET", ["v1", "webhook_endpoints"]:
            found = state.endpoints()
            return Reply(200, {"object": "list", "data": found, "has_more": False})
        case "POST", ["v1", "webhook_endpoints"]:
            return _save_endpoint(None, query, state)
        case "POST", ["v1", "webhook_endpoints", endpoint_id]:
            return _save_endpoint(unquote(endpoint_id), query, state)
    return error_reply(404, f"Unrecognized request URL ({method}: {path}).")


def _one(query: dict[str, list[str]], name: str) -> str | None:
    values = query.get(name)
    return values[-1] if values else None


def _limit(query: dict[str, list[str]]) -> tuple[int, Reply | None]:
    """The page size asked for, or Stripe's answer to a bad one."""
    raw_limit = _one(query, "limit")
    try:
        limit = int(raw_limit) if raw_limit is not None else DEFAULT_LIMIT
    except ValueError:
        return 0, error_reply(
            400, f"Invalid integer: {raw_limit}", code="parameter_invalid_integer", param="limit"
        )
    if not 1 <= limit <= MAX_LIMIT:
        return 0, error_reply(
            400,
            f"limit must be between 1 and {MAX_LIMIT}",
            code="parameter_invalid_integer",
            param="limit",
        )
    return limit, None


def _line_items(
    session_id: str, query: dict[str, list[str]], account: str | None, state: FakeState
) -> Reply:
    limit, problem = _limit(query)
    if problem is not None:
        return problem
    items = state.line_items(session_id, account)
    if items is None:
        return error_reply(
            404,
            f"No such checkout.session: '{session_id}'",
            code="resource_missing",
            param="session",
        )
    start = 0
    after = _one(query, "starting_after")
    if after is not None:
        ids = [item["id"] for item in items]
        if after not in ids:
            return error_reply(
                400,
                f"No such line item: '{after}'",
                code="resource_missing",
                param="starting_after",
            )
        start = ids.index(after) + 1
    page = items[start : start + limit]
    return Reply(
        200,
        {
            "object": "list",
            "data": page,
            "has_more": start + limit < len(items),
            "url": f"/v1/checkout/sessions/{session_id}/line_items",
        },
    )


def _events(query: dict[str, list[str]], account: str | None, state: FakeState) -> Reply:
    """GET /v1/events: newest first, filtered by created[...] and types[], paged by
    starting_after, as Stripe's Events API (30 days of history)."""
    limit, problem = _limit(query)
    if problem is not None:
        return problem
    bounds = {}
    for op in ("gt", "gte", "lt", "lte"):
        raw = _one(query, f"created[{op}]")
        if raw is not None:
            if not raw.lstrip("-").isdigit():
                return error_reply(
                    400,
                    f"Invalid integer: {raw}",
                    code="parameter_invalid_integer",
                    param="created",
                )
            bounds[op] = int(raw)
    wanted = {
        value for key, values in query.items() if key.startswith("types[") for value in values
    }
    if len(wanted) > 20:
        return error_reply(400, "You may pass at most 20 types.", param="types")
    found = [
        event
        for event in state.events(account)
        if (not wanted or event.get("type") in wanted)
        and ("gt" not in bounds or event["created"] > bounds["gt"])
        and ("gte" not in bounds or event["created"] >= bounds["gte"])
        and ("lt" not in bounds or event["created"] < bounds["lt"])
        and ("lte" not in bounds or event["created"] <= bounds["lte"])
    ]
    start = 0
    after = _one(query, "starting_after")
    if after is not None:
        ids = [event["id"] for event in found]
        if after not in ids:
            return error_reply(
                400, f"No such event: '{after}'", code="resource_missing", param="starting_after"
            )
        start = ids.index(after) + 1
    return Reply(
        200,
        {
            "object": "list",
            "data": found[start : start + limit],
            "has_more": start + limit < len(found),
            "url": "/v1/events",
        },
    )


def _save_endpoint(endpoint_id: str | None, form: dict[str, list[str]], state: FakeState) -> Reply:
    """POST /v1/webhook_endpoints (create: the secret is shown this once) or /{id}."""
    events = [
        value
        for key, values in form.items()
        if key.startswith("enabled_events[")
        for value in values
    ]
    url = _one(form, "url")
    if endpoint_id is None:
        if not url or not events:
            return error_reply(400, "url and enabled_events are required", param="url")
        created: dict[str, Any] = {
            "id": f"we_fake{secrets.token_hex(6)}",
            "object": "webhook_endpoint",
            "created": int(time.time()),
            "status": "enabled",
            "url": url,
            "enabled_events": events,
            "secret": f"whsec_fake{secrets.token_hex(12)}",
            "description": _one(form, "description"),
        }
        return Reply(200, state.save_endpoint(created))
    endpoint = state.endpoint(endpoint_id)
    if endpoint is None:
        return error_reply(
            404, f"No such webhook endpoint: '{endpoint_id}'", code="resource_missing", param="id"
        )
    if url:
        endpoint["url"] = url
    if events:
        endpoint["enabled_events"] = events
    saved = state.save_endpoint(endpoint)
    saved.pop("secret", None)
    return Reply(200, saved)


def _customer(customer_id: str, account: str | None, state: FakeState) -> Reply:
    customer = state.customer(customer_id, account)
    if customer is None:
        return error_reply(
            404, f"No such customer: '{customer_id}'", code="resource_missing", param="id"
        )
    return Reply(200, customer)


def _invoice_payments(query: dict[str, list[str]], account: str | None, state: FakeState) -> Reply:
    """GET /v1/invoice_payments, filtered by invoice, payment and status (one page)."""
    limit, problem = _limit(query)
    if problem is not None:
        return problem
    kind = _one(query, "payment[type]")
    wanted = {
        "invoice": _one(query, "invoice"),
        "status": _one(query, "status"),
        "payment_intent": _one(query, "payment[payment_intent]"),
    }
    if kind is not None and kind not in ("payment_intent", "payment_record"):
        return error_reply(
            400, f"Invalid payment[type]: {kind}", code="parameter_invalid", param="payment[type]"
        )
    found = [
        p
        for p in state.invoice_payments(account)
        if (wanted["invoice"] is None or p.get("invoice") == wanted["invoice"])
        and (wanted["status"] is None or p.get("status") == wanted["status"])
        and (
            wanted["payment_intent"] is None
            or (p.get("payment") or {}).get("payment_intent") == wanted["payment_intent"]
        )
    ]
    return Reply(
        200,
        {
            "object": "list",
            "data": found[:limit],
            "has_more": len(found) > limit,
            "url": "/v1/invoice_payments",
        },
    )
