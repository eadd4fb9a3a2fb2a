"""`webhooks backfill stripe` against the fake Stripe API over HTTP, through the pipeline."""

from __future__ import annotations

import copy
import json
import time
from typing import Any

import pytest
import structlog
from click.testing import CliRunner, Result
from sqlalchemy.engine import Engine

from tests.conftest import STRIPE_SECRET, StripeSender, make_settings
from tests.ops.conftest import as_json, worker
from tests.pipeline import FIXTURES, ScriptedCustomerIO, inbox_rows, outbox_rows
from webhooks.app import create_app
from webhooks.cli import main
from webhooks.fakes.stripe import FakeStripe
from webhooks.fakes.stripe.server import DEFAULT_API_KEY

CHECKOUT = json.loads((FIXTURES / "stripe" / "checkout_session_completed_paid.json").read_text())


def checkout_event(n: int, minutes_ago: int) -> dict[str, Any]:
    """A paid checkout event of Stripe's shape, its own order (payment intent) each."""
    event = copy.deepcopy(CHECKOUT["body"])
    event.update(id=f"evt_bf{n:04d}", created=int(time.time()) - minutes_ago * 60)
    event["data"]["object"].update(id=f"cs_bf{n:04d}", payment_intent=f"pi_bf{n:04d}")
    return event


def backfill(
    engine: Engine, fake: FakeStripe, *args: str, key: str = DEFAULT_API_KEY, level: str = "WARNING"
) -> Result:
    env = {
        "DATABASE_URL": engine.url.render_as_string(hide_password=False),
        "STRIPE_WEBHOOK_SECRET": STRIPE_SECRET,
        "STRIPE_API_KEY": key,
        "STRIPE_API_BASE": fake.url,
        "LOG_LEVEL": level,
    }
    return CliRunner().invoke(main, ["backfill", "stripe", *args], env=env, catch_exceptions=False)


def webhook(engine: Engine, event: dict[str, Any]) -> None:
    app = create_app(make_settings(engine.url.render_as_string(hide_password=False)))
    try:
        assert StripeSender(app.test_client()).post(json.dumps(event).encode()).status_code == 200
    finally:
        app.extensions["webhooks.engine"].dispose()


def orders_sent(cio: ScriptedCustomerIO) -> list[str]:
    return [
        item["attributes"]["order_id"]
        for body in cio.bodies()
        for item in body.get("batch", [])
        if item.get("name") == "order_completed"
    ]


def test_after_an_outage_backfill_delivers_exactly_the_missing_orders_once(
    engine: Engine, cio: ScriptedCustomerIO, fake_stripe: FakeStripe
) -> None:
    events = [checkout_event(n, minutes_ago=600 - n) for n in range(250)]  # three pages
    for event in events:
        fake_stripe.add_event(event)
    # Before and after a 6-hour outage the webhooks arrived; during it they did not.
    for event in events[:40] + events[220:]:
        webhook(engine, event)
    worker(engine, cio).run_once()
    assert len(orders_sent(cio)) == 70
    result = backfill(engine, fake_stripe, "--since", "24h", "--dry-run", "--json")
    assert result.exit_code == 0, result.output
    assert as_json(result) == {
        "dry_run": True,
        "fetched": 250,
        "new": 180,
        "duplicates": 70,
        "refreshed": 0,
        "new_by_type": {"checkout.session.completed": 180},
    }
    assert len(inbox_rows(engine)) == 70  # a dry run stores nothing
    result = backfill(engine, fake_stripe, "--since", "24h")
    assert result.exit_code == 0, result.output
    stored = "fetched 250: stored 180 new in the backfill lane, 70 already stored"
    assert result.stdout.startswith(stored)
    missed = {e["id"] for e in events[40:220]}
    assert {row.lane for row in inbox_rows(engine) if row.delivery_id in missed} == {2}
    # This merchant lets the last 12 hours' facts start journeys (default: 1 hour).
    runner = worker(engine, cio, backfill_live_window_seconds=12 * 3600)
    while runner.run_once():
        pass
    runner.run_once()
    sent = orders_sent(cio)
    assert sorted(sent) == sorted(f"pi_bf{n:04d}" for n in range(250))  # each once
    # A rerun finds everything stored: nothing new, nothing sent.
    again = backfill(engine, fake_stripe, "--since", "24h", "--json")
    assert (as_json(again)["new"], as_json(again)["duplicates"]) == (0, 250)
    runner.run_once()
    assert len(orders_sent(cio)) == 250


def test_a_webhook_arriving_after_its_backfill_is_one_order(
    engine: Engine, cio: ScriptedCustomerIO, fake_stripe: FakeStripe
) -> None:
    event = checkout_event(1, minutes_ago=5)
    fake_stripe.add_event(event)
    assert backfill(engine, fake_stripe, "--since", "1h").exit_code == 0
    webhook(engine, event)  # Stripe's delayed delivery of the same event
    [row] = inbox_rows(engine)
    assert (row.lane, row.duplicates) == (2, 1)
    worker(engine, cio).run_once()
    assert orders_sent(cio) == ["pi_bf0001"]
    assert len([r for r in outbox_rows(engine) if r.kind == "event"]) == 1


def test_rate_limits_are_waited_out(engine: Engine, fake_stripe: FakeStripe) -> None:
    fake_stripe.add_event(checkout_event(1, minutes_ago=5))
    fake_stripe.set_faults(status=429, retry_after=1, times=2)
    result = backfill(engine, fake_stripe, "--since", "1h", "--json")
    assert result.exit_code == 0, result.output
    assert as_json(result)["new"] == 1
    assert [r["status"] for r in fake_stripe.requests()] == [429, 429, 200]


def test_what_the_work_logs_goes_to_stderr_and_json_stays_parseable(
    engine: Engine, fake_stripe: FakeStripe
) -> None:
    from structlog.testing import capture_logs

    from webhooks.logging import configure_logging

    before = structlog.get_config()
    configure_logging("DEBUG", "console")  # the process's own set-up, before the command
    try:
        fake_stripe.add_event(checkout_event(1, minutes_ago=5))
        fake_stripe.set_faults(status=429, retry_after=1, times=1)
        result = backfill(engine, fake_stripe, "--since", "1h", "--json", level="INFO")
        assert as_json(result)["new"] == 1  # stdout is the answer alone
        assert "stripe_api_retry" in result.stderr
        # The command put the process's set-up back: DEBUG, not the command's INFO.
        with capture_logs() as logs:
            structlog.get_logger("t").debug("after_the_command")
        assert [entry["event"] for entry in logs] == ["after_the_command"]
    finally:
        structlog.configure(**before)  # and this test puts back the suite's


@pytest.mark.parametrize("status", [401, 403])
def test_a_refused_key_is_a_clear_error(
    engine: Engine, fake_stripe: FakeStripe, status: int
) -> None:
    fake_stripe.set_faults(status=status)
    result = backfill(engine, fake_stripe, "--since", "1h")
    assert result.exit_code == 1
    assert "lacks read access" in result.stderr
    assert "Traceback" not in result.output


def test_missing_key_old_since_and_unknown_types_are_clear_errors(
    engine: Engine, fake_stripe: FakeStripe
) -> None:
    result = backfill(engine, fake_stripe, "--since", "1h", key="")
    assert (result.exit_code, "no STRIPE_API_KEY" in result.stderr) == (1, True)
    result = backfill(engine, fake_stripe, "--since", "40d")
    assert "Stripe keeps 30 days of events" in result.stderr
    result = backfill(engine, fake_stripe, "--since", "1h", "--types", "charge.dispute.created")
    assert "not event types the mappers handle: charge.dispute.created" in result.stderr
    assert fake_stripe.requests() == []


def test_old_backfilled_facts_update_people_but_start_no_journeys(
    engine: Engine, cio: ScriptedCustomerIO, fake_stripe: FakeStripe
) -> None:
    fake_stripe.add_event(checkout_event(1, minutes_ago=5 * 60))  # missed 5 hours ago
    fake_stripe.add_event(checkout_event(2, minutes_ago=10))  # missed 10 minutes ago
    fake_stripe.add_event(checkout_event(3, minutes_ago=5 * 24 * 60))  # 5 days ago
    assert backfill(engine, fake_stripe, "--since", "6d").exit_code == 0
    worker(engine, cio).run_once()
    # The recent order starts its journey. The 5-hour-old one would too (Customer.io
    # triggers on events up to 72 h old): it is history, withheld as an event. The
    # 5-day-old one goes out with its own timestamp, recorded but triggering nothing.
    assert sorted(orders_sent(cio)) == ["pi_bf0002", "pi_bf0003"]
    sent = {
        item["attributes"]["order_id"]: item["timestamp"]
        for body in cio.bodies()
        for item in body.get("batch", [])
        if item.get("name") == "order_completed"
    }
    assert sent["pi_bf0003"] <= time.time() - 5 * 24 * 3600 + 60
    [old] = [
        row for row in outbox_rows(engine) if row.kind == "event" and row.state == "suppressed"
    ]
    assert old.last_error.startswith("history: backfilled 5.0 h old")
    # All three count in the person's attributes.
    identifies = [i for b in cio.bodies() for i in b["batch"] if i["action"] == "identify"]
    assert identifies[-1]["attributes"]["order_count"] == 3


def test_attributes_only_sends_person_state_and_no_events(
    engine: Engine, cio: ScriptedCustomerIO, fake_stripe: FakeStripe
) -> None:
    fake_stripe.add_event(checkout_event(1, minutes_ago=10))
    assert backfill(engine, fake_stripe, "--since", "1h", "--attributes-only").exit_code == 0
    [row] = inbox_rows(engine)
    assert row.lane == 3
    worker(engine, cio).run_once()
    assert orders_sent(cio) == []
    identifies = [i for b in cio.bodies() for i in b["batch"] if i["action"] == "identify"]
    assert identifies[-1]["attributes"]["order_count"] == 1
    [event] = [r for r in outbox_rows(engine) if r.kind == "event"]
    assert (event.state, event.last_error) == (
        "suppressed",
        "history: backfilled with --attributes-only",
    )


def reconcile(engine: Engine, fake: FakeStripe, key: str = DEFAULT_API_KEY) -> Result:
    env = {
        "DATABASE_URL": engine.url.render_as_string(hide_password=False),
        "STRIPE_WEBHOOK_SECRET": STRIPE_SECRET,
        "SHOPIFY_WEBHOOK_SECRET": "",  # Stripe only: tests/ops/test_backfill_shopify.py
        "STRIPE_API_KEY": key,
        "STRIPE_API_BASE": fake.url,
        "LOG_LEVEL": "WARNING",
    }
    return CliRunner().invoke(main, ["reconcile", "--since", "24h"], env=env)


def test_reconcile_exits_by_what_the_webhooks_missed(
    engine: Engine, fake_stripe: FakeStripe
) -> None:
    received, missed = checkout_event(1, minutes_ago=30), checkout_event(2, minutes_ago=20)
    for event in (received, missed):
        fake_stripe.add_event(event)
    webhook(engine, received)
    first = reconcile(engine, fake_stripe)
    assert first.exit_code == 1, first.output  # one was missing: alert
    assert "stripe: 2 fetched, 1 already received, 1 missed by the webhooks" in first.stdout
    again = reconcile(engine, fake_stripe)
    assert again.exit_code == 0, again.output  # filled in: nothing missing any more
    refused = reconcile(engine, fake_stripe, key="")
    assert refused.exit_code == 3
    assert "stripe: not checked (ConfigError: no STRIPE_API_KEY" in refused.stdout


def register(fake: FakeStripe, engine: Engine, *args: str, key: str = DEFAULT_API_KEY) -> Result:
    env = {
        "DATABASE_URL": engine.url.render_as_string(hide_password=False),
        "STRIPE_API_KEY": key,
        "STRIPE_API_BASE": fake.url,
        "LOG_LEVEL": "WARNING",
    }
    url = "https://hooks.example.test/webhooks/stripe"
    return CliRunner().invoke(main, ["register", "stripe", "--url", url, *args], env=env)


def test_register_creates_once_updates_drift_and_then_changes_nothing(
    engine: Engine, fake_stripe: FakeStripe
) -> None:
    from mappers.stripe import HANDLERS

    dry = register(fake_stripe, engine, "--dry-run")
    assert dry.stdout.startswith("would create https://hooks.example.test/webhooks/stripe")
    assert fake_stripe.state.endpoints() == []
    created = register(fake_stripe, engine, "--json")
    assert created.exit_code == 0, created.output
    [found] = as_json(created)["targets"]
    assert found["action"] == "create"
    assert found["secret"].startswith("whsec_")
    [endpoint] = fake_stripe.state.endpoints()
    assert sorted(endpoint["enabled_events"]) == sorted(HANDLERS)
    # Someone removes a type in the dashboard and adds another: brought back exactly.
    drifted = dict(endpoint, enabled_events=[*sorted(HANDLERS)[1:], "charge.captured"])
    fake_stripe.state.save_endpoint(drifted)
    updated = register(fake_stripe, engine)
    assert f"  + {sorted(HANDLERS)[0]}" in updated.stdout
    assert "  - charge.captured" in updated.stdout
    again = register(fake_stripe, engine, "--json")
    [unchanged] = as_json(again)["targets"]
    assert unchanged["action"] == "unchanged"
    assert "secret" not in unchanged
    assert len(fake_stripe.state.endpoints()) == 1


def test_register_refused_or_without_a_key_is_a_clear_error(
    engine: Engine, fake_stripe: FakeStripe
) -> None:
    missing = register(fake_stripe, engine, key="")
    assert (missing.exit_code, "Webhook Endpoints: Write" in missing.stderr) == (1, True)
    fake_stripe.set_faults(status=403)
    refused = register(fake_stripe, engine)
    assert refused.exit_code == 1
    assert "cannot write webhook endpoints" in refused.stderr
