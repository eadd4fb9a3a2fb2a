"""The `stripe` library's HTTP calls, made through an injected httpx.Client."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NoReturn

import httpx
import stripe


class HttpxTransport(stripe.HTTPClient):
    """A stripe HTTPClient over our own httpx.Client (timeouts, pooling, tests' transports).

    It never retries: StripeAPI owns the retry policy (the client is created with
    max_network_retries=0), so every attempt also passes the rate limit.
    """

    name = "webhooks-httpx"

    def __init__(self, client: httpx.Client) -> None:
        super().__init__()
        self._client = client

    def request(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str] | None,
        post_data: Any = None,
        *,
        _usage: list[str] | None = None,
    ) -> tuple[bytes, int, Mapping[str, str]]:
        """One HTTP request; network failures become APIConnectionError."""
        try:
            response = self._client.request(
                method, url, headers=dict(headers or {}), content=post_data or None
            )
        except httpx.TransportError as exc:
            raise stripe.APIConnectionError(
                f"{type(exc).__name__} calling Stripe", should_retry=True
            ) from exc
        # httpx.Headers look names up case-insensitively, as the library expects.
        return response.content, response.status_code, response.headers

    def request_stream(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str] | None,
        post_data: Any = None,
        *,
        _usage: list[str] | None = None,
    ) -> NoReturn:
        """Not used: no endpoint we call streams."""
        raise NotImplementedError("streaming Stripe requests are not supported")

    def close(self) -> None:
        """Close the httpx client."""
        self._client.close()
