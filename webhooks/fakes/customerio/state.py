"""What the fake Customer.io remembers: accepted operations, a request log and its faults."""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, fields
from typing import Any


@dataclass(frozen=True)
class Faults:
    """How the fake misbehaves on the API requests that follow; the default is healthy."""

    latency_ms: int = 0
    status: int | None = None
    retry_after: int | None = None
    # The next N API requests get the status / down / timeout fault, then those clear themselves
    # (latency stays). None means until changed.
    times: int | None = None
    timeout: bool = False
    down: bool = False

    @classmethod
    def from_json(cls, data: Any) -> Faults:
        """Parse a `/_fake/faults` body; raises ValueError naming the bad field."""
        if not isinstance(data, dict):
            raise ValueError("faults must be a JSON object")
        known = {field.name for field in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown fault fields: {', '.join(unknown)}")
        for name in ("latency_ms", "status", "retry_after", "times"):
            value = data.get(name)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or value < 0
            ):
                raise ValueError(f"{name} must be a non-negative integer or null")
        for name in ("timeout", "down"):
            if not isinstance(data.get(name, False), bool):
                raise ValueError(f"{name} must be true or false")
        status = data.get("status")
        if status is not None and not 100 <= status <= 599:
            raise ValueError("status must be an HTTP status code")
        if data.get("latency_ms") is None:
            data = {**data, "latency_ms": 0}
        return cls(**data)

    def as_dict(self) -> dict[str, Any]:
        """The JSON form, as `/_fake/faults` answers it."""
        return asdict(self)

    @property
    def disruptive(self) -> bool:
        """Whether a request gets something other than its normal answer."""
        return self.status is not None or self.timeout or self.down


@dataclass(frozen=True)
class Decision:
    """The faults one API request gets, fixed when it arrives."""

    latency_s: float
    status: int | None
    retry_after: int | None
    timeout: bool
    down: bool
    # Set when the faults change, the fake is reset or stopped: lets a held request go.
    release: threading.Event


class Recorder:
    """Thread-safe memory of the fake: operations, requests, dedup ids, counters and faults."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults = Faults()
        self._release = threading.Event()
        self._clear()

    def _clear(self) -> None:
        self._operations: list[dict[str, Any]] = []
        self._requests: list[dict[str, Any]] = []
        self._event_ids: set[str] = set()
        self._duplicates = 0
        self._by_status: Counter[str] = Counter()

    def _release_held(self) -> None:
        # Swap the event first so requests arriving later wait on a fresh, unset one.
        released, self._release = self._release, threading.Event()
        released.set()

    # --- faults -------------------------------------------------------------------------------

    def faults(self) -> Faults:
        """The current faults."""
        with self._lock:
            return self._faults

    def set_faults(self, faults: Faults) -> None:
        """Replace the faults and let go of any request held by a `timeout` fault."""
        with self._lock:
            self._faults = faults
            self._release_held()

    def release_held(self) -> None:
        """Let go of every request held by a `timeout` fault (on stop)."""
        with self._lock:
            self._release_held()

    def decide(self) -> Decision:
        """The faults for one arriving API request, consuming one of `times` if set."""
        with self._lock:
            faults = self._faults
            if faults.disruptive and faults.times is not None:
                left = faults.times - 1
                self._faults = (
                    Faults(latency_ms=faults.latency_ms)
                    if left <= 0
                    else Faults(**{**faults.as_dict(), "times": left})
                )
            if faults.disruptive and faults.times == 0:
                faults = Faults(latency_ms=faults.latency_ms)
            return Decision(
                latency_s=faults.latency_ms / 1000,
                status=faults.status,
                retry_after=faults.retry_after,
                timeout=faults.timeout,
                down=faults.down,
                release=self._release,
            )

    # --- recording ----------------------------------------------------------------------------

    def accept(
        self,
        endpoint: str,
        operation: Any,
        *,
        dedup_id: str | None = None,
        identifier: str | None = None,
        batch_index: int | None = None,
    ) -> bool:
        """Record an accepted operation; False (and not recorded) for an event id seen before."""
        with self._lock:
            # Check and insert under one lock, so two concurrent duplicates record exactly once.
            if dedup_id is not None:
                key = dedup_id.upper()  # ULIDs are case-insensitive
                if key in self._event_ids:
                    self._duplicates += 1
                    return False
                self._event_ids.add(key)
            self._operations.append(
                {
                    "endpoint": endpoint,
                    "identifier": identifier,
                    "batch_index": batch_index,
                    "operation": operation,
                    "received_at": time.time(),
                }
            )
            return True

    def log_request(
        self,
        method: str,
        path: str,
        status: int | None,
        *,
        started: float,
        fault: str | None = None,
    ) -> None:
        """Append one API request to the log; `status` is None when none was sent."""
        entry = {
            "method": method,
            "path": path,
            "status": status,
            "fault": fault,
            "time": started,
            "duration_ms": round((time.time() - started) * 1000, 1),
        }
        with self._lock:
            self._requests.append(entry)
            self._by_status[str(status) if status is not None else (fault or "none")] += 1

    def reset(self) -> None:
        """Forget everything, clear the faults and let go of held requests."""
        with self._lock:
            self._clear()
            self._faults = Faults()
            self._release_held()

    def operations(self) -> list[dict[str, Any]]:
        """A copy of the accepted operations, oldest first."""
        with self._lock:
            return list(self._operations)

    def requests(self) -> list[dict[str, Any]]:
        """A copy of the API request log, oldest first."""
        with self._lock:
            return list(self._requests)

    def stats(self) -> dict[str, Any]:
        """Counters: requests, accepted operations, duplicates ignored, requests by status."""
        with self._lock:
            return {
                "requests": len(self._requests),
                "operations": len(self._operations),
                "duplicates_ignored": self._duplicates,
                "by_status": dict(self._by_status),
            }
