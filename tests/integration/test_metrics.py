"""`GET /metrics` from the real server: summed over gunicorn's workers and the worker.

`webhooks serve` with two gunicorn workers and its delivery worker (dry run): webhooks
posted concurrently land on both gunicorn workers, and the delivery worker maps them in
its own process; one scrape must count all of them. Without the token it refuses.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.conftest import STRIPE_SECRET, stripe_event
from tests.integration.service import serve, service_env, upgrade
from webhooks.providers.stripe.signature import sign

TOKEN = "metrics-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def service(database_url: str, tmp_path: Path) -> Iterator[str]:
    env = service_env(database_url, STRIPE_WEBHOOK_SECRET=STRIPE_SECRET, METRICS_TOKEN=TOKEN)
    if not database_url.startswith("sqlite"):
        upgrade(env)
    with serve(env, tmp_path) as base:
        yield base


def sample(text: str, metric: str, /, **labels: str) -> float:
    """The value of one sample in Prometheus text (0 when absent)."""
    wanted = ",".join(f'{key}="{value}"' for key, value in sorted(labels.items()))
    for line in text.splitlines():
        match = re.fullmatch(rf"{metric}\{{(.*)\}} (\S+)", line)
        if match and ",".join(sorted(match[1].split(","))) == wanted:
            return float(match[2])
        if not labels and line.startswith(f"{metric} "):
            return float(line.split()[1])
    return 0.0


def post(base: str, n: int) -> int:
    body = stripe_event(f"evt_metrics_{n}")
    headers = {"Stripe-Signature": sign(body, STRIPE_SECRET), "Connection": "close"}
    return httpx.post(f"{base}/webhooks/stripe", content=body, headers=headers).status_code


def test_metrics_sum_every_process_and_read_the_database(service: str) -> None:
    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(lambda n: post(service, n), range(40)))
    assert statuses == [200] * 40
    bad = httpx.post(
        f"{service}/webhooks/stripe", content=b"{}", headers={"Stripe-Signature": "t=1,v1=00"}
    )
    assert bad.status_code == 401
    deadline = time.monotonic() + 30
    while True:
        text = httpx.get(f"{service}/metrics", headers=AUTH).text
        mapped = sample(
            text, "webhooks_operations_mapped_total", kind="event", name="order_completed"
        )
        backlog = sample(text, "webhooks_backlog", stage="mapping", lane="live")
        if (mapped and not backlog) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    accepted = dict(provider="stripe", type="checkout.session.completed", outcome="accepted")
    assert sample(text, "webhooks_received_total", **accepted) == 40
    assert (
        sample(
            text, "webhooks_received_total", provider="stripe", type="", outcome="invalid_signature"
        )
        == 1
    )
    assert sample(text, "webhooks_ingest_seconds_count", provider="stripe") == 41
    # Counted by the delivery worker, in its own process: 40 deliveries of one checkout
    # session are one fact, queued once.
    assert mapped == 1
    # Read from the database at scrape time.
    assert sample(text, "webhooks_database_up") == 1
    assert sample(text, "webhooks_backlog", stage="mapping", lane="live") == 0
    assert sample(text, "webhooks_workers", state="dry_run") == 1
    assert 0 <= sample(text, "webhooks_last_received_seconds", provider="stripe") < 60
    assert "buyer@example.test" not in text


def test_metrics_refuse_without_the_token(service: str) -> None:
    missing = httpx.get(f"{service}/metrics")
    assert (missing.status_code, missing.json()["error"]) == (401, "unauthorized")
    assert missing.headers["WWW-Authenticate"] == "Bearer"
    wrong = httpx.get(f"{service}/metrics", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
