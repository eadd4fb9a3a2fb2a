"""The supervisor beside `webhooks serve`: restarts a dying worker, never in a tight loop."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Mapping

import pytest
from structlog.testing import capture_logs

from webhooks.supervisor import CRASH_LOOP, Supervisor


def crashing(_env: Mapping[str, str]) -> subprocess.Popen[bytes]:
    """A worker that cannot start (bad settings, the database away): exits at once."""
    return subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])


def test_a_crashing_worker_is_restarted_with_backoff_and_reported() -> None:
    supervisor = Supervisor({}, start=crashing, max_backoff=0.4, first_backoff=0.05)
    runner = threading.Thread(target=supervisor.run)
    started = time.monotonic()
    with capture_logs() as logs:
        runner.start()
        while supervisor.restarts < CRASH_LOOP + 2 and time.monotonic() - started < 20:
            time.sleep(0.05)
        supervisor.stop()
        runner.join(timeout=10)
    assert not runner.is_alive()
    events = [(e["event"], e["exit_code"]) for e in logs]
    assert (
        events[: CRASH_LOOP + 2]
        == [("worker_died", 3)] * CRASH_LOOP + [("worker_crash_loop", 3)] * 2
    )
    # Backoff doubles from the first wait up to the cap: never a tight loop.
    waits = [e["restart_in_seconds"] for e in logs][: CRASH_LOOP + 2]
    assert waits == [0.05, 0.1, 0.2, 0.4, 0.4, 0.4, 0.4]
    assert time.monotonic() - started >= sum(waits[:-1])


def test_stop_ends_a_running_worker() -> None:
    def sleeping(_env: Mapping[str, str]) -> subprocess.Popen[bytes]:
        return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])

    processes: list[subprocess.Popen[bytes]] = []

    def start(env: Mapping[str, str]) -> subprocess.Popen[bytes]:
        processes.append(sleeping(env))
        return processes[-1]

    supervisor = Supervisor({}, start=start)
    runner = threading.Thread(target=supervisor.run)
    runner.start()
    while not processes:
        time.sleep(0.05)
    supervisor.stop()
    runner.join(timeout=35)
    assert not runner.is_alive()
    assert processes[0].poll() is not None  # terminated, not left behind
    assert supervisor.restarts == 0


def test_serve_stops_the_delivery_worker_when_gunicorn_begins_to_stop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The worker's stop (its send in hand, then exit) runs while gunicorn's workers
    drain, not after them: a deploy's stop is the longer of the two, not their sum."""
    from gunicorn.arbiter import Arbiter

    from webhooks.server import _Arbiter

    calls: list[str] = []
    monkeypatch.setattr(Arbiter, "stop", lambda self, graceful=True: calls.append("gunicorn"))
    arbiter = _Arbiter.__new__(_Arbiter)  # its stop() alone, without a running master
    arbiter.on_stop = lambda: calls.append("worker")
    arbiter.stop()
    assert calls == ["worker", "gunicorn"]


def test_the_serve_worker_runs_both_stages_whatever_worker_stage_says(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A WORKER_STAGE meant for dedicated worker hosts (a shared .env, say) must not
    leave `webhooks serve`'s only worker mapping without sending, or the reverse."""
    from webhooks import supervisor

    started: list[Mapping[str, str]] = []
    real_popen = subprocess.Popen

    def popen(command: list[str], env: Mapping[str, str]) -> subprocess.Popen[bytes]:
        started.append(env)
        return real_popen([sys.executable, "-c", "pass"])

    monkeypatch.setattr(supervisor.subprocess, "Popen", popen)
    supervisor.worker_process({"WORKER_STAGE": "map", "DATABASE_URL": "sqlite:///x.db"}).wait()
    assert started[0]["WORKER_STAGE"] == "both"
    assert started[0]["DATABASE_URL"] == "sqlite:///x.db"
