"""Run the real service (`webhooks serve`, i.e. gunicorn) as a subprocess for tests."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import sqlalchemy as sa

from webhooks.storage import migrate
from webhooks.storage.db import create_db_engine


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def service_env(database_url: str, **extra: str) -> dict[str, str]:
    """The environment of a service process: the test's settings, nothing inherited."""
    env = {key: value for key, value in os.environ.items() if key in ("PATH", "HOME", "LANG")}
    env.update(DATABASE_URL=database_url, LOG_FORMAT="json", LOG_LEVEL="INFO", **extra)
    return env


def run_cli(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run `webhooks ARGS` in a fresh interpreter and capture its output."""
    return subprocess.run(
        [sys.executable, "-m", "webhooks", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def upgrade(env: dict[str, str]) -> None:
    """Migrate the service's database as `webhooks db upgrade` (the release phase) does,
    in this process: a subprocess per test cost two seconds of interpreter start-up.
    The command itself runs in test_procfile and test_gunicorn."""
    engine = create_db_engine(env["DATABASE_URL"])
    try:
        migrate.upgrade(engine)
    finally:
        engine.dispose()


def _beating(database_url: str, processes: list[subprocess.Popen[bytes]]) -> bool:
    """Whether every process has written its worker heartbeat (owner host:pid:random)."""
    from webhooks.storage.schema import worker_heartbeats

    engine = create_db_engine(database_url)
    try:
        with engine.connect() as conn:
            owners = conn.execute(sa.select(worker_heartbeats.c.owner)).scalars()
            pids = {owner.rsplit(":", 2)[1] for owner in owners}
    finally:
        engine.dispose()
    return all(str(process.pid) in pids for process in processes)


@contextmanager
def worker_processes(
    env: dict[str, str], cwd: Path, count: int
) -> Iterator[list[subprocess.Popen[bytes]]]:
    """`count` more `webhooks worker` processes, each running (its heartbeat is in the
    database) before this yields, so they really race; stopped (SIGTERM) on leaving,
    and each must then exit 0 (a worker that crashed or hung fails the test)."""
    processes: list[subprocess.Popen[bytes]] = []
    logs = [cwd / f"worker-{index}.log" for index in range(count)]
    try:
        for path in logs:
            with path.open("w") as log:
                processes.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "webhooks", "worker"],
                        env=env,
                        cwd=cwd,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                    )
                )
        # Under load a worker may take seconds to import; one stopped before it runs
        # raced nothing (and dies by the default SIGTERM action, exit -15).
        deadline = time.monotonic() + 60
        while not _beating(env["DATABASE_URL"], processes):
            exited = [p.returncode for p in processes if p.poll() is not None]
            assert not exited, f"a worker exited {exited} before starting: see {cwd}"
            assert time.monotonic() < deadline, f"workers not started in 60 s: see {cwd}"
            time.sleep(0.05)
        yield processes
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(timeout=30)
    codes = [process.returncode for process in processes]
    assert codes == [0] * count, f"workers exited {codes}: see {cwd}/worker-*.log"


@contextmanager
def serve(env: dict[str, str], cwd: Path, workers: int = 2) -> Iterator[str]:
    """Start `webhooks serve` on a free port; yield its base URL; stop it afterwards."""
    with serve_process(env, cwd, workers) as (base, _process):
        yield base


@contextmanager
def serve_process(
    env: dict[str, str], cwd: Path, workers: int = 2
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """`serve`, yielding the process too (to find and kill its children)."""
    port = free_port()
    log_path = cwd / f"serve-{port}.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "webhooks",
                "serve",
                "--port",
                str(port),
                "--workers",
                str(workers),
            ],
            env=env,
            cwd=cwd,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_until_healthy(base, process, log_path)
        yield base, process
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_until_healthy(base: str, process: subprocess.Popen[bytes], log_path: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"service exited early:\n{log_path.read_text()}")
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"service did not become healthy:\n{log_path.read_text()}")
