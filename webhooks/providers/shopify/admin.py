"""One shop's Admin API: REST lists through the ShopifyAPI package, GraphQL through httpx.

REST (orders, customers, abandoned checkouts) because its records are the very JSON the
webhooks carry, so the backfill feeds the same mappers without a translation layer to
drift (docs/operations.md#backfill says more). GraphQL for webhook subscriptions,
which only it manages; ShopifyAPI's own GraphQL helper has no timeout and prints
errors, so those few calls go through httpx.

Both honour Shopify's limits: REST's leaky bucket (the X-Shopify-Shop-Api-Call-Limit
header paces requests before the bucket is full; a 429 waits out its Retry-After) and
GraphQL's cost throttle (THROTTLED waits until the points it needs are restored).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from functools import partial
from types import TracebackType
from typing import Any, Self, TypeVar
from urllib.parse import urlencode, urlsplit

import httpx
import shopify
from pyactiveresource import connection as arc

from webhooks.core.retry import parse_retry_after
from webhooks.errors import LookupRefused, LookupUnauthorized, LookupUnavailable

TIMEOUT = 30.0  # seconds per request
ATTEMPTS = 8  # per call, for 429s, 5xx and network failures
BACKOFF = 1.0  # seconds before the second attempt, doubling (at most 30) without Retry-After
CALL_LIMIT = "x-shopify-shop-api-call-limit"
PAGE = 250  # the REST maximum
T = TypeVar("T")

RESOURCE_CLASSES: dict[str, Any] = {
    "orders": shopify.Order,
    "customers": shopify.Customer,
    "checkouts": shopify.Checkout,  # lists abandoned checkouts
}


def refusal(shop: str, status: int | None, what: str) -> Exception:
    """The error for an answer that retrying will not change, saying what to do."""
    if status == 401:
        return LookupUnauthorized(
            f"Shopify refused the Admin API token of {shop} (401): the token is wrong, or "
            "the app was uninstalled from the shop, which revokes its token; reinstall it "
            "and put the new token in SHOPIFY_ADMIN_TOKEN",
            status=401,
        )
    if status == 403:
        return LookupUnauthorized(
            f"the token of {shop} lacks a scope for {what} (403): the app needs read_orders "
            "and read_customers (read_all_orders for orders older than 60 days), the "
            "scopes of the topics it subscribes to",
            status=403,
        )
    if status == 402:
        return LookupRefused(f"{shop} is frozen (402: unpaid Shopify bill)", status=402)
    if status == 423:
        return LookupRefused(f"{shop} is locked by Shopify (423)", status=423)
    if status == 404:
        return LookupRefused(f"no shop {shop} (404): check --shop", status=404)
    return LookupRefused(f"Shopify refused {what} of {shop} ({status})", status=status)


class ShopifyAdmin:
    """A shop's Admin API for the length of a `with` block (ShopifyAPI keeps its session
    per thread, so one client per thread at a time)."""

    def __init__(
        self,
        shop: str,
        token: str,
        version: str,
        base: str = "https://{shop}",
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.shop = shop
        self.version = version
        self.site = f"{base.format(shop=shop)}/admin/api/{version}"
        self._token = token
        self._sleep = sleep
        self._http = httpx.Client(
            timeout=TIMEOUT, headers={"X-Shopify-Access-Token": token}, trust_env=False
        )

    def __enter__(self) -> Self:
        session = shopify.Session(self.shop, self.version, self._token)
        shopify.ShopifyResource.activate_session(session)
        shopify.ShopifyResource.set_site(self.site)
        shopify.ShopifyResource.set_timeout(TIMEOUT)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        shopify.ShopifyResource.clear_session()
        self._http.close()

    # --- REST -------------------------------------------------------------------------------

    def count(self, resource: str, **params: Any) -> int:
        """How many records of `resource` the filters select."""
        found = self._rest(lambda: RESOURCE_CLASSES[resource].count(**params), resource)
        return int(found)

    def pages(self, resource: str, **params: Any) -> Iterator[list[dict[str, Any]]]:
        """The records of `resource` the filters select, a page at a time (Link cursors).

        Read as the raw JSON of each page through ShopifyAPI's connection, not as its
        resource objects: those move a nested record's parent id into the URL prefix
        (a refund inside an order loses `order_id`), and the mappers need the record
        exactly as the webhook carries it."""
        connection = shopify.ShopifyResource.connection
        headers = RESOURCE_CLASSES[resource].headers
        url = f"{self.site}/{resource}.json?{urlencode({'limit': PAGE, **params})}"
        while True:
            response = self._rest(partial(connection.get, url, headers), resource)
            try:
                records = json.loads(response.body)[resource]
            except (ValueError, KeyError, TypeError):
                raise LookupRefused(f"Shopify sent an unreadable {resource} page") from None
            yield [record for record in records if isinstance(record, dict)]
            found = next_link(response.headers)
            if found is None:
                return
            # The cursor only: the host stays the configured one (a proxy, a fake).
            url = f"{self.site}/{resource}.json?{urlsplit(found).query}"

    def _rest(self, call: Callable[[], T], what: str) -> T:
        for attempt in range(1, ATTEMPTS + 1):
            try:
                result = call()
            except arc.ConnectionError as exc:  # an HTTP error answer below 500
                status = exc.response.code if exc.response is not None else exc.code
                if status == 429:
                    self._wait(attempt, _retry_after(exc.response.headers), status, what)
                    continue
                raise refusal(self.shop, status, what) from None
            except arc.ServerError as exc:  # 5xx: Shopify failing for now
                self._wait(attempt, None, exc.code, what)
                continue
            except (arc.Error, OSError) as exc:  # refused, reset, timed out, DNS
                self._wait(attempt, None, None, what, exc)
                continue
            self._pace()
            return result
        raise AssertionError("unreachable: _wait raises on the last attempt")

    def _pace(self) -> None:
        """Wait before the bucket is full: it leaks 2 requests a second on most plans."""
        response = shopify.ShopifyResource.connection.response
        headers = {key.lower(): value for key, value in (response.headers or {}).items()}
        used, _, limit = str(headers.get(CALL_LIMIT, "")).partition("/")
        if used.isdigit() and limit.isdigit() and int(used) >= int(limit) - 2:
            self._pause((int(used) - int(limit) + 3) / 2.0)

    # --- GraphQL ----------------------------------------------------------------------------

    def graphql(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        """The `data` of a GraphQL request, waiting out throttles; raises on errors."""
        for attempt in range(1, ATTEMPTS + 1):
            try:
                answer = self._http.post(
                    f"{self.site}/graphql.json", json={"query": query, "variables": variables}
                )
            except httpx.HTTPError as exc:
                self._wait(attempt, None, None, "GraphQL", exc)
                continue
            if answer.status_code == 429 or answer.status_code >= 500:
                retry = _retry_after(dict(answer.headers))
                self._wait(attempt, retry, answer.status_code, "GraphQL")
                continue
            if answer.status_code != 200:
                raise refusal(self.shop, answer.status_code, "webhook subscriptions")
            try:
                body = answer.json()
            except ValueError:
                self._wait(attempt, None, answer.status_code, "GraphQL (unreadable answer)")
                continue
            errors = body.get("errors") or []
            cost = (body.get("extensions") or {}).get("cost") or {}
            if any((e.get("extensions") or {}).get("code") == "THROTTLED" for e in errors):
                self._wait(attempt, _restore_time(cost), 200, "GraphQL (THROTTLED)")
                continue
            if errors:
                messages = "; ".join(str(e.get("message")) for e in errors)
                raise LookupRefused(f"Shopify GraphQL refused the request: {messages}")
            return dict(body.get("data") or {})
        raise AssertionError("unreachable: _wait raises on the last attempt")

    # --- waiting ----------------------------------------------------------------------------

    def _wait(
        self,
        attempt: int,
        retry_after: float | None,
        status: int | None,
        what: str,
        exc: BaseException | None = None,
    ) -> None:
        reason = f"HTTP {status}" if status else f"{type(exc).__name__}: {exc}"[:160]
        if attempt >= ATTEMPTS:
            raise LookupUnavailable(
                f"Shopify did not answer {what} of {self.shop} after {ATTEMPTS} tries ({reason})",
                status=status,
            )
        backoff = min(BACKOFF * 2.0 ** (attempt - 1), 30.0)
        self._pause(retry_after if retry_after is not None else backoff)

    def _pause(self, seconds: float) -> None:
        self._sleep(max(0.0, min(seconds, 60.0)))


def next_link(headers: Any) -> str | None:
    """The `rel="next"` URL of a Link header (Shopify's REST cursor), if any."""
    lowered = {str(key).lower(): value for key, value in dict(headers or {}).items()}
    for part in str(lowered.get("link", "")).split(","):
        target, _, rel = part.partition(";")
        if rel.replace(" ", "") == 'rel="next"':
            return target.strip().lstrip("<").rstrip(">")
    return None


def _retry_after(headers: Any) -> float | None:
    """The Retry-After of headers of any case (urllib's and httpx's alike)."""
    lowered = {str(key).lower(): value for key, value in dict(headers or {}).items()}
    return parse_retry_after(lowered.get("retry-after"))


def _restore_time(cost: dict[str, Any]) -> float:
    """Seconds until the points a throttled query needs are back."""
    status = cost.get("throttleStatus") or {}
    try:
        needed = float(cost.get("requestedQueryCost") or 50)
        available = float(status.get("currentlyAvailable") or 0)
        rate = float(status.get("restoreRate") or 50)
    except (TypeError, ValueError):
        return 1.0
    return max(0.5, (needed - available) / max(rate, 1.0))
