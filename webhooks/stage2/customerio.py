"""The Customer.io Track API client: v2 batch for person operations, v1 for anonymous events."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from webhooks.core import jsontext
from webhooks.core.metrics import CUSTOMERIO_RESPONSES, CUSTOMERIO_SECONDS
from webhooks.core.ratelimit import TokenBucket
from webhooks.core.retry import AUTH_STATUSES, is_retryable, parse_retry_after
from webhooks.errors import CredentialsRefused, PermanentError, ProcessingError, TransientError

MAX_BATCH_BYTES = 475_000  # under the documented 500 KB, as Customer.io's own SDK does
TIMEOUT = httpx.Timeout(10.0, connect=3.0)


class DeliveryError(ProcessingError):
    """A Customer.io call failed; the subclass says what to do (catch the subclasses)."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
        body: str | None = None,
    ) -> None:
        ProcessingError.__init__(self, message, status=status)
        self.retry_after = retry_after
        self.body = body


class DeliveryUnavailable(DeliveryError, TransientError):
    """Customer.io is unreachable, throttling or failing: retry after a backoff."""


class DeliveryRefused(DeliveryError, PermanentError):
    """Customer.io refused the request (400, 404, 413, 422, 501 ...): retrying cannot help."""


class DeliveryUnauthorized(DeliveryError, CredentialsRefused):
    """Customer.io refused the credentials or region (401/403): every call will fail."""


def delivery_error(status: int, message: str, **details: Any) -> DeliveryError:
    """The DeliveryError subclass a response status means."""
    if status in AUTH_STATUSES:
        return DeliveryUnauthorized(message, status=status, **details)
    if is_retryable(status):
        return DeliveryUnavailable(message, status=status, **details)
    return DeliveryRefused(message, status=status, **details)


@dataclass
class BatchResult:
    """Per-item outcome of a v2 batch: item index -> error message for refused items."""

    item_errors: dict[int, str] = field(default_factory=dict)


class CustomerIO:
    """Calls to one workspace through an injected httpx.Client (tests pass their own)."""

    def __init__(self, client: httpx.Client, max_rps: float = 50.0) -> None:
        self._client = client
        # Evenly spaced calls: Customer.io limits requests per second. Room for two, so
        # a live webhook's call never waits behind a backfill's: background calls
        # leave one token in the bucket (at most two calls back to back, then spaced).
        self._limiter = TokenBucket(max_rps, capacity=2)

    @classmethod
    def create(cls, base_url: str, site_id: str, api_key: str, max_rps: float) -> CustomerIO:
        """A client for `base_url` with HTTP Basic site_id:api_key."""
        client = httpx.Client(base_url=base_url, auth=(site_id, api_key), timeout=TIMEOUT)
        return cls(client, max_rps)

    def close(self) -> None:
        """Close the underlying HTTP client."""
        self._client.close()

    def region(self) -> dict[str, Any]:
        """GET /api/v1/accounts/region: checks credentials and tells the region."""
        return self._call("GET", "/api/v1/accounts/region").json()  # type: ignore[no-any-return]

    def send_batch(self, items: list[dict[str, Any]], background: bool = False) -> BatchResult:
        """POST /api/v2/batch; a 207 names the refused items, the rest are accepted.

        `background` calls (backfill, replay) yield the rate limit to live ones."""
        response = self._call("POST", "/api/v2/batch", {"batch": items}, background)
        result = BatchResult()
        if response.status_code == 207:
            for error in _json(response).get("errors", []):
                index = error.get("batch_index")
                if isinstance(index, int):
                    reason = error.get("reason") or error.get("message") or "refused"
                    result.item_errors[index] = f"{reason}: {error.get('field', '')}".strip()
        return result

    def send_anonymous_event(self, item: dict[str, Any], background: bool = False) -> None:
        """POST /api/v1/events (v2 has no anonymous events)."""
        self._call("POST", "/api/v1/events", item, background)

    def _call(
        self, method: str, path: str, body: Any = None, background: bool = False
    ) -> httpx.Response:
        self._limiter.acquire(spare=1.0 if background else 0.0)
        content = None if body is None else jsontext.dump_bytes(body)
        headers = {"Content-Type": "application/json"} if content is not None else {}
        started = time.perf_counter()
        try:
            response = self._client.request(method, path, content=content, headers=headers)
        except httpx.TransportError as exc:
            # Timeouts, refused and reset connections: transient by nature.
            CUSTOMERIO_RESPONSES.labels(path, "error").inc()
            raise DeliveryUnavailable(f"{type(exc).__name__} calling Customer.io") from exc
        finally:
            CUSTOMERIO_SECONDS.labels(path).observe(time.perf_counter() - started)
        CUSTOMERIO_RESPONSES.labels(path, str(response.status_code)).inc()
        if response.status_code < 300:
            return response
        raise delivery_error(
            response.status_code,
            f"Customer.io answered {response.status_code}",
            retry_after=parse_retry_after(response.headers.get("Retry-After")),
            body=response.text[:2000],
        )


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        data = response.json()
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}
