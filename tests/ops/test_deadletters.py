"""`webhooks dead-letters` on dead letters made by the real pipeline, both stages."""

from __future__ import annotations

import json

import httpx
from sqlalchemy.engine import Engine

from tests.ops.conftest import Run, as_json, post_signed, worker
from tests.pipeline import ScriptedCustomerIO, inbox_rows, outbox_rows
from webhooks.fakes.customerio import FakeCustomerIO
from webhooks.stage2.customerio import CustomerIO
from webhooks.storage.inbox import Delivery, store_delivery


def refused_operations(engine: Engine, cio: ScriptedCustomerIO) -> None:
    """Customer.io answers 400 to everything: the batch, then each operation alone."""
    post_signed(engine, "stripe", "checkout_session_completed_paid")
    cio.default = lambda _request: httpx.Response(400, json={"errors": ["bad"]})
    runner = worker(engine, cio)
    for _ in range(3):
        runner.run_once()
    assert {row.state for row in outbox_rows(engine)} == {"dead"}


def test_a_refused_operation_retried_after_the_fix_is_delivered_once(
    engine: Engine, fake_cio: tuple[FakeCustomerIO, CustomerIO], run: Run
) -> None:
    fake, client = fake_cio
    post_signed(engine, "stripe", "checkout_session_completed_paid")
    fake.set_faults(status=400)  # Customer.io refuses everything: batch, then each alone
    runner = worker(engine, client)
    for _ in range(3):
        runner.run_once()
    assert {row.state for row in outbox_rows(engine)} == {"dead"}
    listed = as_json(run("dead-letters", "list", "--json"))
    assert [(item["ref"].split(":")[0], item["name"]) for item in listed] == [
        ("outbox", None),
        ("outbox", "order_completed"),
    ]
    assert all(item["reason"].startswith("Customer.io 400") for item in listed)
    assert all(item["provider"] == "stripe" for item in listed)
    assert as_json(run("status", "--json", "--no-worker-ok"))["stage2"]["dead"]["total"] == 2
    assert fake.operations() == []

    fake.set_faults()  # the cause is fixed
    result = run("dead-letters", "retry", "--all", "--stage", "outbox")
    assert result.stdout.strip() == "requeued 0 from stage 1, 2 from stage 2"
    runner.run_once()
    runner.run_once()
    assert {row.state for row in outbox_rows(engine)} == {"delivered"}
    accepted = [op["operation"] for op in fake.operations()]
    assert sorted(op["action"] for op in accepted) == ["event", "identify"]
    [order] = [op for op in accepted if op["action"] == "event"]
    assert order["name"] == "order_completed"
    assert as_json(run("dead-letters", "list", "--json")) == []


def test_a_mapper_refusal_is_a_stage_1_dead_letter_shown_masked(engine: Engine, run: Run) -> None:
    post_signed(engine, "stripe", "checkout_session_completed_paid", id="evt_broken", data={})
    post_signed(engine, "stripe", "checkout_session_completed_paid")
    worker(engine, None).run_once()
    [letter] = as_json(run("dead-letters", "list", "--json", "--stage", "inbox"))
    assert letter["reason"] == "data.object is missing or not an object"
    assert letter["type"] == "checkout.session.completed"
    # Filters narrow; a filter nothing matches is an empty list, not an error.
    assert as_json(run("dead-letters", "list", "--json", "--reason", "MISSING"))
    assert as_json(run("dead-letters", "list", "--json", "--provider", "shopify")) == []
    assert as_json(run("dead-letters", "list", "--json", "--since", "1h")) != []
    shown = json.loads(run("dead-letters", "show", letter["ref"]).stdout)
    assert shown["body"]["id"] == "evt_broken"
    assert shown["stage"] == "1 (mapping)"


def test_show_masks_personal_data_unless_asked(
    engine: Engine, cio: ScriptedCustomerIO, run: Run
) -> None:
    refused_operations(engine, cio)
    identify = next(row for row in outbox_rows(engine) if row.kind == "identify")
    raw = json.dumps(identify.payload)
    assert "@" in raw  # the identify carries the buyer's email
    masked = run("dead-letters", "show", f"outbox:{identify.id}").stdout
    assert "@" not in masked
    assert "***" in masked
    assert identify.op_id in masked  # ids stay: they are what an operator follows
    unmasked = run("dead-letters", "show", f"outbox:{identify.id}", "--show-pii").stdout
    assert json.loads(unmasked)["payload"] == identify.payload


def test_a_discarded_delivery_still_deduplicates_the_providers_retry(
    engine: Engine, run: Run
) -> None:
    post_signed(engine, "stripe", "checkout_session_completed_paid", id="evt_broken", data={})
    worker(engine, None).run_once()
    [row] = inbox_rows(engine)
    assert run("dead-letters", "discard", "--dry-run", "--all").stdout.strip() == (
        f"would discard 1: inbox:{row.id}"
    )
    assert inbox_rows(engine)[0].state == "dead"
    result = run("dead-letters", "discard", f"inbox:{row.id}")
    assert result.stdout.strip() == "discarded 1 from stage 1, 0 from stage 2"
    assert inbox_rows(engine)[0].state == "discarded"
    assert as_json(run("status", "--json", "--no-worker-ok"))["stage1"]["dead"]["total"] == 0
    # Stripe retries the same event: still a duplicate, not a new delivery to map.
    retried = Delivery(row.provider, row.account, row.event_type, row.delivery_id, row.body)
    assert store_delivery(engine, retried) is False


def test_bad_references_get_a_message_and_exit_1(engine: Engine, run: Run) -> None:
    result = run("dead-letters", "retry", "inbox:999")
    assert result.exit_code == 1
    assert "not dead letters: inbox:999" in result.stderr
    result = run("dead-letters", "show", "nonsense")
    assert result.exit_code == 1
    assert "is not a dead-letter reference (inbox:ID or outbox:ID)" in result.stderr
    result = run("dead-letters", "retry")
    assert result.exit_code == 2
    assert "name dead letters (inbox:ID, outbox:ID) or pass --all" in result.stderr
    result = run("dead-letters", "list", "--since", "yesterday")
    assert result.exit_code == 2
    assert "neither a duration (24h, 30m, 7d) nor a date" in result.stderr
