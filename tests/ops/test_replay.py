"""`webhooks replay`: after a mapping change, only what changed is sent, behind live."""

from __future__ import annotations

from sqlalchemy.engine import Engine

from tests.conftest import make_settings
from tests.ops.conftest import Run, post_signed, worker
from tests.pipeline import ScriptedCustomerIO, inbox_rows, outbox_rows
from webhooks.worker import Worker


def sent_events(cio: ScriptedCustomerIO) -> list[str]:
    return [
        item["name"]
        for body in cio.bodies()
        for item in body.get("batch", [body])
        if item.get("action", "event") == "event" and "name" in item
    ]


def test_a_replay_after_a_mapping_change_sends_only_what_changed(
    engine: Engine, cio: ScriptedCustomerIO, run: Run
) -> None:
    # A checkout (mapped) and a standalone PaymentIntent (not mapped: the setting that
    # maps payment_intent.* events is off), both delivered as usual.
    post_signed(engine, "stripe", "checkout_session_completed_paid")
    post_signed(engine, "stripe", "payment_intent_succeeded_standalone")
    worker(engine, cio).run_once()
    assert sent_events(cio) == ["order_completed"]
    assert run("replay", "--since", "1h", "--dry-run").stdout.splitlines() == [
        "would replay 2 webhooks",
        "  stripe checkout.session.completed: 1",
        "  stripe payment_intent.succeeded: 1",
    ]
    # The fix: this merchant confirms PaymentIntents itself, so they are orders.
    result = run("replay", "--since", "1h", "--type", "payment_intent.succeeded")
    assert "replaying 1 webhooks in the replay lane" in result.stdout
    [replayed] = [row for row in inbox_rows(engine) if row.event_type.startswith("payment")]
    assert (replayed.state, replayed.lane) == ("pending", 1)
    url = engine.url.render_as_string(hide_password=False)
    fixed = Worker(engine, make_settings(url, stripe_payment_intent_events=True), cio.client())
    fixed.run_once()
    assert sent_events(cio) == ["order_completed", "order_completed"]
    assert {row.state for row in inbox_rows(engine)} == {"done"}
    # Replaying everything again sends nothing new: every fact is already delivered.
    run("replay", "--since", "1h")
    fixed.run_once()
    fixed.run_once()
    assert sent_events(cio) == ["order_completed", "order_completed"]
    assert {row.lane for row in outbox_rows(engine) if row.kind == "event"} == {0, 1}


def test_force_sends_again_what_was_sent(engine: Engine, cio: ScriptedCustomerIO, run: Run) -> None:
    post_signed(engine, "stripe", "checkout_session_completed_paid")
    runner = worker(engine, cio)
    runner.run_once()
    run("replay", "--since", "1h", "--force")
    runner.run_once()
    assert sent_events(cio) == ["order_completed", "order_completed"]
    first, again = [item for body in cio.bodies() for item in body["batch"] if "name" in item]
    assert first["id"] == again["id"]  # same event id: Customer.io deduplicates it


def test_replay_refuses_bad_windows(engine: Engine, run: Run) -> None:
    result = run("replay", "--since", "1h", "--until", "2h")
    assert result.exit_code == 2
    assert "must be after --since" in result.stderr
    assert run("replay").exit_code == 2  # --since is required
    assert run("replay", "--since", "1h").stdout.strip() == "nothing to replay: 0 webhooks"
