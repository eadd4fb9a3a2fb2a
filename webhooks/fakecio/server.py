"""The fake Customer.io: a Track API server in a background thread, or in the foreground."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from types import FrameType, TracebackType
from typing import Any

from webhooks.fakecio.handler import Server
from webhooks.fakecio.people import fold_people
from webhooks.fakecio.state import Faults, Recorder

DEFAULT_SITE_ID = "fake-site"
DEFAULT_API_KEY = "fake-key"
# Longer than any sane client timeout; a fault change, reset or stop lets the request go earlier.
DEFAULT_HOLD_SECONDS = 30.0


class FakeCustomerIO:
    """A fake Customer.io Track API on a real socket, served from a background thread."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        site_id: str = DEFAULT_SITE_ID,
        api_key: str = DEFAULT_API_KEY,
        *,
        hold_seconds: float = DEFAULT_HOLD_SECONDS,
    ) -> None:
        self.host = host
        self.port = port
        self.site_id = site_id
        self.api_key = api_key
        self.hold_seconds = hold_seconds
        self.credentials = f"{site_id}:{api_key}".encode()
        self.recorder = Recorder()
        self._server: Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The base URL, `http://host:port` (the real port once started on port 0)."""
        return f"http://{self.host}:{self.port}"

    @property
    def auth(self) -> tuple[str, str]:
        """The `(site_id, api_key)` pair the fake accepts, ready for `httpx.Client(auth=...)`."""
        return (self.site_id, self.api_key)

    def start(self) -> FakeCustomerIO:
        """Bind and serve in a daemon thread; after a stop, restart on the same port."""
        if self._server is not None:
            raise RuntimeError("the fake Customer.io is already running")
        server = Server((self.host, self.port), self)
        # Keep the real port, so a stop() then start() comes back where clients expect it.
        self.port = int(server.server_address[1])
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},  # the longest stop() waits for the loop
            name=f"fake-customerio-{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening, cut open connections and let go of held requests."""
        server, thread = self._server, self._thread
        if server is None:
            return
        server.shutdown()
        server.server_close()
        server.cut_connections()
        self.recorder.release_held()
        if thread is not None:
            thread.join(timeout=5)
        self._server = self._thread = None

    def __enter__(self) -> FakeCustomerIO:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

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
        """The people the accepted operations add up to (see webhooks.fakecio.people)."""
        return fold_people(self.recorder.operations())

    def set_faults(self, **faults: Any) -> None:
        """Replace the faults: latency_ms, status, retry_after, times, timeout, down."""
        self.recorder.set_faults(Faults.from_json(faults))

    def reset(self) -> None:
        """Forget operations, requests and dedup ids, and clear the faults."""
        self.recorder.reset()


def serve_until_signalled(fake: FakeCustomerIO, announce: Callable[[str], None]) -> None:
    """Run `fake` in the foreground until SIGTERM or SIGINT, announcing its URL once."""
    stop = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    # Installed before the announcement, so a parent that signals right after reading it is heard.
    previous = {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        fake.start()
        announce(
            f"fake Customer.io listening on {fake.url} "
            f"(site id {fake.site_id}, api key {fake.api_key})"
        )
        while not stop.wait(0.5):
            pass
    finally:
        fake.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
