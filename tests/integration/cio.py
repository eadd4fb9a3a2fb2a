"""The fake Customer.io as a separate process, as the service meets it in production."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from webhooks.fakes.customerio import FakeCustomerIOClient


@contextmanager
def fake_customerio_process() -> Iterator[FakeCustomerIOClient]:
    """Start `python -m webhooks.fakes.customerio --port 0`; yield a client of its control API."""
    process = subprocess.Popen(
        [sys.executable, "-m", "webhooks", "dev", "fake-customerio", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    url = line.split("listening on ")[1].split()[0]
    # Keep reading what it prints after the announcement (a traceback of a request it
    # could not handle, say): a full pipe would block it in a write, and then it could
    # neither answer nor stop.
    printed: list[str] = []
    reader = threading.Thread(target=lambda: printed.extend(process.stdout or []), daemon=True)
    reader.start()
    client = FakeCustomerIOClient(url)
    try:
        yield client
    finally:
        client.close()
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
            raise AssertionError(
                "the fake Customer.io ignored SIGTERM for 10 s; it printed:\n"
                + "".join(printed[-40:])
            ) from None


def wait_for(condition: Callable[[], Any], timeout: float = 20.0, what: str = "") -> Any:
    """Poll `condition` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what or condition}")
