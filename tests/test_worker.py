"""The worker loop: pauses, resumption, and what it logs."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from prometheus_client import REGISTRY
from sqlalchemy.engine import Engine
from structlog.testing import capture_logs

from tests.conftest import make_settings
from tests.pipeline import FIXTURES, ScriptedCustomerIO, inbox_rows, ingest, outbox_rows
from webhooks.config import Settings
from webhooks.storage.schema import outbox
from webhooks.worker import BACKGROUND_MAP_BATCH, Worker

MAP_BATCH = Settings.model_fields["worker_map_batch"].default  # WORKER_MAP_BATCH's


def worker(engine: Engine, cio: ScriptedCustomerIO | None, **overrides: Any) -> Worker:
    settings = make_settings(engine.url.render_as_string(hide_password=False), **overrides)
    return Worker(engine, settings, cio.client() if cio else None)


def test_credentials_pause_stops_delivery_not_mapping(
    engine: Engine, cio: ScriptedCustomerIO
) -> None:
    runner = worker(engine, cio)
    ingest(engine, "stripe", "checkout_session_completed_paid")
    cio.answers.append(httpx.Response(401))
    with capture_logs() as logs:
        runner.run_once()
    assert [e["log_level"] for e in logs if e["event"] == "customerio_unauthorized"] == ["error"]
    ingest(engine, "shopify", "order_create")
    runner.run_once()  # paused: maps the new row, sends nothing
    assert [r.state for r in inbox_rows(engine)] == ["done", "done"]
    assert len(cio.requests) == 1
    assert {r.state for r in outbox_rows(engine)} == {"pending"}
    runner._paused_until = time.monotonic()  # the pause ends; credentials work again
    runner.run_once()
    assert cio.requests[1].url.path == "/api/v1/accounts/region"
    assert {r.state for r in outbox_rows(engine)} == {"delivered"}


def test_outage_pause_honours_retry_after(engine: Engine, cio: ScriptedCustomerIO) -> None:
    runner = worker(engine, cio)
    ingest(engine, "stripe", "checkout_session_completed_paid")
    cio.answers.append(httpx.Response(503, headers={"Retry-After": "20"}))
    runner.run_once()
    assert runner._paused_until - time.monotonic() > 15
    runner.run_once()
    assert len(cio.requests) == 1  # nothing sent while paused


def test_dry_run_says_so_loudly_at_start(engine: Engine) -> None:
    runner = worker(engine, None)
    with capture_logs() as logs:
        runner.check_credentials()
    [entry] = logs
    assert (entry["event"], entry["log_level"]) == ("dry_run", "warning")
    assert "NOT sent" in entry["message"]


def test_region_mismatch_is_an_error_with_the_fix(engine: Engine, cio: ScriptedCustomerIO) -> None:
    cio.answers.append(httpx.Response(200, json={"region": "eu", "url": "https://track-eu"}))
    with capture_logs() as logs:
        assert worker(engine, cio).check_credentials()
    mismatch = [e for e in logs if e["event"] == "customerio_region_mismatch"]
    assert mismatch[0]["hint"] == "set CUSTOMERIO_REGION=eu"


def test_a_backlog_is_mapped_in_short_transactions_and_sent_in_large_requests(
    engine: Engine, cio: ScriptedCustomerIO
) -> None:
    runner = worker(engine, cio)
    for n in range(MAP_BATCH * 2 + 50):
        ingest(engine, "stripe", "checkout_session_completed_paid", id=f"evt_backlog_{n}")
    assert runner.run_once() is True  # a full batch: more is waiting
    assert sum(r.state == "done" for r in inbox_rows(engine)) == MAP_BATCH
    # Mapped but not sent: while a backlog lasts, sending waits for SEND_AFTER mapped
    # rows, so one request carries more than one short transaction's worth.
    runner.run_once()
    assert cio.requests == []
    assert runner.run_once() is False  # the last 50: the backlog is over, all go out
    assert {r.state for r in inbox_rows(engine)} == {"done"}
    assert len(cio.requests) == 1
    assert {r.state for r in outbox_rows(engine)} == {"delivered"}


def test_worker_map_batch_sets_the_rows_a_transaction_maps(
    engine: Engine, cio: ScriptedCustomerIO
) -> None:
    runner = worker(engine, cio, worker_map_batch=150)
    for n in range(MAP_BATCH + 80):
        ingest(engine, "stripe", "checkout_session_completed_paid", id=f"evt_batch_{n}")
    assert runner.run_once() is True  # a full batch of 150: more is waiting
    assert sum(r.state == "done" for r in inbox_rows(engine)) == 150
    assert runner.run_once() is False
    assert {r.state for r in inbox_rows(engine)} == {"done"}


def test_a_dry_run_logs_each_operation_it_would_send_without_attributes(
    engine: Engine,
) -> None:
    runner = worker(engine, None)
    ingest(engine, "stripe", "checkout_session_completed_paid")
    with capture_logs() as logs:
        runner.run_once()
    lines = [entry for entry in logs if entry["event"] == "dry_run_operation"]
    assert [(line["kind"], line["name"]) for line in lines] == [
        ("identify", None),
        ("event", "order_completed"),
    ]
    assert all(line["log_level"] == "info" for line in lines)
    assert {line["op_id"] for line in lines} == {row.op_id for row in outbox_rows(engine)}
    assert len({line["person_id"] for line in lines}) == 1
    # Names and ids only: no attributes, no email, no payload.
    assert all(
        set(line) == {"event", "log_level", "op_id", "kind", "name", "person_id"} for line in lines
    )
    assert "@" not in json.dumps(lines)
    ingest(engine, "stripe", "checkout_session_completed_paid", id="evt_same_fact_again")
    with capture_logs() as again:
        runner.run_once()  # a second delivery of the same facts: nothing new to send
    assert [entry for entry in again if entry["event"] == "dry_run_operation"] == []


def test_delivery_counts_what_went_out_and_what_failed(
    engine: Engine, cio: ScriptedCustomerIO
) -> None:
    def value(name: str, **labels: str) -> float:
        return REGISTRY.get_sample_value(name, labels) or 0.0

    delivered = value("webhooks_operations_delivered_total", kind="event", outcome="delivered")
    transient = value("webhooks_send_failures_total", failure="transient")
    answered = value("webhooks_customerio_responses_total", endpoint="/api/v2/batch", status="503")
    runner = worker(engine, cio)
    ingest(engine, "stripe", "checkout_session_completed_paid")
    cio.answers.append(httpx.Response(503))
    runner.run_once()
    assert value("webhooks_send_failures_total", failure="transient") == transient + 1
    assert (
        value("webhooks_customerio_responses_total", endpoint="/api/v2/batch", status="503")
        == answered + 1
    )
    runner._failures, runner._paused_until = 0, 0.0  # the outage is over
    for row in outbox_rows(engine):
        assert row.failed_at is not None  # status counts the last hour's failed sends
    with engine.begin() as conn:
        conn.execute(sa.update(outbox).values(next_attempt_at=sa.func.now()))
    runner.run_once()
    assert value("webhooks_operations_delivered_total", kind="event", outcome="delivered") == (
        delivered + 1
    )


def test_a_live_webhook_is_sent_at_once_while_a_backfill_drains(
    engine: Engine, cio: ScriptedCustomerIO
) -> None:
    from dataclasses import replace

    from tests.pipeline import FIXTURES
    from webhooks.providers.stripe.signature import StripeReceiver
    from webhooks.storage.inbox import store_delivery
    from webhooks.storage.schema import Lane

    fixture = json.loads((FIXTURES / "stripe" / "customer_created.json").read_text())
    for n in range(MAP_BATCH * 3):  # a backfill backlog: held for SEND_AFTER batching
        body = json.dumps({**fixture["body"], "id": f"evt_backfilled_{n}"}).encode()
        store_delivery(engine, replace(StripeReceiver([]).parse(body, {}), lane=Lane.BACKFILL))
    ingest(engine, "shopify", "order_create")  # a live webhook arrives meanwhile
    runner = worker(engine, cio)
    assert runner.run_once() is True  # the backfill goes on
    sent = [item["name"] for body in cio.bodies() for item in body["batch"] if "name" in item]
    # Claimed first (live lane), mapped, and sent in the same pass, not after 500 rows.
    assert sent == ["order_completed"]
    # Mapped on its own, then one background slice: never a live row in a transaction
    # (or a request) full of backfill.
    done = [r for r in inbox_rows(engine) if r.state == "done"]
    assert [r.lane for r in done].count(0) == 1
    assert len(done) == 1 + BACKGROUND_MAP_BATCH
    assert len(cio.requests) == 1


def test_a_backfill_is_sent_as_it_is_mapped_not_after_all_of_it(
    engine: Engine, cio: ScriptedCustomerIO
) -> None:
    from dataclasses import replace

    from tests.pipeline import FIXTURES
    from webhooks.providers.stripe.signature import StripeReceiver
    from webhooks.storage.inbox import store_delivery
    from webhooks.storage.schema import Lane
    from webhooks.worker import BACKGROUND_SEND_BATCH

    fixture = json.loads((FIXTURES / "stripe" / "checkout_session_completed_paid.json").read_text())
    for n in range(600):  # two operations each: an identify and order_completed
        body = fixture["body"]
        session = {**body["data"]["object"], "id": f"cs_bf_{n}", "payment_intent": f"pi_bf_{n}"}
        event = {**body, "id": f"evt_bf_{n}", "data": {**body["data"], "object": session}}
        delivery = StripeReceiver([]).parse(json.dumps(event).encode(), {})
        store_delivery(engine, replace(delivery, lane=Lane.BACKFILL))
    runner = worker(engine, cio)
    queued = []
    for _ in range(200):
        more = runner.run_once()
        queued.append(sum(r.state == "pending" for r in outbox_rows(engine)))
        if not more:
            break
    # Mapping pauses while sends come back full, so what waits to be sent stays about
    # one request's worth, instead of growing to the whole backlog (1,200 operations).
    assert max(queued) <= BACKGROUND_SEND_BATCH + 2 * BACKGROUND_MAP_BATCH
    assert {r.state for r in outbox_rows(engine)} == {"delivered"}
    assert len(outbox_rows(engine)) > 1000


def test_the_threaded_steps_hold_background_mapping_while_its_sends_catch_up(
    engine: Engine, cio: ScriptedCustomerIO
) -> None:
    """What `run` does in its threads: the background mapper maps a slice, the background
    sender sends one bounded request; while those come back full, the mapper maps no more
    background rows, so the background outbox stays about a request deep."""
    from dataclasses import replace

    from tests.pipeline import FIXTURES
    from webhooks.providers.stripe.signature import StripeReceiver
    from webhooks.storage.inbox import store_delivery
    from webhooks.storage.schema import Lane
    from webhooks.worker import BACKGROUND_SEND_BATCH

    fixture = json.loads((FIXTURES / "stripe" / "checkout_session_completed_paid.json").read_text())
    for n in range(300):  # two operations each
        body = fixture["body"]
        session = {**body["data"]["object"], "id": f"cs_st_{n}", "payment_intent": f"pi_st_{n}"}
        event = {**body, "id": f"evt_st_{n}", "data": {**body["data"], "object": session}}
        delivery = StripeReceiver([]).parse(json.dumps(event).encode(), {})
        store_delivery(engine, replace(delivery, lane=Lane.BACKFILL))
    runner = worker(engine, cio)
    assert runner.map_step() is False  # the live lane's mapper: nothing live
    while sum(r.state == "pending" for r in outbox_rows(engine)) < BACKGROUND_SEND_BATCH:
        assert runner.map_background_step() is True  # slices of BACKGROUND_MAP_BATCH
    assert runner.send_background_step() is True  # a full request: more is due
    done = sum(r.state == "done" for r in inbox_rows(engine))
    assert runner.map_background_step() is True  # behind: no background row mapped
    assert sum(r.state == "done" for r in inbox_rows(engine)) == done
    while runner.send_background_step():
        pass  # caught up
    assert runner.map_background_step() is True  # mapping resumes
    assert sum(r.state == "done" for r in inbox_rows(engine)) == done + BACKGROUND_MAP_BATCH
    assert runner.send_live_step() is False  # nothing live was ever due
    assert all(r.lane == Lane.BACKFILL for r in outbox_rows(engine))


def test_while_live_webhooks_flow_background_work_comes_in_smaller_slices(
    engine: Engine, cio: ScriptedCustomerIO
) -> None:
    """A live arrival shares the worker with the background slice in hand (mapping; on
    SQLite it waits for it) and with the background request in flight (sending): while
    live webhooks flow both are smaller."""
    from dataclasses import replace

    from tests.pipeline import FIXTURES
    from webhooks.providers.stripe.signature import StripeReceiver
    from webhooks.storage.inbox import store_delivery
    from webhooks.storage.schema import Lane
    from webhooks.worker import BACKGROUND_MAP_SLICE, BACKGROUND_SEND_SLICE

    fixture = json.loads((FIXTURES / "stripe" / "checkout_session_completed_paid.json").read_text())
    for n in range(100):  # two operations each
        body = fixture["body"]
        session = {**body["data"]["object"], "id": f"cs_sl_{n}", "payment_intent": f"pi_sl_{n}"}
        event = {**body, "id": f"evt_sl_{n}", "data": {**body["data"], "object": session}}
        delivery = StripeReceiver([]).parse(json.dumps(event).encode(), {})
        store_delivery(engine, replace(delivery, lane=Lane.BACKFILL))
    runner = worker(engine, cio)

    def done() -> int:
        return sum(r.state == "done" for r in inbox_rows(engine))

    runner.map_background_step()  # no live traffic: a full background slice
    assert done() == BACKGROUND_MAP_BATCH
    ingest(engine, "shopify", "order_create")  # a live webhook arrives
    assert runner.map_step() is False  # mapped alone
    assert done() == BACKGROUND_MAP_BATCH + 1
    runner.map_background_step()  # live webhooks flow: a small background slice
    assert done() == BACKGROUND_MAP_BATCH + 1 + BACKGROUND_MAP_SLICE
    runner.send_live_step()
    cio.requests.clear()
    assert runner.send_background_step() is True  # a full (small) request: more is due
    [request] = cio.requests
    assert len(json.loads(request.content)["batch"]) == BACKGROUND_SEND_SLICE


def test_a_live_webhook_is_mapped_while_a_background_slice_is_in_hand(
    engine: Engine, cio: ScriptedCustomerIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Background lanes are mapped in a thread of their own: the live mapper goes ahead
    while a background slice is being mapped (on PostgreSQL person locks keep the two
    apart only if they map the same person). On SQLite a background slice takes the
    mappers' turn only to write, so a live webhook waits for a commit, never a slice."""
    import threading
    from dataclasses import replace

    import webhooks.worker
    from webhooks.providers.stripe.signature import StripeReceiver
    from webhooks.storage.inbox import store_delivery
    from webhooks.storage.schema import Lane

    fixture = json.loads((FIXTURES / "stripe" / "checkout_session_completed_paid.json").read_text())
    session = {**fixture["body"]["data"]["object"], "id": "cs_bg_1", "payment_intent": "pi_bg_1"}
    event = {**fixture["body"], "id": "evt_bg_1", "data": {"object": session}}
    backfilled = StripeReceiver([]).parse(json.dumps(event).encode(), {})
    store_delivery(engine, replace(backfilled, lane=Lane.BACKFILL))
    in_hand, finish = threading.Event(), threading.Event()
    real = webhooks.worker.process_batch

    def slow_background(*args: Any, **kwargs: Any) -> int:
        if Lane.LIVE not in kwargs["lanes"]:
            in_hand.set()  # a slow slice, still mapping
            assert finish.wait(10)
        return real(*args, **kwargs)

    monkeypatch.setattr(webhooks.worker, "process_batch", slow_background)
    runner = worker(engine, cio)
    background = threading.Thread(target=runner.map_background_step)
    background.start()
    try:
        assert in_hand.wait(10)
        ingest(engine, "shopify", "order_create")  # a live webhook arrives meanwhile
        assert runner.map_step() is False  # mapped at once: its operations are queued
        assert {r.lane for r in outbox_rows(engine)} == {Lane.LIVE}
        ingest(engine, "shopify", "order_create_jpy")
        with runner._map_turn():  # as a background slice's write transaction does
            live = threading.Thread(target=runner.map_step)
            live.start()
            live.join(timeout=1)
            on_sqlite = engine.dialect.name == "sqlite"
            assert live.is_alive() is on_sqlite  # waits for the commit on SQLite only
    finally:
        finish.set()
        background.join(timeout=10)
    live.join(timeout=10)
    assert not live.is_alive()
    assert sorted(r.lane for r in inbox_rows(engine) if r.state == "done") == [
        Lane.LIVE,
        Lane.LIVE,
        Lane.BACKFILL,
    ]


def test_background_writes_on_sqlite_wait_for_the_mappers_turn(
    engine: Engine, cio: ScriptedCustomerIO
) -> None:
    """On SQLite the background mapper's and sender's writes wait for the mappers' turn
    (a thread lock, handed over at once) instead of meeting the live mapper at SQLite's
    write lock, where the busy handler sleeps; live sends never wait for it. PostgreSQL
    has no such turn."""
    import threading
    from dataclasses import replace

    from webhooks.providers.stripe.signature import StripeReceiver
    from webhooks.storage.inbox import store_delivery
    from webhooks.storage.schema import Lane

    fixture = json.loads((FIXTURES / "stripe" / "checkout_session_completed_paid.json").read_text())
    session = {**fixture["body"]["data"]["object"], "id": "cs_tn_1", "payment_intent": "pi_tn_1"}
    event = {**fixture["body"], "id": "evt_tn_1", "data": {"object": session}}
    store_delivery(
        engine,
        replace(StripeReceiver([]).parse(json.dumps(event).encode(), {}), lane=Lane.BACKFILL),
    )
    ingest(engine, "shopify", "order_create")
    runner = worker(engine, cio)
    runner.map_step()
    on_sqlite = engine.dialect.name == "sqlite"
    with runner._map_turn():  # the live mapper's batch in hand
        mapper = threading.Thread(target=runner.map_background_step)
        mapper.start()
        mapper.join(timeout=1)
        assert mapper.is_alive() is on_sqlite  # the slice's write waits for the turn
    mapper.join(timeout=10)
    assert {r.lane for r in outbox_rows(engine)} == {Lane.LIVE, Lane.BACKFILL}
    with runner._map_turn():  # a mapper's transaction in hand
        sender = threading.Thread(target=runner.send_background_step)
        sender.start()
        sender.join(timeout=1)
        assert sender.is_alive() is on_sqlite  # waits for the turn on SQLite only
        assert runner.send_live_step() is False  # live sends go ahead meanwhile
        assert {r.lane for r in outbox_rows(engine) if r.state == "delivered"} == (
            {Lane.LIVE} if on_sqlite else {Lane.LIVE, Lane.BACKFILL}
        )
    sender.join(timeout=10)
    assert {r.state for r in outbox_rows(engine)} == {"delivered"}


def test_the_background_sender_thread_runs_at_the_lowest_cpu_priority() -> None:
    """Linux schedules threads alone: the background sender's thread is reniced, the
    live sender's and the mapper's are not."""
    import os
    import threading

    from webhooks.worker import BACKGROUND_NICENESS, _lower_this_thread

    seen: list[int] = []

    def background() -> None:
        _lower_this_thread()
        seen.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))

    thread = threading.Thread(target=background)
    thread.start()
    thread.join()
    assert seen == [BACKGROUND_NICENESS]
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) < BACKGROUND_NICENESS


def test_a_batch_too_large_for_the_lock_table_is_warned_at_start(
    engine: Engine, cio: ScriptedCustomerIO
) -> None:
    """PostgreSQL: 1,000 rows hold ~7,000 advisory locks, more than a default lock table
    (64 x (100 + 0)) holds for four workers; 100 rows fit. SQLite has no such table."""
    with capture_logs() as logs:
        fits = worker(engine, cio).check_lock_budget()
        too_large = worker(engine, cio, worker_map_batch=1000).check_lock_budget()
    warned = [entry for entry in logs if entry["event"] == "lock_budget_small"]
    assert fits is True
    if engine.dialect.name == "sqlite":
        assert too_large is True
        assert warned == []
    else:
        assert too_large is False
        assert [(w["map_batch"], w["batch_locks"]) for w in warned] == [(1000, 7000)]
        assert warned[0]["lock_table"] >= 6400
