"""The Procfile's commands work as a platform would run them."""

from __future__ import annotations

import shlex
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.integration.service import free_port, service_env

ROOT = Path(__file__).resolve().parents[2]


def procfile() -> dict[str, str]:
    lines = (ROOT / "Procfile").read_text().splitlines()
    return dict(line.split(": ", 1) for line in lines if line.strip())


def test_release_then_web(tmp_path: Path) -> None:
    commands = procfile()
    assert set(commands) >= {"web", "release"}
    port = free_port()
    env = service_env(
        f"sqlite:///{tmp_path / 'inbox.db'}",
        PORT=str(port),
        HOST="127.0.0.1",
        STRIPE_WEBHOOK_SECRET="whsec_procfile",
    )
    venv_bin = str(Path(sys.executable).parent)
    env["PATH"] = f"{venv_bin}:{env.get('PATH', '')}"
    release = subprocess.run(
        shlex.split(commands["release"]),
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert release.returncode == 0, release.stderr
    web = subprocess.Popen(
        shlex.split(commands["web"]),
        env=env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        ready = None
        while time.monotonic() < deadline and web.poll() is None:
            try:
                ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.1)
        assert ready is not None, "the web process never answered"
        assert (ready.status_code, ready.json()["status"]) == (200, "ok")
    finally:
        web.terminate()
        web.wait(timeout=20)
