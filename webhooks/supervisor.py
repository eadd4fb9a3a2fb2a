"""Keeps the delivery worker beside `webhooks serve` running: restarted when it dies.

Runs as a small process of its own (`webhooks serve` starts it), single-threaded, so
nothing of it is inherited by gunicorn's forks. A crash restarts the worker after a
backoff that doubles (1 s up to MAX_BACKOFF) while it keeps crashing and resets once
it has run for STEADY seconds; past CRASH_LOOP crashes in a row each one is reported
as `worker_crash_loop` (bad settings, the database away), never restarted in a tight
loop. It stops the worker and itself on SIGTERM, or when `serve` has gone.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from types import FrameType

import structlog

log = structlog.get_logger("webhooks.supervisor")

MAX_BACKOFF = 60.0
STEADY = 300.0  # seconds of running that count as recovered
CRASH_LOOP = 5
POLL = 0.5  # seconds between looks at the worker and at the parent


def worker_process(env: Mapping[str, str]) -> subprocess.Popen[bytes]:
    """`webhooks worker` running both stages (the one worker of `webhooks serve`: a
    WORKER_STAGE meant for dedicated worker hosts must not leave it mapping only),
    told to stop if this supervisor disappears."""
    child_env = {**env, "WEBHOOKS_PARENT_PID": str(os.getpid()), "WORKER_STAGE": "both"}
    return subprocess.Popen([sys.executable, "-m", "webhooks", "worker"], env=child_env)


class Supervisor:
    """The restart loop; `run()` blocks until `stop()` (or SIGTERM) or the parent goes."""

    def __init__(
        self,
        env: Mapping[str, str],
        parent_pid: int = 0,
        start: Callable[[Mapping[str, str]], subprocess.Popen[bytes]] = worker_process,
        max_backoff: float = MAX_BACKOFF,
        first_backoff: float = 1.0,
    ) -> None:
        self._env = env
        self._parent = parent_pid
        self._start = start
        self._max_backoff = max_backoff
        self._first_backoff = first_backoff
        self.stopping = threading.Event()
        self.restarts = 0

    def _orphaned(self) -> bool:
        return bool(self._parent) and os.getppid() != self._parent

    def run(self) -> None:
        """Start the worker, restart it when it dies, until told to stop."""
        crashes = 0
        while not self.stopping.is_set() and not self._orphaned():
            process = self._start(self._env)
            started = time.monotonic()
            while process.poll() is None:
                if self.stopping.is_set() or self._orphaned():
                    _terminate(process)
                    return
                self.stopping.wait(POLL)
            ran = time.monotonic() - started
            crashes = 1 if ran >= STEADY else crashes + 1
            backoff = min(self._max_backoff, self._first_backoff * 2.0 ** (crashes - 1))
            log.error(
                "worker_crash_loop" if crashes > CRASH_LOOP else "worker_died",
                exit_code=process.returncode,
                ran_seconds=round(ran, 1),
                crashes=crashes,
                restart_in_seconds=backoff,
            )
            self.restarts += 1
            self.stopping.wait(backoff)

    def stop(self) -> None:
        """Ask run() to stop the worker and return."""
        self.stopping.set()


def _terminate(process: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def install_signal_handlers(supervisor: Supervisor) -> None:
    """SIGTERM and SIGINT stop the worker, then the supervisor."""

    def _stop(_signum: int, _frame: FrameType | None) -> None:
        supervisor.stop()  # nothing else in a signal handler

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
