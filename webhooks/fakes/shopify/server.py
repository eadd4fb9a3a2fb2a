"""The fake Shopify Admin API on a real socket: REST lists with Link-header cursors and
the leaky bucket, GraphQL webhook subscriptions with the cost throttle.

Shops live under a path prefix (`http://127.0.0.1:PORT/SHOP/admin/api/VERSION/...`), so
one fake serves several shops; point SHOPIFY_ADMIN_API_BASE at `http://HOST:PORT/{shop}`.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import re
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from webhooks.fakes.http import BackgroundFake, TrackingServer, send_json
from webhooks.fakes.shopify.state import RESOURCES, FakeState, Faults, Shop, parse_time

DEFAULT_TOKEN = "shpat_fake_admin_token"  # noqa: S105 (a fake's known token)
_PATH = re.compile(
    r"^/(?P<shop>[^/]+)/admin/api/(?P<version>[0-9]{4}-[0-9]{2}|unstable)/"
    r"(?P<rest>(?P<resource>[a-z_]+)(?P<count>/count)?\.json|graphql\.json)$"
)
UNAUTHORIZED = "[API] Invalid API key or access token (unrecognized login or wrong password)"
THROTTLED_REST = (
    "Exceeded 2 calls per second for api client. Reduce request rates to resume "
    "uninterrupted service."
)
Reply = tuple[int, Any, list[tuple[str, str]]]


class Server(TrackingServer):
    """The fake Shopify's server."""

    def __init__(self, address: tuple[str, int], fake: FakeShopify) -> None:
        self.fake = fake
        super().__init__(address, Handler)


class Handler(BaseHTTPRequestHandler):
    """One connection: REST GETs and GraphQL POSTs, per shop, behind the access token."""

    server: Server
    protocol_version = "HTTP/1.1"
    server_version = "FakeShopify/1"
    sys_version = ""
    timeout = 60.0
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the request log is `FakeShopify.requests()`."""

    def do_GET(self) -> None:
        """A REST list or count."""
        self._serve(b"")

    def do_POST(self) -> None:
        """GraphQL."""
        length = int(self.headers.get("Content-Length") or 0)
        self._serve(self.rfile.read(length) if 0 < length <= 1_000_000 else b"")

    def _serve(self, body: bytes) -> None:
        url = urlsplit(self.path)
        state = self.server.fake.state
        match = _PATH.match(url.path)
        status, reply, headers = self._answer(match, url.query, body)
        entry = {
            "method": self.command,
            "shop": match["shop"] if match else None,
            "path": url.path,
            "query": {key: values[-1] for key, values in parse_qs(url.query).items()},
            "status": status,
        }
        state.log(entry)
        send_json(self, status, reply, headers)

    def _answer(self, match: re.Match[str] | None, query: str, body: bytes) -> Reply:
        state = self.server.fake.state
        if match is None:
            return 404, {"errors": "Not Found"}, []
        shop = state.shops.get(match["shop"])
        if shop is None:
            return 404, {"errors": "Not Found"}, []
        token = self.headers.get("X-Shopify-Access-Token", "")
        if not shop.installed or not hmac.compare_digest(token.encode(), shop.token.encode()):
            return 401, {"errors": UNAUTHORIZED}, []
        faults = state.take_fault()
        graphql = match["rest"] == "graphql.json"
        if faults is not None and faults.status is not None:
            after = [("Retry-After", f"{faults.retry_after:.1f}")] if faults.retry_after else []
            message = THROTTLED_REST if faults.status == 429 else "Internal Server Error"
            return faults.status, {"errors": message}, after
        if graphql:
            if self.command != "POST":
                return 405, {"errors": "use POST"}, []
            throttled = bool(faults and faults.graphql_throttled)
            return _graphql(state, shop, body, match["version"], throttled)
        if self.command != "GET":
            return 405, {"errors": "the fake's REST part only lists"}, []
        taken, level = shop.bucket.take()
        limit_header = ("X-Shopify-Shop-Api-Call-Limit", f"{level}/{shop.bucket.capacity}")
        if not taken:
            return 429, {"errors": THROTTLED_REST}, [("Retry-After", "2.0"), limit_header]
        resource = match["resource"]
        if resource not in RESOURCES:
            return 404, {"errors": "Not Found"}, [limit_header]
        params = {key: values[-1] for key, values in parse_qs(query).items()}
        base = f"{self.server.fake.url}/{match['shop']}/admin/api/{match['version']}/{resource}"
        try:
            if match["count"]:
                found = _matching(shop, resource, params)
                return 200, {"count": len(found)}, [limit_header]
            return _page(shop, resource, params, base, limit_header)
        except ValueError as exc:
            return 400, {"errors": str(exc)}, [limit_header]


def _matching(shop: Shop, resource: str, params: dict[str, str]) -> list[dict[str, Any]]:
    """The records of `resource` the filters select, by id."""
    since = parse_time(params.get("updated_at_min"))
    until = parse_time(params.get("updated_at_max"))
    if params.get("updated_at_min") and since is None:
        raise ValueError("updated_at_min is not an ISO 8601 time")
    status = params.get("status", "open")
    found = []
    for _, record in sorted(shop.records[resource].items()):
        updated = parse_time(record.get("updated_at")) or datetime.min.replace(tzinfo=UTC)
        if (since and updated < since) or (until and updated > until):
            continue
        if resource == "orders" and status == "open" and record.get("closed_at"):
            continue
        if resource == "orders" and status == "open" and record.get("cancelled_at"):
            continue
        if resource == "checkouts" and record.get("completed_at"):
            continue  # the endpoint lists abandoned checkouts only
        found.append(record)
    return found


def _page(
    shop: Shop, resource: str, params: dict[str, str], base: str, limit_header: tuple[str, str]
) -> Reply:
    limit = int(params.get("limit", "50"))
    if not 1 <= limit <= 250:
        raise ValueError("limit must be between 1 and 250")
    offset = 0
    if "page_info" in params:
        # As Shopify: with page_info only limit (and fields) may be sent; the cursor
        # carries the filters of the first page.
        if set(params) - {"page_info", "limit", "fields"}:
            raise ValueError("page_info cannot be combined with other filters")
        try:
            cursor = json.loads(base64.urlsafe_b64decode(params["page_info"].encode()))
            offset, filters = int(cursor["o"]), dict(cursor["f"])
        except (binascii.Error, ValueError, KeyError, TypeError):
            raise ValueError("page_info is invalid") from None
    else:
        filters = {key: value for key, value in params.items() if key != "limit"}
    found = _matching(shop, resource, filters)
    records = found[offset : offset + limit]
    links = []
    for rel, start in (("previous", offset - limit), ("next", offset + limit)):
        if (rel == "previous" and offset > 0) or (rel == "next" and start < len(found)):
            token = json.dumps({"o": max(start, 0), "f": filters}).encode()
            query = urlencode({"limit": limit, "page_info": base64.urlsafe_b64encode(token)})
            links.append(f'<{base}.json?{query}>; rel="{rel}"')
    headers = [limit_header] + ([("Link", ", ".join(links))] if links else [])
    return 200, {resource: records}, headers


def _graphql(state: FakeState, shop: Shop, body: bytes, version: str, throttled: bool) -> Reply:
    try:
        request = json.loads(body)
        query, variables = str(request["query"]), dict(request.get("variables") or {})
    except (ValueError, KeyError, TypeError):
        return 400, {"errors": [{"message": "Bad Request: JSON with a query"}]}, []
    if version < "2025-10" and re.search(r"\buri\b", query):
        # As Shopify: the field exists from 2025-10 (callbackUrl before).
        message = "Field 'uri' doesn't exist on type 'WebhookSubscription'"
        return 200, {"errors": [{"message": message}]}, []
    if throttled:
        cost = state.graphql_cost(shop, 0)
        cost["throttleStatus"]["currentlyAvailable"] = 0
        error = {"message": "Throttled", "extensions": {"code": "THROTTLED"}}
        return 200, {"errors": [error], "extensions": {"cost": cost}}, []
    if "webhookSubscriptionCreate" in query:
        data = _create(state, shop, variables)
    elif "webhookSubscriptionDelete" in query:
        found = shop.subscriptions.pop(str(variables.get("id")), None)
        errors = [] if found else [{"field": ["id"], "message": "Webhook subscription not found"}]
        data = {
            "webhookSubscriptionDelete": {
                "deletedWebhookSubscriptionId": found["id"] if found else None,
                "userErrors": errors,
            }
        }
    elif "webhookSubscriptions" in query:
        nodes = sorted(shop.subscriptions.values(), key=lambda item: item["id"])
        after = variables.get("after")
        if after is not None:
            nodes = [node for node in nodes if node["id"] > after]
        page = nodes[: state.page_size]
        data = {
            "webhookSubscriptions": {
                "edges": [{"node": node, "cursor": node["id"]} for node in page],
                "pageInfo": {
                    "hasNextPage": len(nodes) > len(page),
                    "endCursor": page[-1]["id"] if page else None,
                },
            }
        }
    else:
        return 200, {"errors": [{"message": "the fake knows webhook subscriptions only"}]}, []
    return 200, {"data": data, "extensions": {"cost": state.graphql_cost(shop, 10)}}, []


def _create(state: FakeState, shop: Shop, variables: dict[str, Any]) -> dict[str, Any]:
    topic = str(variables.get("topic", ""))
    given = variables.get("webhookSubscription") or {}
    uri = str(given.get("uri", ""))
    errors = []
    if not re.fullmatch(r"[A-Z][A-Z0-9_]*", topic):
        errors.append({"field": ["topic"], "message": f"Topic {topic!r} is not valid"})
    if not uri.startswith("https://"):
        errors.append({"field": ["webhookSubscription", "uri"], "message": "Address is invalid"})
    taken = any(s["topic"] == topic and s["uri"] == uri for s in shop.subscriptions.values())
    if taken:
        message = "Address for this topic has already been taken"
        errors.append({"field": ["webhookSubscription", "uri"], "message": message})
    if errors:
        return {"webhookSubscriptionCreate": {"webhookSubscription": None, "userErrors": errors}}
    node = {
        "id": state.new_subscription_id(),
        "topic": topic,
        "uri": uri,
        "format": given.get("format", "JSON"),
    }
    shop.subscriptions[node["id"]] = node
    return {"webhookSubscriptionCreate": {"webhookSubscription": node, "userErrors": []}}


class FakeShopify(BackgroundFake):
    """A fake Shopify Admin API for several shops, served from a background thread."""

    label = "fake Shopify"
    thread_prefix = "fake-shopify"

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__(host, port)
        self.state = FakeState()

    def _bind(self) -> Server:
        return Server((self.host, self.port), self)

    @property
    def api_base(self) -> str:
        """The SHOPIFY_ADMIN_API_BASE that points the service at this fake."""
        return f"{self.url}/{{shop}}"

    def add_shop(self, shop: str, token: str = DEFAULT_TOKEN) -> None:
        """Install the app on `shop` with an access token."""
        self.state.add_shop(shop, token)

    def uninstall(self, shop: str) -> None:
        """Remove the app from `shop`: its token is revoked."""
        self.state.uninstall(shop)

    def add(self, shop: str, resource: str, record: dict[str, Any]) -> None:
        """Add or replace an order, customer or (abandoned) checkout of `shop`."""
        self.state.add(shop, resource, record)

    def set_bucket(self, shop: str, capacity: int, leak_per_second: float) -> None:
        """Change `shop`'s REST leaky bucket."""
        self.state.set_bucket(shop, capacity, leak_per_second)

    def set_faults(self, **faults: Any) -> None:
        """The next `times` requests answer `status` (Retry-After `retry_after`), or GraphQL
        answers THROTTLED (`graphql_throttled=True`)."""
        self.state.set_faults(Faults(**faults) if faults else None)

    def subscriptions(self, shop: str) -> list[dict[str, Any]]:
        """`shop`'s webhook subscriptions."""
        return sorted(self.state.shops[shop].subscriptions.values(), key=lambda s: s["id"])

    def requests(self) -> list[dict[str, Any]]:
        """The API request log, oldest first."""
        return self.state.requests()
