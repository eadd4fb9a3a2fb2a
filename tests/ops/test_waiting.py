"""`webhooks waiting` and the automatic expiry, on a refund that names no one yet."""

from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from tests.mappers.golden import REFUND_LISTED_ON_THE_2020_CHARGE
from tests.ops.conftest import Run, as_json, post_signed, worker
from tests.pipeline import ScriptedCustomerIO, inbox_rows
from webhooks.storage.schema import inbox, inbox_waits


def a_waiting_refund(engine: Engine, cio: ScriptedCustomerIO) -> int:
    # refund.created names only its charge: nobody is linked to it yet.
    post_signed(engine, "stripe", "refund_created_partial", **REFUND_LISTED_ON_THE_2020_CHARGE)
    worker(engine, cio).run_once()
    [row] = inbox_rows(engine)
    assert row.state == "waiting"
    return int(row.id)


def test_list_shows_what_each_delivery_waits_for(
    engine: Engine, cio: ScriptedCustomerIO, run: Run
) -> None:
    row_id = a_waiting_refund(engine, cio)
    [item] = as_json(run("waiting", "list", "--json"))
    assert item["ref"] == f"inbox:{row_id}"
    assert item["type"] == "refund.created"
    assert ":charge:" in item["waits_for"] or ":order:" in item["waits_for"]
    assert as_json(run("waiting", "list", "--json", "--provider", "shopify")) == []
    assert as_json(run("waiting", "list", "--json", "--older-than", "1h")) == []
    assert "waits for" in run("waiting", "list").stdout
    assert as_json(run("status", "--json", "--no-worker-ok"))["stage1"]["waiting"]["count"] == 1


def test_release_maps_again_and_an_unresolved_one_waits_again(
    engine: Engine, cio: ScriptedCustomerIO, run: Run
) -> None:
    row_id = a_waiting_refund(engine, cio)
    assert run("waiting", "release", f"inbox:{row_id}").stdout.strip() == (
        "released 1 to be mapped again"
    )
    assert inbox_rows(engine)[0].state == "pending"
    worker(engine, cio).run_once()
    assert inbox_rows(engine)[0].state == "waiting"  # still nobody to send it to
    # Once the charge names its customer, the refund is woken and delivered.
    post_signed(engine, "stripe", "charge_refunded_with_refund_list_2020")
    runner = worker(engine, cio)
    runner.run_once()
    runner.run_once()
    assert {row.state for row in inbox_rows(engine)} == {"done"}


def test_expire_turns_waiting_into_dead_letters_that_say_why(
    engine: Engine, cio: ScriptedCustomerIO, run: Run
) -> None:
    row_id = a_waiting_refund(engine, cio)
    assert run("waiting", "expire", "--all", "--dry-run").stdout.strip() == (
        f"would expire 1: inbox:{row_id}"
    )
    assert run("waiting", "expire", "--all").stdout.strip() == "expired 1 into dead letters"
    [letter] = as_json(run("dead-letters", "list", "--json"))
    assert letter["ref"] == f"inbox:{row_id}"
    assert letter["reason"].startswith("expired while waiting: waits for an event naming")
    assert as_json(run("waiting", "list", "--json")) == []
    # After whatever was missing is fixed, the dead letter is mapped again.
    assert "requeued 1 from stage 1" in run("dead-letters", "retry", f"inbox:{row_id}").stdout


def test_the_worker_expires_deliveries_waiting_past_the_setting(
    engine: Engine, cio: ScriptedCustomerIO
) -> None:
    a_waiting_refund(engine, cio)
    runner = worker(engine, cio)
    runner._expire_waiting()
    assert inbox_rows(engine)[0].state == "waiting"  # within WAITING_EXPIRY_HOURS (168)
    # Received long ago (a replay of an old delivery) but waiting only now: not expired.
    with engine.begin() as conn:
        [(row_id, received)] = conn.execute(sa.select(inbox.c.id, inbox.c.received_at)).all()
        older = received - timedelta(hours=500)
        conn.execute(sa.update(inbox).where(inbox.c.id == row_id).values(received_at=older))
    runner._next_expiry = 0.0
    runner._expire_waiting()
    assert inbox_rows(engine)[0].state == "waiting"
    # Waiting for 169 hours: expired.
    with engine.begin() as conn:
        [began] = conn.execute(sa.select(inbox_waits.c.created_at)).scalars().all()
        conn.execute(sa.update(inbox_waits).values(created_at=began - timedelta(hours=169)))
    runner._next_expiry = 0.0
    runner._expire_waiting()
    assert inbox_rows(engine)[0].state == "dead"


def test_waiting_commands_refuse_bad_references(engine: Engine, run: Run) -> None:
    result = run("waiting", "release", "inbox:12345")
    assert (result.exit_code, result.stderr.strip()) == (1, "Error: not waiting: inbox:12345")
    result = run("waiting", "expire")
    assert result.exit_code == 2
    assert "name waiting deliveries (inbox:ID) or pass --all" in result.stderr
    assert run("waiting", "release", "outbox:1").exit_code == 2
