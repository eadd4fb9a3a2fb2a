"""What the fake Stripe holds: objects per account, its faults and a request log."""

from __future__ import annotations

import copy
import json
import threading
import time
from dataclasses import asdict, dataclass, fields
from typing import Any


@dataclass(frozen=True)
class Faults:
    """How the fake misbehaves on the API requests that follow; the default is healthy."""

    latency_ms: int = 0
    # Answer this status instead (429, 500, 503 ...), with Stripe's error JSON.
    status: int | None = None
    retry_after: int | None = None  # Retry-After seconds on those answers
    should_retry: bool | None = None  # a Stripe-Should-Retry header on those answers
    down: bool = False  # close the connection without an answer
    # The next N API requests get the status / down fault, then it clears itself
    # (latency stays). None: until changed.
    times: int | None = None

    @classmethod
    def from_json(cls, data: Any) -> Faults:
        """Parse a `/_fake/faults` body; raises ValueError naming the bad field."""
        if not isinstance(data, dict):
            raise ValueError("faults must be a JSON object")
        unknown = sorted(set(data) - {field.name for field in fields(cls)})
        if unknown:
            raise ValueError(f"unknown fault fields: {', '.join(unknown)}")
        for name in ("latency_ms", "status", "retry_after", "times"):
            value = data.get(name)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or value < 0
            ):
                raise ValueError(f"{name} must be a non-negative integer or null")
        if not isinstance(data.get("down", False), bool):
            raise ValueError("down must be true or false")
        if not isinstance(data.get("should_retry"), bool | None):
            raise ValueError("should_retry must be true, false or null")
        status = data.get("status")
        if status is not None and not 400 <= status <= 599:
            raise ValueError("status must be an HTTP error status (400-599)")
        return cls(**{**data, "latency_ms": data.get("latency_ms") or 0})

    def as_dict(self) -> dict[str, Any]:
        """The JSON form, as `/_fake/faults` answers it."""
        return asdict(self)

    @property
    def disruptive(self) -> bool:
        """Whether a request gets something other than its normal answer."""
        return self.status is not None or self.down


class FakeState:
    """Thread-safe memory of the fake: line items and customers per account, faults, log.

    An account is the Stripe-Account header a request carries; None is the platform
    (no header). Objects of one account are invisible to the others, as in Stripe.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults = Faults()
        self._line_items: dict[tuple[str | None, str], list[dict[str, Any]]] = {}
        self._customers: dict[tuple[str | None, str], dict[str, Any]] = {}
        self._invoice_payments: dict[tuple[str | None, str], dict[str, Any]] = {}
        self._events: dict[tuple[str | None, str], dict[str, Any]] = {}
        self._endpoints: dict[str, dict[str, Any]] = {}  # webhook endpoints by id
        self._requests: list[dict[str, Any]] = []

    # --- objects ------------------------------------------------------------------------------

    def add_line_items(
        self, session_id: str, items: list[dict[str, Any]], account: str | None = None
    ) -> None:
        """Set a Checkout Session's line items (each needs an `id`, for pagination)."""
        if not isinstance(items, list) or not all(
            isinstance(item, dict) and isinstance(item.get("id"), str) for item in items
        ):
            raise ValueError(f"line items of {session_id} must be objects with a string id")
        stored = [{"object": "item", **copy.deepcopy(item)} for item in items]
        with self._lock:
            self._line_items[(account, session_id)] = stored

    def add_customer(self, customer: dict[str, Any], account: str | None = None) -> None:
        """Add or replace a customer (needs an `id`); `deleted: true` makes it a deleted one."""
        if not isinstance(customer, dict) or not isinstance(customer.get("id"), str):
            raise ValueError("a customer must be an object with a string id")
        stored = {"object": "customer", "metadata": {}, **copy.deepcopy(customer)}
        if stored.get("deleted"):
            stored = {"id": stored["id"], "object": "customer", "deleted": True}
        with self._lock:
            self._customers[(account, customer["id"])] = stored

    def add_invoice_payment(self, payment: dict[str, Any], account: str | None = None) -> None:
        """Add or replace an invoice payment (needs `id` and `invoice`; `payment` says how)."""
        if not isinstance(payment, dict) or not all(
            isinstance(payment.get(name), str) for name in ("id", "invoice")
        ):
            raise ValueError("an invoice payment must be an object with string id and invoice")
        stored = {"object": "invoice_payment", "status": "paid", **copy.deepcopy(payment)}
        with self._lock:
            self._invoice_payments[(account, payment["id"])] = stored

    def load(self, fixtures: Any) -> None:
        """Load `{"account", "line_items": {session id: [...]}, "customers": [...],
        "invoice_payments": [...], "events": [...]}`."""
        if not isinstance(fixtures, dict):
            raise ValueError("fixtures must be a JSON object")
        account = fixtures.get("account")
        if account is not None and not isinstance(account, str):
            raise ValueError("account must be a string or null")
        line_items = fixtures.get("line_items") or {}
        customers = fixtures.get("customers") or []
        payments = fixtures.get("invoice_payments") or []
        if not isinstance(line_items, dict) or not isinstance(customers, list):
            raise ValueError("line_items must be an object, customers a list")
        if not isinstance(payments, list):
            raise ValueError("invoice_payments must be a list")
        for session_id, items in line_items.items():
            self.add_line_items(session_id, items, account)
        for customer in customers:
            self.add_customer(customer, account)
        for payment in payments:
            self.add_invoice_payment(payment, account)
        events = fixtures.get("events") or []
        if not isinstance(events, list):
            raise ValueError("events must be a list")
        for event in events:
            self.add_event(event, account)

    def add_event(self, event: dict[str, Any], account: str | None = None) -> None:
        """Add or replace an event in `account`'s Events API (None: the platform)."""
        if not isinstance(event.get("id"), str) or not isinstance(event.get("created"), int):
            raise ValueError("an event needs a string id and an integer created")
        with self._lock:
            self._events[(account, event["id"])] = json.loads(json.dumps(event))

    def events(self, account: str | None) -> list[dict[str, Any]]:
        """`account`'s events, newest first, as Stripe lists them."""
        with self._lock:
            found = [event for (owner, _), event in self._events.items() if owner == account]
        return sorted(found, key=lambda event: (event["created"], event["id"]), reverse=True)

    def endpoints(self) -> list[dict[str, Any]]:
        """Webhook endpoints, newest first, without their secrets (as Stripe lists them)."""
        with self._lock:
            found = [dict(endpoint) for endpoint in self._endpoints.values()]
        for endpoint in found:
            endpoint.pop("secret", None)
        return sorted(found, key=lambda endpoint: endpoint["created"], reverse=True)

    def save_endpoint(self, endpoint: dict[str, Any]) -> dict[str, Any]:
        """Create or replace a webhook endpoint; the stored copy."""
        with self._lock:
            self._endpoints[endpoint["id"]] = dict(endpoint)
            return dict(endpoint)

    def endpoint(self, endpoint_id: str) -> dict[str, Any] | None:
        """One webhook endpoint (with its secret, for the fake's own use), or None."""
        with self._lock:
            found = self._endpoints.get(endpoint_id)
            return dict(found) if found else None

    def line_items(self, session_id: str, account: str | None) -> list[dict[str, Any]] | None:
        """A copy of the session's line items, or None when the account has no such session."""
        with self._lock:
            items = self._line_items.get((account, session_id))
            return copy.deepcopy(items) if items is not None else None

    def customer(self, customer_id: str, account: str | None) -> dict[str, Any] | None:
        """A copy of the customer, or None when the account has no such customer."""
        with self._lock:
            found = self._customers.get((account, customer_id))
            return copy.deepcopy(found) if found is not None else None

    def invoice_payments(self, account: str | None) -> list[dict[str, Any]]:
        """Copies of the account's invoice payments, newest first (as Stripe lists them)."""
        with self._lock:
            found = [p for (owner, _), p in self._invoice_payments.items() if owner == account]
            return copy.deepcopy(found[::-1])

    # --- faults -------------------------------------------------------------------------------

    def faults(self) -> Faults:
        """The faults in force."""
        with self._lock:
            return self._faults

    def set_faults(self, faults: Faults) -> None:
        """Replace the faults."""
        with self._lock:
            self._faults = faults

    def decide(self) -> Faults:
        """The faults one arriving API request gets, consuming one of `times` if set."""
        with self._lock:
            faults = self._faults
            if faults.disruptive and faults.times is not None:
                left = faults.times - 1
                self._faults = (
                    Faults(latency_ms=faults.latency_ms)
                    if left <= 0
                    else Faults(**{**faults.as_dict(), "times": left})
                )
                if faults.times == 0:
                    return Faults(latency_ms=faults.latency_ms)
            return faults

    # --- the request log ----------------------------------------------------------------------

    def log_request(self, entry: dict[str, Any], started: float) -> None:
        """Append one API request (method, path, query, account, status, fault)."""
        entry = {**entry, "time": started, "duration_ms": round((time.time() - started) * 1000, 1)}
        with self._lock:
            self._requests.append(entry)

    def requests(self) -> list[dict[str, Any]]:
        """A copy of the API request log, oldest first."""
        with self._lock:
            return list(self._requests)

    def clear_requests(self) -> None:
        """Forget the request log, keep the objects and faults."""
        with self._lock:
            self._requests = []

    def reset(self) -> None:
        """Forget objects, requests and faults."""
        with self._lock:
            self._faults = Faults()
            self._line_items.clear()
            self._customers.clear()
            self._invoice_payments.clear()
            self._requests = []
