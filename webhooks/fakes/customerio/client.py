"""Drive the control API of a fake Customer.io running elsewhere (another process, a container)."""

from __future__ import annotations

from types import TracebackType
from typing import Any

import httpx


class FakeCustomerIOClient:
    """A thin httpx client for `/_fake/...`: read what the fake accepted and set its faults."""

    def __init__(self, url: str, *, client: httpx.Client | None = None) -> None:
        self.url = url.rstrip("/")
        self._owned = client is None
        self._client = client if client is not None else httpx.Client(timeout=10.0)

    def _get(self, name: str) -> Any:
        response = self._client.get(f"{self.url}/_fake/{name}")
        response.raise_for_status()
        return response.json()

    def _post(self, name: str, body: dict[str, Any]) -> Any:
        response = self._client.post(f"{self.url}/_fake/{name}", json=body)
        response.raise_for_status()
        return response.json()

    def operations(self) -> list[dict[str, Any]]:
        """Accepted operations, oldest first."""
        return list(self._get("operations"))

    def requests(self) -> list[dict[str, Any]]:
        """The API request log, oldest first."""
        return list(self._get("requests"))

    def stats(self) -> dict[str, Any]:
        """Counters: requests, operations, duplicates ignored, requests by status."""
        return dict(self._get("stats"))

    def people(self) -> dict[str, Any]:
        """`{"people": [...], "anonymous_events": [...]}`: what the operations add up to."""
        return dict(self._get("people"))

    def faults(self) -> dict[str, Any]:
        """The faults in force."""
        return dict(self._get("faults"))

    def set_faults(self, **faults: Any) -> dict[str, Any]:
        """Replace the faults; no arguments clears them. Returns the faults now in force."""
        return dict(self._post("faults", faults))

    def reset(self) -> None:
        """Forget everything the fake recorded and clear its faults."""
        self._post("reset", {})

    def close(self) -> None:
        """Close the HTTP client if this object created it."""
        if self._owned:
            self._client.close()

    def __enter__(self) -> FakeCustomerIOClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
