"""What the fake Shopify Admin API holds: shops and their records, the rate limits, a log.

Records are stored as the REST Admin API returns them (the same JSON webhooks carry),
per shop. A shop has an access token; uninstalling the app revokes it, as Shopify does.
"""

from __future__ import annotations

import copy
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

# The REST resources the fake lists, by their path segment.
RESOURCES = ("orders", "customers", "checkouts")


@dataclass
class Bucket:
    """Shopify's REST leaky bucket: `capacity` requests, leaking `leak_per_second`."""

    capacity: int = 40
    leak_per_second: float = 2.0
    level: float = 0.0
    at: float = field(default_factory=time.monotonic)

    def take(self) -> tuple[bool, int]:
        """Add one request if it fits: (taken, requests now in the bucket)."""
        now = time.monotonic()
        self.level = max(0.0, self.level - (now - self.at) * self.leak_per_second)
        self.at = now
        if self.level + 1 > self.capacity:
            return False, int(self.level)
        self.level += 1
        return True, round(self.level)


@dataclass
class Shop:
    """One shop: its token, whether the app is installed, records and subscriptions."""

    token: str
    installed: bool = True
    records: dict[str, dict[int, dict[str, Any]]] = field(
        default_factory=lambda: {name: {} for name in RESOURCES}
    )
    subscriptions: dict[str, dict[str, Any]] = field(default_factory=dict)
    bucket: Bucket = field(default_factory=Bucket)
    # GraphQL cost points (Shopify's standard plan: 2,000 available, 100 restored a second).
    graphql_available: float = 2000.0
    graphql_at: float = field(default_factory=time.monotonic)


@dataclass
class Faults:
    """The next `times` API requests get `status` (with Retry-After), or GraphQL THROTTLED."""

    status: int | None = None
    retry_after: float | None = None
    graphql_throttled: bool = False
    times: int = 1


def parse_time(value: Any) -> datetime | None:
    """An ISO 8601 time as an aware UTC datetime; None when absent or unreadable."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).astimezone(UTC)


class FakeState:
    """Thread-safe memory of the fake."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.shops: dict[str, Shop] = {}
        self._faults: Faults | None = None
        self._requests: list[dict[str, Any]] = []
        self._next_subscription = 1
        self.page_size = 100  # webhookSubscriptions per GraphQL page (the query's `first`)

    def add_shop(self, shop: str, token: str) -> None:
        """Install the app on `shop` with `token` (keeps its records when already there)."""
        with self._lock:
            found = self.shops.get(shop)
            if found is None:
                self.shops[shop] = Shop(token=token)
            else:
                found.token, found.installed = token, True

    def uninstall(self, shop: str) -> None:
        """The merchant removed the app: its token is revoked, every call answers 401."""
        with self._lock:
            self.shops[shop].installed = False

    def add(self, shop: str, resource: str, record: dict[str, Any]) -> None:
        """Add or replace a record (it needs an integer `id` and an `updated_at`)."""
        if resource not in RESOURCES:
            raise ValueError(f"resource must be one of {', '.join(RESOURCES)}")
        if not isinstance(record.get("id"), int) or parse_time(record.get("updated_at")) is None:
            raise ValueError("a record needs an integer id and an ISO 8601 updated_at")
        with self._lock:
            self.shops[shop].records[resource][record["id"]] = copy.deepcopy(record)

    def set_bucket(self, shop: str, capacity: int, leak_per_second: float) -> None:
        """Shrink or grow `shop`'s REST bucket (tests hit its limit in a few requests)."""
        with self._lock:
            self.shops[shop].bucket = Bucket(capacity, leak_per_second)

    def set_faults(self, faults: Faults | None) -> None:
        """Misbehave on the next requests (None: healthy)."""
        with self._lock:
            self._faults = faults

    def take_fault(self) -> Faults | None:
        """The fault for this request, counting it down."""
        with self._lock:
            faults = self._faults
            if faults is None:
                return None
            faults.times -= 1
            if faults.times <= 0:
                self._faults = None
            return faults

    def graphql_cost(self, shop: Shop, cost: float) -> dict[str, Any]:
        """Spend `cost` points and return the `extensions.cost` Shopify reports."""
        with self._lock:
            now = time.monotonic()
            restored = shop.graphql_available + (now - shop.graphql_at) * 100.0
            shop.graphql_available = min(2000.0, restored) - cost
            shop.graphql_at = now
            available = shop.graphql_available
        return {
            "requestedQueryCost": cost,
            "actualQueryCost": cost,
            "throttleStatus": {
                "maximumAvailable": 2000.0,
                "currentlyAvailable": int(available),
                "restoreRate": 100.0,
            },
        }

    def new_subscription_id(self) -> str:
        """A fresh WebhookSubscription GID."""
        with self._lock:
            number = self._next_subscription
            self._next_subscription += 1
        return f"gid://shopify/WebhookSubscription/{number}"

    def log(self, entry: dict[str, Any]) -> None:
        """Record one API request."""
        with self._lock:
            self._requests.append(entry)

    def requests(self) -> list[dict[str, Any]]:
        """The API request log, oldest first."""
        with self._lock:
            return copy.deepcopy(self._requests)
