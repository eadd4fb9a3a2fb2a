"""The Stripe API calls the worker makes: Checkout line items and customer metadata."""

from __future__ import annotations

import json
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import httpx
import stripe
import structlog
from stripe.params import EventListParams, InvoicePaymentListParams
from stripe.params.checkout import SessionLineItemListParams

from mappers import read
from webhooks.core.ratelimit import TokenBucket
from webhooks.core.retry import AUTH_STATUSES, is_retryable, parse_retry_after
from webhooks.providers.stripe.api.errors import StripeAuthError, StripeRefused, StripeUnavailable
from webhooks.providers.stripe.api.limits import (
    IN_CALL,
    MAX_ATTEMPTS,
    MAX_RETRY_AFTER_IN_CALL,
    Clock,
    Sleep,
    customer_cache,
)
from webhooks.providers.stripe.signature import PLATFORM_ACCOUNT

log = structlog.get_logger("webhooks.providers.stripe.api")
TIMEOUT = httpx.Timeout(10.0, connect=3.0)
PAGE_SIZE = 100  # Stripe's largest page
# A Checkout Session holds at most 100 line items; a server that keeps saying has_more
# past this many pages is broken, and looping on it would hold the worker.
MAX_PAGES = 20
EVENT_TYPES_PER_LIST = 20  # Stripe's limit on `types` in one events list
CUSTOMER_TTL = 600.0  # seconds a customer's metadata is trusted without asking again
CUSTOMER_CACHE_SIZE = 10_000
# After a 401/403 every call would fail the same way: refuse them locally this long,
# so a bad key costs one refused request (and one error log) a minute, not one a row.
AUTH_PAUSE = 60.0
_MISSING: Any = object()  # no cache entry (None is a cached "no such customer")
AUTH_HINT = (
    "Stripe refused STRIPE_API_KEY (401: a wrong or revoked key; 403: a restricted key "
    "without read access to Customers and Checkout Sessions). Fix the key, or unset it "
    "to send Checkout events without line items (items_complete: false)"
)


class StripeAPI:
    """Line items, customer metadata and invoice payments: rate limited, retried, cached.

    Answers are plain JSON as Stripe sends it, so they can be stored with the inbox row
    and a replay maps the same data. Errors: StripeUnavailable (try later),
    StripeAuthError (the key), StripeRefused (anything else Stripe refused).
    """

    def __init__(
        self,
        client: stripe.StripeClient,
        *,
        max_rps: float = 20.0,
        page_size: int = PAGE_SIZE,
        customer_ttl: float = CUSTOMER_TTL,
        cache_size: int = CUSTOMER_CACHE_SIZE,
        sleep: Sleep = time.sleep,
        clock: Clock = time.monotonic,
        rng: random.Random | None = None,
        transport: stripe.HTTPClient | None = None,
    ) -> None:
        self._stripe = client
        self._bucket = TokenBucket(max_rps, clock=clock, sleep=sleep)
        self._customers = customer_cache(customer_ttl, cache_size, clock)
        self._cache_lock = threading.Lock()  # cachetools caches are not thread-safe
        self._page_size = page_size
        self._sleep = sleep
        self._clock = clock
        self._rng = rng
        self._transport = transport
        self._auth_paused_until: float | None = None

    @classmethod
    def create(
        cls,
        api_key: str,
        *,
        base_url: str | None = None,
        **options: Any,
    ) -> StripeAPI:
        """A client for `api_key`; `base_url` replaces https://api.stripe.com (a fake)."""
        # The library's own httpx client, synchronous: our timeouts, no retries of its
        # own (every attempt must pass our rate limit; see StripeAPI._call).
        transport = stripe.HTTPXClient(timeout=TIMEOUT, allow_sync_methods=True)
        client = stripe.StripeClient(
            api_key,
            base_addresses={"api": base_url.rstrip("/")} if base_url else None,
            max_network_retries=0,  # ours: see StripeAPI._call
            http_client=transport,
        )
        return cls(client, transport=transport, **options)

    def close(self) -> None:
        """Close the HTTP client, if this object created it."""
        if self._transport is not None:
            # The stripe library's HTTP client has no annotations.
            self._transport.close()  # type: ignore[no-untyped-call]

    def line_items(
        self, session_id: str, account: str | None = None
    ) -> list[dict[str, Any]] | None:
        """Every line item of a Checkout Session (all pages); None if Stripe has no such session."""
        items: list[dict[str, Any]] = []
        params: SessionLineItemListParams = {"limit": self._page_size}
        list_page = self._stripe.v1.checkout.sessions.line_items.list
        for _ in range(MAX_PAGES):
            page = self._call(
                "line_items", partial(list_page, session_id, params.copy(), _options(account))
            )
            if page is None:
                return None
            data = page.get("data")
            entries = [e for e in data if isinstance(e, dict)] if isinstance(data, list) else []
            items.extend(entries)
            if not page.get("has_more") or not entries or not entries[-1].get("id"):
                return items
            params["starting_after"] = entries[-1]["id"]
        raise StripeRefused(f"line items of {session_id} run past {MAX_PAGES} pages")

    def customer(self, customer_id: str, account: str | None = None) -> dict[str, Any] | None:
        """`{"id", "metadata"}` of a customer (nothing else: no PII); None if deleted or unknown.

        Cached for CUSTOMER_TTL per account, so a burst of one customer's events costs
        one request.
        """
        key = (account or PLATFORM_ACCOUNT, customer_id)
        with self._cache_lock:
            cached = self._customers.get(key, _MISSING)
        if cached is _MISSING:
            retrieve = self._stripe.v1.customers.retrieve
            found = self._call("customer", partial(retrieve, customer_id, None, _options(account)))
            cached = None
            if found is not None and not found.get("deleted"):
                metadata = found.get("metadata")
                cached = {
                    "id": found.get("id") or customer_id,
                    "metadata": dict(metadata) if isinstance(metadata, dict) else {},
                }
            with self._cache_lock:
                self._customers[key] = cached
        if cached is None:
            return None
        # A copy: the caller may store or change it, the cache must not change with it.
        return {"id": cached["id"], "metadata": dict(cached["metadata"])}

    def payment_of_invoice(self, invoice_id: str, account: str | None = None) -> str | None:
        """The PaymentIntent that paid an invoice (API 2025-03-31+), if a paid one did."""
        params: InvoicePaymentListParams = {"invoice": invoice_id, "status": "paid", "limit": 10}
        for entry in self._invoice_payments(params, account):
            intent = read.ref(entry.get("payment"), "payment_intent")
            if intent:
                return intent
        return None

    def invoice_of_payment(self, intent_id: str, account: str | None = None) -> str | None:
        """The invoice a PaymentIntent paid or tried to pay (API 2025-03-31+), if any."""
        params: InvoicePaymentListParams = {
            "payment": {"type": "payment_intent", "payment_intent": intent_id},
            "limit": 10,
        }
        for entry in self._invoice_payments(params, account):
            invoice = read.ref(entry, "invoice")
            if invoice:
                return invoice
        return None

    def events(
        self, since: int, until: int | None, types: list[str], account: str | None = None
    ) -> Iterator[dict[str, Any]]:
        """Every event created in [since, until) of `types` (Stripe keeps 30 days),
        newest first, page by page under the rate limit; Stripe takes 20 types a list."""
        created: dict[str, int] = {"gte": since}
        if until is not None:
            created["lt"] = until
        list_page = self._stripe.v1.events.list
        for start in range(0, max(len(types), 1), EVENT_TYPES_PER_LIST):
            params: EventListParams = {"limit": self._page_size, "created": created}  # type: ignore[typeddict-item]
            if types:
                params["types"] = types[start : start + EVENT_TYPES_PER_LIST]
            while True:
                page = self._call("events", partial(list_page, params.copy(), _options(account)))
                data = page.get("data") if page is not None else None
                entries = [e for e in data if isinstance(e, dict)] if isinstance(data, list) else []
                yield from entries
                if not page or not page.get("has_more") or not entries:
                    break
                params["starting_after"] = entries[-1]["id"]

    def webhook_endpoints(self) -> list[dict[str, Any]]:
        """The account's webhook endpoints (Stripe allows 16: one page holds them all)."""
        list_page = self._stripe.v1.webhook_endpoints.list
        page = self._call("webhook_endpoints", partial(list_page, {"limit": 100}))
        data = page.get("data") if page is not None else None
        return [e for e in data if isinstance(e, dict)] if isinstance(data, list) else []

    def create_webhook_endpoint(self, url: str, events: list[str], description: str) -> Any:
        """Create an endpoint; the answer holds its signing secret, shown only this once."""
        params = {"url": url, "enabled_events": events, "description": description}
        # One key for every retry of this call: a timeout never creates two endpoints.
        options = {"idempotency_key": f"register-{uuid.uuid4()}"}
        create = self._stripe.v1.webhook_endpoints.create
        return self._call("webhook_endpoints", partial(create, params, options))  # type: ignore[arg-type]

    def update_webhook_endpoint(self, endpoint_id: str, events: list[str]) -> Any:
        """Set an endpoint's enabled events."""
        update = self._stripe.v1.webhook_endpoints.update
        params = {"enabled_events": events}
        return self._call("webhook_endpoints", partial(update, endpoint_id, params))  # type: ignore[arg-type]

    def _invoice_payments(
        self, params: InvoicePaymentListParams, account: str | None
    ) -> list[dict[str, Any]]:
        # One page: an invoice has a handful of payment attempts, a PaymentIntent one invoice.
        list_page = self._stripe.v1.invoice_payments.list
        page = self._call("invoice_payments", partial(list_page, params, _options(account)))
        data = page.get("data") if page is not None else None
        return [e for e in data if isinstance(e, dict)] if isinstance(data, list) else []

    def _call(self, what: str, request: Callable[[], Any]) -> dict[str, Any] | None:
        """Run one API request under the rate limit and the retry policy; None on 404."""
        if self._auth_paused_until is not None and self._clock() < self._auth_paused_until:
            raise StripeAuthError("Stripe refused STRIPE_API_KEY moments ago", fresh=False)
        attempt = 0
        while True:
            attempt += 1
            self._bucket.acquire()
            try:
                return _raw(request())
            except stripe.StripeError as exc:
                if exc.http_status == 404 and getattr(exc, "code", None) == "resource_missing":
                    return None  # another 404 (a wrong STRIPE_API_BASE) is an error below
                delay = self._failed(what, exc, attempt)
            log.info("stripe_api_retry", call=what, attempt=attempt, delay=round(delay, 3))
            self._sleep(delay)

    def _failed(self, what: str, exc: stripe.StripeError, attempt: int) -> float:
        """Seconds to wait before the next attempt; raises when there is none to make."""
        status = exc.http_status
        if status in AUTH_STATUSES:
            self._auth_paused_until = self._clock() + AUTH_PAUSE
            log.error("stripe_unauthorized", call=what, status=status, hint=AUTH_HINT)
            raise StripeAuthError(f"Stripe answered {status}", status=status) from None
        should_retry = _header(exc, "stripe-should-retry")
        transient = (
            isinstance(exc, stripe.APIConnectionError | stripe.RateLimitError)
            or should_retry == "true"
            or (status is not None and is_retryable(status))
        )
        if not transient:
            # The message may quote what we sent; the status and Stripe's code are enough.
            code = getattr(exc, "code", None)
            raise StripeRefused(
                f"Stripe refused the {what} request: {status} {code or ''}".strip(), status=status
            ) from None
        retry_after = parse_retry_after(_header(exc, "retry-after"))
        if (
            attempt >= MAX_ATTEMPTS
            or should_retry == "false"
            or (retry_after is not None and retry_after > MAX_RETRY_AFTER_IN_CALL)
        ):
            reason = "unreachable" if status is None else f"answered {status}"
            log.warning("stripe_unavailable", call=what, status=status, attempts=attempt)
            raise StripeUnavailable(
                f"Stripe {reason} ({what})", status=status, retry_after=retry_after
            ) from None
        return IN_CALL.delay(attempt, retry_after, self._rng)


def _raw(obj: Any) -> dict[str, Any]:
    """The response body exactly as Stripe sent it, as plain JSON data."""
    data = json.loads(obj.last_response.body)
    if not isinstance(data, dict):
        raise StripeRefused("Stripe answered something other than a JSON object")
    return data


def _header(exc: stripe.StripeError, name: str) -> str | None:
    for key, value in (exc.headers or {}).items():
        if key.lower() == name:
            return str(value).strip().lower()
    return None


def _options(account: str | None) -> Any:
    """Request options: a connected account's events are looked up in that account."""
    if account and account != PLATFORM_ACCOUNT:
        return {"stripe_account": account}
    return {}
