"""`webhooks simulate` against the real server: the whole flow to the dry-run line."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import SHOPIFY_SECRET, STRIPE_SECRET
from tests.integration.service import run_cli, serve, service_env, upgrade


@pytest.fixture
def served(database_url: str, tmp_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    env = service_env(
        database_url, STRIPE_WEBHOOK_SECRET=STRIPE_SECRET, SHOPIFY_WEBHOOK_SECRET=SHOPIFY_SECRET
    )
    if not database_url.startswith("sqlite"):
        upgrade(env)
    with serve(env, tmp_path) as base:
        yield base, env


def test_a_simulated_checkout_reaches_the_dry_run_line(
    served: tuple[str, dict[str, str]], tmp_path: Path
) -> None:
    base, env = served
    done = run_cli(
        ["simulate", "stripe", "checkout.session.completed", "--url", base], env, tmp_path
    )
    assert done.returncode == 0, done.stderr
    assert '"status":"accepted"' in done.stdout.replace(" ", "")
    deadline = time.monotonic() + 20
    lines: list[dict[str, object]] = []
    while time.monotonic() < deadline:
        log = "".join(path.read_text() for path in tmp_path.glob("serve-*.log"))
        lines = [json.loads(line) for line in log.splitlines() if "dry_run_operation" in line]
        if any(line.get("name") == "order_completed" for line in lines):
            break
        time.sleep(0.3)
    assert any(line.get("name") == "order_completed" for line in lines), lines
    shopify = run_cli(["simulate", "shopify", "orders/create", "--url", base], env, tmp_path)
    assert shopify.returncode == 0, shopify.stderr


def test_simulate_says_what_is_wrong(served: tuple[str, dict[str, str]], tmp_path: Path) -> None:
    base, env = served
    unknown = run_cli(
        ["simulate", "stripe", "charge.dispute.created", "--url", base], env, tmp_path
    )
    assert unknown.returncode == 2
    assert "samples: " in unknown.stderr
    nobody = run_cli(
        ["simulate", "stripe", "invoice.paid", "--url", "http://127.0.0.1:9"], env, tmp_path
    )
    assert nobody.returncode == 1
    assert "is `webhooks serve` running there?" in nobody.stderr
    wrong = run_cli(
        ["simulate", "stripe", "invoice.paid", "--url", base, "--secret", "whsec_wrong"],
        env,
        tmp_path,
    )
    assert wrong.returncode == 1
    assert "invalid_signature" in wrong.stdout
