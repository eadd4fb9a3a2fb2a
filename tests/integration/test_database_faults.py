"""PostgreSQL going away under load: the service's connections terminated mid-load.

Real gunicorn and its worker on PostgreSQL, a fake Customer.io process, signed Stripe
webhooks at a steady rate, and every one of the service's database connections
terminated with pg_terminate_backend three times while they arrive (the shared server
itself is never stopped). What a provider sees: 200, or 503 with Retry-After, never a
500 or a hang; what the service does: recovers by itself and delivers every
acknowledged webhook exactly once.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from tests.conftest import STRIPE_SECRET
from tests.integration.cio import fake_customerio_process, wait_for
from tests.integration.service import serve, service_env, upgrade
from tests.pipeline import FIXTURES
from webhooks.fakes.customerio import FakeCustomerIOClient
from webhooks.providers.stripe import signature as stripe

CHECKOUT = json.loads((FIXTURES / "stripe" / "checkout_session_completed_paid.json").read_text())


@pytest.fixture
def fake() -> Iterator[FakeCustomerIOClient]:
    with fake_customerio_process() as client:
        yield client


def event(n: int, run: str) -> bytes:
    body = json.loads(json.dumps(CHECKOUT["body"]))
    body.update(id=f"evt_{run}_{n}", created=int(time.time()))
    body["data"]["object"].update(id=f"cs_{run}_{n}", payment_intent=f"pi_{run}_{n}")
    return json.dumps(body).encode()


def terminate(admin: sa.Engine, application: str) -> int:
    with admin.connect() as conn:
        killed = conn.execute(
            sa.text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE application_name = :name AND pid <> pg_backend_pid()"
            ),
            {"name": application},
        ).scalar_one()
    return int(killed)


def test_terminated_connections_give_503s_only_and_lose_nothing(
    postgres_url: str, fake: FakeCustomerIOClient, tmp_path: Path
) -> None:
    application = f"webhooks_faults_{uuid.uuid4().hex[:8]}"
    url = f"{postgres_url}&application_name={application}"
    env = service_env(
        url,
        STRIPE_WEBHOOK_SECRET=STRIPE_SECRET,
        CUSTOMERIO_SITE_ID="fake-site",
        CUSTOMERIO_API_KEY="fake-key",
        CUSTOMERIO_TRACK_URL=fake.url,
        WORKER_POLL_INTERVAL="0.1",
        WORKER_LEASE_SECONDS="5",
    )
    upgrade(env)
    admin = sa.create_engine(postgres_url)
    run = uuid.uuid4().hex[:6]
    answers: dict[int, tuple[int, str | None]] = {}
    killed: list[int] = []
    try:
        with serve(env, tmp_path) as base, httpx.Client(timeout=10) as client:

            def post_all() -> None:
                for n in range(600):  # 6 s at 100 a second
                    body = event(n, run)
                    headers = {
                        "Stripe-Signature": stripe.sign(body, STRIPE_SECRET),
                        "Content-Type": "application/json",
                    }
                    try:
                        target = f"{base}/webhooks/stripe"
                        answer = client.post(target, content=body, headers=headers)
                        answers[n] = (answer.status_code, answer.headers.get("retry-after"))
                    except httpx.HTTPError as exc:  # a hang or a dropped connection
                        answers[n] = (0, type(exc).__name__)
                    time.sleep(0.01)

            sender = threading.Thread(target=post_all)
            sender.start()
            for _ in range(3):
                time.sleep(1.5)
                killed.append(terminate(admin, application))
            sender.join(timeout=60)
            assert not sender.is_alive()

            acked = {f"pi_{run}_{n}" for n, (status, _) in answers.items() if status == 200}

            def delivered() -> Counter[str]:
                return Counter(
                    op["operation"]["attributes"]["order_id"]
                    for op in fake.operations()
                    if op["operation"].get("name") == "order_completed"
                )

            wait_for(lambda: acked <= set(delivered()), timeout=60, what="every 2xx delivered")
    finally:
        admin.dispose()
    statuses = Counter(status for status, _ in answers.values())
    assert sum(killed) >= 3, f"no service connection was terminated: {killed}"
    # A provider sees 200 or a 503 asking it to retry; never a 500, never no answer.
    assert set(statuses) <= {200, 503}, statuses
    assert all(after == "5" for status, after in answers.values() if status == 503)
    assert statuses[200] >= 500, statuses  # recovered by itself, at once
    counts = delivered()
    assert all(counts[order] == 1 for order in acked)  # each exactly once
