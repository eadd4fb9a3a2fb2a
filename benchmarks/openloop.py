"""An open-loop load generator: signed Stripe events at a fixed rate, ack latency per phase.

wrk (benchmarks/loadgen.py) is closed loop: it measures what a saturated server does. A
provider is open loop: webhooks arrive at their own pace whatever the server is doing,
so a stall shows as queued requests, not as fewer requests. A scheduler thread releases
one request every 1/rate seconds to a pool of sender threads (each with its own
keep-alive connection), and the latency is counted from the moment the request was due,
so time spent waiting for a free sender counts too (no coordinated omission).

The caller switches `phase` between measurements; every sample carries the phase that
was current when it was due.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass

import httpx
from harness import Event, EventFactory, percentile

from webhooks.providers.stripe.signature import sign


@dataclass(frozen=True, slots=True)
class Sample:
    """One request: its phase, its latency from when it was due, and the answer."""

    phase: str
    latency_ms: float
    status: int  # 0: no answer (connection error or the client's timeout)
    event: Event


class OpenLoop:
    """Fixed-rate signed webhooks to `url`; `samples` grows until `stop()`."""

    def __init__(
        self, url: str, rate: float, secret: str, senders: int = 8, timeout: float = 10.0
    ) -> None:
        self.url, self.rate, self.secret, self.timeout = url, rate, secret, timeout
        self.phase = "warmup"
        self.samples: list[Sample] = []
        self._factory = EventFactory()
        self._due: queue.Queue[tuple[float, str, Event] | None] = queue.Queue()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._schedule, daemon=True)] + [
            threading.Thread(target=self._send, daemon=True) for _ in range(senders)
        ]
        self._lock = threading.Lock()

    def start(self) -> None:
        """Start the scheduler and the senders."""
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        """Stop scheduling, let the senders finish what is due, and join them."""
        self._stop.set()
        self._threads[0].join()
        for _ in self._threads[1:]:
            self._due.put(None)
        for thread in self._threads[1:]:
            thread.join()

    def _schedule(self) -> None:
        started, index = time.monotonic(), 0
        while not self._stop.is_set():
            due = started + index / self.rate
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            self._due.put((due, self.phase, self._factory.make(index, int(time.time()))))
            index += 1

    def _send(self) -> None:
        with httpx.Client(timeout=self.timeout) as client:
            while (item := self._due.get()) is not None:
                due, phase, event = item
                headers = {
                    "Stripe-Signature": sign(event.body, self.secret),
                    "Content-Type": "application/json",
                }
                try:
                    status = client.post(self.url, content=event.body, headers=headers).status_code
                except httpx.HTTPError:
                    status = 0
                latency = (time.monotonic() - due) * 1000
                with self._lock:
                    self.samples.append(Sample(phase, latency, status, event))

    def of(self, phase: str) -> list[Sample]:
        """The samples due during `phase`."""
        with self._lock:
            return [sample for sample in self.samples if sample.phase == phase]


@dataclass(frozen=True, slots=True)
class PhaseStats:
    """Latency percentiles and answers of one phase."""

    requests: int
    accepted: int
    failed: int
    p50_ms: float
    p99_ms: float

    @classmethod
    def of(cls, samples: list[Sample]) -> PhaseStats:
        """Summarise `samples`; `failed` counts anything that was not a 200."""
        latencies = [sample.latency_ms for sample in samples]
        accepted = sum(1 for sample in samples if sample.status == 200)
        return cls(
            requests=len(samples),
            accepted=accepted,
            failed=len(samples) - accepted,
            p50_ms=percentile(latencies, 50),
            p99_ms=percentile(latencies, 99),
        )
