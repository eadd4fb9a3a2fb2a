"""`webhooks status` on data made by real signed deliveries through the real pipeline."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from tests.ops.conftest import Run, as_json, post_signed, worker
from tests.pipeline import ScriptedCustomerIO
from webhooks.storage.schema import inbox, outbox


def age(engine: Engine, column: sa.Column[Any], minutes: int) -> None:
    """Move every row's `column` back: time passing, without waiting for it."""
    table = column.table
    with engine.begin() as conn:
        for row_id, moment in conn.execute(sa.select(table.c.id, column)).all():
            earlier = {column.name: moment - timedelta(minutes=minutes)}
            conn.execute(sa.update(table).where(table.c.id == row_id).values(earlier))


def test_an_empty_database_without_a_worker_is_unhealthy_and_says_why(
    engine: Engine, run: Run
) -> None:
    result = run("status")
    assert result.exit_code == 1
    assert "no delivery worker has a heartbeat in the last 60 s" in result.stdout
    assert "Last webhooks       none yet" in result.stdout
    # A setup without a worker process (yet) can say so and be healthy.
    assert run("status", "--no-worker-ok").exit_code == 0


def test_status_shows_what_arrived_what_went_out_and_the_worker(
    engine: Engine, cio: ScriptedCustomerIO, run: Run
) -> None:
    post_signed(engine, "stripe", "checkout_session_completed_paid")
    post_signed(engine, "shopify", "order_create")
    runner = worker(engine, cio)
    runner.run_once()
    runner._beat()
    result = run("status", "--json")
    assert result.exit_code == 0, result.stdout
    report = as_json(result)
    assert report["healthy"] is True
    assert report["stage1"]["mapped_last_hour"] == 2
    assert report["stage1"]["backlog"]["live"]["count"] == 0
    assert report["stage2"]["last_hour"]["delivered"] == 4  # identify + order, twice
    assert report["stage2"]["last_hour"]["failed"] == 0
    assert report["workers"]["live"] == 1
    assert report["customerio"] == "sending"
    received = {(item["provider"], item["type"]) for item in report["received"]}
    assert received == {("stripe", "checkout.session.completed"), ("shopify", "orders/create")}
    human = run("status").stdout
    assert "4 delivered, 0 dry run, 0 failed sends" in human
    assert "Health              OK" in human


def test_an_outage_makes_status_exit_non_zero_with_the_reason(
    engine: Engine, cio: ScriptedCustomerIO, run: Run
) -> None:
    post_signed(engine, "stripe", "checkout_session_completed_paid")
    cio.default = lambda _request: httpx.Response(503)
    runner = worker(engine, cio)
    runner.run_once()
    runner._beat()
    report = as_json(run("status", "--json"))
    # Failing, retrying, paused: reported, but within the default 300 s not yet an alert.
    assert report["healthy"] is True
    assert report["customerio"] == "paused_outage"
    assert report["stage2"]["last_hour"]["failed"] == 2
    assert report["stage2"]["retrying"] == 2
    age(engine, outbox.c.created_at, minutes=10)  # the outage goes on
    result = run("status", "--json")
    assert result.exit_code == 1
    report = as_json(result)
    assert report["healthy"] is False
    [problem] = report["problems"]
    assert problem.startswith("stage2 live backlog: oldest item 6")
    assert run("status", "--max-backlog-age", "900").exit_code == 0


def test_refused_credentials_are_unhealthy(
    engine: Engine, cio: ScriptedCustomerIO, run: Run
) -> None:
    post_signed(engine, "stripe", "checkout_session_completed_paid")
    cio.default = lambda _request: httpx.Response(401)
    runner = worker(engine, cio)
    runner.run_once()
    runner._beat()
    result = run("status")
    assert result.exit_code == 1
    assert "paused: Customer.io refuses the credentials (401/403)" in result.stdout


def test_a_dry_run_is_counted(engine: Engine, run: Run) -> None:
    post_signed(engine, "stripe", "checkout_session_completed_paid")
    runner = worker(engine, None)
    runner.run_once()
    runner._beat()
    report = as_json(run("status", "--json"))
    assert report["stage2"]["last_hour"]["dry_run"] == 2
    assert report["customerio"] == "dry_run"


def test_workers_that_only_map_are_not_taken_for_a_sender(
    engine: Engine, cio: ScriptedCustomerIO, run: Run
) -> None:
    """WORKER_STAGE=map workers beat (a worker is alive) but send nothing: status says no
    live worker sends until one that does beats too."""
    mapper = worker(engine, cio, worker_stage="map")
    mapper._beat()
    report = as_json(run("status", "--json"))
    assert report["workers"]["live"] == 1
    assert report["workers"]["delivery"] == {"map_only": 1}
    assert report["customerio"] == "map_only"
    assert report["healthy"] is False  # operations queue and nothing sends them
    human = run("status").stdout
    assert "no live worker sends (only WORKER_STAGE=map workers)" in human
    assert "no live worker sends: only WORKER_STAGE=map workers have a heartbeat" in human
    worker(engine, cio, worker_stage="send")._beat()
    report = as_json(run("status", "--json"))
    assert report["workers"]["delivery"] == {"map_only": 1, "sending": 1}
    assert report["customerio"] == "sending"
    assert report["healthy"] is True


def test_a_silent_provider_is_unhealthy_past_max_silence(engine: Engine, run: Run) -> None:
    post_signed(engine, "stripe", "checkout_session_completed_paid")
    worker(engine, None).run_once()  # mapped: no backlog, only the silence counts
    age(engine, inbox.c.received_at, minutes=120)  # the last webhook came 2 h ago
    assert run("status", "--no-worker-ok", "--max-silence", "3").exit_code == 0
    result = run("status", "--no-worker-ok", "--max-silence", "1")
    assert result.exit_code == 1
    assert "no webhook from stripe for 2.0 h (limit 1 h)" in result.stdout


def test_an_outdated_schema_is_a_clear_error_not_a_traceback(database_url: str, run: Run) -> None:
    # The database exists (`database_url`), but nothing was migrated in it.
    result = run("status")
    assert result.exit_code == 3
    assert "run `webhooks db upgrade`" in result.stderr
    assert "Traceback" not in result.output
