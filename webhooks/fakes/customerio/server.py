"""The fake Customer.io: a Track API server in a background thread, or in the foreground."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from webhooks.fakes import http as fakehttp
from webhooks.fakes.customerio.handler import Server
from webhooks.fakes.customerio.people import fold_people
from webhooks.fakes.customerio.state import Faults, Recorder
from webhooks.fakes.http import BackgroundFake

DEFAULT_SITE_ID = "fake-site"
DEFAULT_API_KEY = "fake-key"
# Longer than any sane client timeout; a fault change, reset or stop lets the request go earlier.
DEFAULT_HOLD_SECONDS = 30.0


class FakeCustomerIO(BackgroundFake):
    """A fake Customer.io Track API on a real socket, served from a background thread."""

    label = "fake Customer.io"
    thread_prefix = "fake-customerio"

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        site_id: str = DEFAULT_SITE_ID,
        api_key: str = DEFAULT_API_KEY,
        *,
        hold_seconds: float = DEFAULT_HOLD_SECONDS,
    ) -> None:
        super().__init__(host, port)
        self.site_id = site_id
        self.api_key = api_key
        self.hold_seconds = hold_seconds
        self.credentials = f"{site_id}:{api_key}".encode()
        self.recorder = Recorder()

    @property
    def auth(self) -> tuple[str, str]:
        """The `(site_id, api_key)` pair the fake accepts, ready for `httpx.Client(auth=...)`."""
        return (self.site_id, self.api_key)

    def _bind(self) -> Server:
        return Server((self.host, self.port), self)

    def _after_stop(self) -> None:
        """Let go of requests held by a `timeout` fault, once no new ones can arrive."""
        self.recorder.release_held()

    def operations(self) -> list[dict[str, Any]]:
        """Accepted operations, oldest first (duplicate events appear once)."""
        return self.recorder.operations()

    def requests(self) -> list[dict[str, Any]]:
        """The API request log, oldest first (control requests are not logged)."""
        return self.recorder.requests()

    def stats(self) -> dict[str, Any]:
        """Counters: requests, operations, duplicates ignored, requests by status."""
        return self.recorder.stats()

    def people(self) -> dict[str, Any]:
        """The people the accepted operations add up to (see webhooks.fakes.customerio.people)."""
        return fold_people(self.recorder.operations())

    def set_faults(self, **faults: Any) -> None:
        """Replace the faults: latency_ms, status, retry_after, times, timeout, down."""
        self.recorder.set_faults(Faults.from_json(faults))

    def reset(self) -> None:
        """Forget operations, requests and dedup ids, and clear the faults."""
        self.recorder.reset()


def serve_until_signalled(fake: FakeCustomerIO, announce: Callable[[str], None]) -> None:
    """Run `fake` in the foreground until SIGTERM or SIGINT, announcing its URL once."""
    fakehttp.serve_until_signalled(
        fake,
        lambda: announce(
            f"fake Customer.io listening on {fake.url} "
            f"(site id {fake.site_id}, api key {fake.api_key})"
        ),
    )
