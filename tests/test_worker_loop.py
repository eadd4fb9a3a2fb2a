"""Worker.run: the loop itself. Orphan detection, the pause after an error, SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError
from structlog.testing import capture_logs

from tests.conftest import make_settings
from tests.integration.cio import wait_for
from tests.integration.service import service_env
from tests.pipeline import inbox_rows, ingest, outbox_rows
from webhooks.fakes.customerio import FakeCustomerIO
from webhooks.stage2.customerio import CustomerIO
from webhooks.storage import migrate
from webhooks.storage.db import create_db_engine
from webhooks.worker import ERROR_PAUSE, Worker


def dry_run_worker(engine: Engine, **settings: Any) -> Worker:
    url = engine.url.render_as_string(hide_password=False)
    return Worker(engine, make_settings(url, worker_poll_interval=0.05, **settings), None)


@contextmanager
def running(worker: Worker) -> Iterator[threading.Thread]:
    """Worker.run() in a thread; stopped and joined (bounded) on the way out."""
    thread = threading.Thread(target=worker.run, name="worker-under-test", daemon=True)
    thread.start()
    try:
        yield thread
    finally:
        worker.stop()
        thread.join(timeout=5)
        assert not thread.is_alive(), "Worker.run() did not return after stop()"


@contextmanager
def sending_worker(engine: Engine) -> Iterator[FakeCustomerIO]:
    """Worker.run() sending to the fake Customer.io over HTTP, once its start-up
    credentials check was answered (so faults set now hit only its sends)."""
    url = engine.url.render_as_string(hide_password=False)
    with (
        FakeCustomerIO() as fake,
        httpx.Client(base_url=fake.url, auth=fake.auth, timeout=10) as http,
    ):
        runner = Worker(engine, make_settings(url, worker_poll_interval=0.05), CustomerIO(http))
        with running(runner):
            wait_for(lambda: fake.requests(), what="the worker's credentials check")
            yield fake
            fake.set_faults()


def events(logs: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [entry for entry in list(logs) if entry["event"] == name]


def test_an_orphaned_worker_stops_before_doing_any_work(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    ingest(engine, "shopify", "order_create")
    # `serve` said it is our parent; the parent we actually have is someone else.
    monkeypatch.setenv("WEBHOOKS_PARENT_PID", str(os.getppid() + 1))
    runner = dry_run_worker(engine)
    with capture_logs() as logs, running(runner) as thread:
        thread.join(timeout=3)  # returns on its own: nobody calls stop()
        assert not thread.is_alive(), "an orphaned worker kept running"
    assert [e["event"] for e in logs] == [
        "worker_started",
        "dry_run",
        "worker_orphaned",
        "worker_stopped",
    ]
    assert events(logs, "worker_orphaned")[0]["log_level"] == "error"
    assert [r.state for r in inbox_rows(engine)] == ["pending"]  # no pass was made
    assert outbox_rows(engine) == []


def test_a_worker_whose_parent_is_alive_keeps_working(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    ingest(engine, "shopify", "order_create")
    monkeypatch.setenv("WEBHOOKS_PARENT_PID", str(os.getppid()))
    runner = dry_run_worker(engine)
    with capture_logs() as logs, running(runner) as thread:
        wait_for(
            lambda: [r.state for r in inbox_rows(engine)] == ["done"],
            timeout=3,
            what="the worker to map the stored delivery",
        )
        assert thread.is_alive()
    assert {r.state for r in outbox_rows(engine)} == {"dry_run"}
    assert events(logs, "worker_orphaned") == []
    assert [e["event"] for e in logs][-1] == "worker_stopped"


def unreachable(tmp_path: Path) -> tuple[Engine, Path]:
    """An engine on a SQLite file in a directory that does not exist (yet)."""
    folder = tmp_path / "missing"
    engine = create_db_engine(f"sqlite:///{folder / 'inbox.db'}", timeout=1)
    folder.rmdir()  # the engine makes the folder; a volume that went away takes it along
    with pytest.raises(OperationalError, match="unable to open database file"):
        engine.connect().close()
    return engine, folder


def test_an_error_is_logged_by_class_and_paused_on_interruptibly(tmp_path: Path) -> None:
    engine, _ = unreachable(tmp_path)
    runner = dry_run_worker(engine)
    try:
        with capture_logs() as logs, running(runner) as thread:
            wait_for(
                lambda: len(events(logs, "worker_error")) >= 2,
                timeout=ERROR_PAUSE * 3,
                what="two failed passes",
            )
            stopped_at = time.monotonic()
            runner.stop()  # lands in the pause that follows the second error
            thread.join(timeout=ERROR_PAUSE / 2)
            assert not thread.is_alive(), "the error pause did not end on stop()"
            assert time.monotonic() - stopped_at < ERROR_PAUSE / 2
    finally:
        engine.dispose()
    errors = events(logs, "worker_error")
    # The class only: a database error's message can quote the statement's parameters.
    # Each thread says which it was (background mapping and both senders have their own).
    assert {e["stage"] for e in errors} <= {"map", "map_background", "send"}
    expected = {"event": "worker_error", "log_level": "error", "error": "OperationalError"}
    assert all({k: v for k, v in e.items() if k != "stage"} == expected for e in errors)
    assert all("unable to open" not in json.dumps(entry, default=str) for entry in logs)
    assert events(logs, "worker_stopped")


def test_after_an_error_the_worker_waits_error_pause_then_recovers(tmp_path: Path) -> None:
    engine, folder = unreachable(tmp_path)
    runner = dry_run_worker(engine)
    passes: list[float] = []
    original = runner.map_step

    def timed_pass() -> bool:
        passes.append(time.monotonic())
        return original()

    runner.map_step = timed_pass  # type: ignore[method-assign]
    try:
        with capture_logs() as logs, running(runner):
            wait_for(lambda: len(passes) >= 2, timeout=ERROR_PAUSE * 3, what="a second pass")
            # The pause between failed passes is ERROR_PAUSE, not the poll interval.
            assert passes[1] - passes[0] >= ERROR_PAUSE * 0.9
            # The database comes back: the same loop goes on and maps what arrives.
            folder.mkdir()
            migrate.upgrade(engine)
            ingest(engine, "shopify", "order_create")
            wait_for(
                lambda: [r.state for r in inbox_rows(engine)] == ["done"],
                timeout=ERROR_PAUSE * 3,
                what="the worker to recover and map the delivery",
            )
        assert {r.state for r in outbox_rows(engine)} == {"dry_run"}
    finally:
        engine.dispose()
    assert len(events(logs, "worker_error")) >= 2
    assert {e["error"] for e in events(logs, "worker_error")} == {"OperationalError"}


def test_sigterm_stops_the_worker_command_cleanly(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'inbox.db'}"
    engine = create_db_engine(url)
    migrate.upgrade(engine)
    ingest(engine, "shopify", "order_create")
    # Longer than the test waits: only the stop event can end the idle wait in time.
    env = service_env(url, WORKER_POLL_INTERVAL="10")
    output = tmp_path / "worker.log"
    with output.open("w") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "webhooks", "worker"],
            env=env,
            cwd=tmp_path,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )

    def logged() -> list[dict[str, Any]]:
        lines = output.read_text().splitlines()
        return [json.loads(line) for line in lines if line.startswith("{")]

    try:
        # Its first pass maps the stored delivery; with nothing left it then sits in
        # its idle wait (the poll interval), which is where SIGTERM finds it.
        wait_for(
            lambda: process.poll() is not None or [r.state for r in inbox_rows(engine)] == ["done"],
            timeout=15,
            what="the worker's first pass",
        )
        assert process.poll() is None, output.read_text()
        sent = time.monotonic()
        process.send_signal(signal.SIGTERM)
        try:
            returncode = process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the worker ignored SIGTERM for 5 s:\n{output.read_text()}")
        took = time.monotonic() - sent
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=5)
        engine.dispose()
    assert returncode == 0, output.read_text()
    assert took < 3, f"took {took:.1f}s to stop after SIGTERM"
    names = [e["event"] for e in logged()]
    assert "worker_started" in names
    assert names[-2:] == ["worker_stopping", "worker_stopped"], output.read_text()
    assert next(e for e in logged() if e["event"] == "worker_stopping")["signal"] == "SIGTERM"


def test_delivery_resumes_within_seconds_of_customerio_coming_back(engine: Engine) -> None:
    """An outage pause grows (up to minutes) so a long outage costs few calls; when
    Customer.io answers again a cheap probe ends it, and the operations waiting out a
    retry are due at once: delivery resumes within PROBE_EVERY, not at the pause's end."""
    import httpx

    from webhooks.fakes.customerio import FakeCustomerIO
    from webhooks.stage2.customerio import CustomerIO
    from webhooks.worker import PROBE_EVERY

    ingest(engine, "shopify", "order_create")
    url = engine.url.render_as_string(hide_password=False)
    with (
        FakeCustomerIO() as fake,
        httpx.Client(base_url=fake.url, auth=fake.auth, timeout=5) as http,
    ):
        fake.set_faults(status=503)
        runner = Worker(engine, make_settings(url, worker_poll_interval=0.05), CustomerIO(http))
        with capture_logs() as logs, running(runner):
            wait_for(lambda: events(logs, "customerio_unavailable"), what="the outage seen")
            runner._paused_until = time.monotonic() + 300  # a pause grown long
            fake.set_faults()  # Customer.io is back
            back = time.monotonic()
            wait_for(
                lambda: any(op["operation"].get("action") == "event" for op in fake.operations()),
                timeout=PROBE_EVERY * 2 + 2,
                what="delivery after the recovery",
            )
            resumed = time.monotonic() - back
        assert resumed < PROBE_EVERY + 2
        assert events(logs, "customerio_recovered")


def test_a_stored_delivery_wakes_an_idle_worker_at_once(engine: Engine) -> None:
    """PostgreSQL: the inbox trigger's NOTIFY; SQLite: the web app's datagram. Either
    way the worker maps it well before its poll interval (10 s here) would have."""
    from tests.conftest import StripeSender
    from tests.pipeline import FIXTURES
    from webhooks.app import create_app

    url = engine.url.render_as_string(hide_password=False)
    runner = Worker(engine, make_settings(url, worker_poll_interval=10), None)
    app = create_app(make_settings(url))
    body = json.loads((FIXTURES / "stripe" / "checkout_session_completed_paid.json").read_text())
    try:
        with running(runner):
            time.sleep(0.5)  # its first pass found nothing: now it waits, listening
            posted = time.monotonic()
            answer = StripeSender(app.test_client()).post(json.dumps(body["body"]).encode())
            assert answer.status_code == 200
            wait_for(
                lambda: [r.state for r in inbox_rows(engine)] == ["done"],
                timeout=3,
                what="the woken worker to map the delivery",
            )
            assert time.monotonic() - posted < 2
    finally:
        app.extensions["webhooks.engine"].dispose()


def test_the_stages_overlap_mapping_goes_on_while_a_send_waits(engine: Engine) -> None:
    """Stage 2 sends in its own thread: a slow Customer.io no longer stops stage 1."""
    with sending_worker(engine) as fake:
        fake.set_faults(latency_ms=3000)  # from now on every send takes 3 s
        ingest(engine, "shopify", "order_create")

        def in_flight() -> bool:
            rows = outbox_rows(engine)
            return bool(rows) and all(r.lease_owner and r.state == "pending" for r in rows)

        wait_for(in_flight, timeout=3, what="the order's operations claimed for sending")
        ingest(engine, "shopify", "refund_create_partial")
        wait_for(
            lambda: [r.state for r in inbox_rows(engine)] == ["done", "done"],
            timeout=2,
            what="stage 1 mapping while the send waits",
        )
        # Mapped while the first request was still out: nothing delivered yet.
        assert "delivered" not in {r.state for r in outbox_rows(engine)}


def test_a_live_operation_is_sent_while_a_backfill_request_is_in_flight(engine: Engine) -> None:
    """Live and background lanes have their own senders: a live operation does not queue
    behind a backfill's slow request."""
    from dataclasses import replace

    from tests.pipeline import FIXTURES
    from webhooks.providers.stripe.signature import StripeReceiver
    from webhooks.storage.inbox import store_delivery
    from webhooks.storage.schema import Lane

    fixture = json.loads((FIXTURES / "stripe" / "customer_created.json").read_text())
    with sending_worker(engine) as fake:
        fake.set_faults(latency_ms=2000)  # every request from now on takes 2 s
        for n in range(30):
            body = json.dumps({**fixture["body"], "id": f"evt_backfilled_{n}"}).encode()
            delivery = StripeReceiver([]).parse(body, {})
            store_delivery(engine, replace(delivery, lane=Lane.BACKFILL))

        def backfill_in_flight() -> bool:
            rows = outbox_rows(engine)
            return any(r.lease_owner and r.state == "pending" for r in rows)

        wait_for(backfill_in_flight, timeout=5, what="a backfill request in flight")
        ingest(engine, "shopify", "order_create")
        wait_for(
            lambda: any(
                op["operation"].get("name") == "order_completed" for op in fake.operations()
            ),
            timeout=10,
            what="the live order delivered",
        )
    batches = [r for r in fake.requests() if r["path"].endswith("/batch")]
    first, live = batches[0], batches[-1]
    # The live request reached Customer.io before the backfill's first came back.
    assert live["time"] < first["time"] + first["duration_ms"] / 1000


def test_split_stages_a_map_worker_and_a_send_worker_deliver_once_woken_not_polled(
    engine: Engine,
) -> None:
    """WORKER_STAGE=send maps nothing; WORKER_STAGE=map sends nothing and wakes the
    senders when it queued operations, so delivery follows mapping well before the
    senders' poll (10 s here) would have found it."""
    from webhooks.storage import heartbeat
    from webhooks.storage.wake import Waker

    url = engine.url.render_as_string(hide_password=False)
    with (
        FakeCustomerIO() as fake,
        httpx.Client(base_url=fake.url, auth=fake.auth, timeout=10) as http,
        # The mapper's client points at a closed port: any call it made would fail loudly.
        httpx.Client(base_url="http://127.0.0.1:9", timeout=1) as nowhere,
    ):
        sender = Worker(
            engine,
            make_settings(url, worker_poll_interval=10, worker_stage="send"),
            CustomerIO(http),
        )
        mapper = Worker(
            engine,
            make_settings(url, worker_poll_interval=10, worker_stage="map"),
            CustomerIO(nowhere),
        )
        with capture_logs() as logs, running(sender):
            wait_for(lambda: fake.requests(), what="the sender's credentials check")
            time.sleep(0.3)  # its first looks found nothing: now it waits, listening
            ingest(engine, "shopify", "order_create")
            Waker(engine).wake()  # as the web process does after storing it
            time.sleep(1.0)
            assert [r.state for r in inbox_rows(engine)] == ["pending"]  # a sender never maps
            assert outbox_rows(engine) == []
            with running(mapper):
                mapped = time.monotonic()
                wait_for(
                    lambda: any(
                        op["operation"].get("name") == "order_completed" for op in fake.operations()
                    ),
                    timeout=5,
                    what="the operations sent by the woken sender",
                )
                assert time.monotonic() - mapped < 3
                beats = heartbeat.workers(engine)
        names = [entry["event"] for entry in list(logs)]
    assert [r.state for r in inbox_rows(engine)] == ["done"]
    assert {r.state for r in outbox_rows(engine)} == {"delivered"}
    kinds = [op["operation"].get("name") for op in fake.operations()]
    assert kinds.count("order_completed") == 1  # delivered once
    # Only the sender called Customer.io (the mapper's address refuses connections: any
    # call would have logged a failure), and the mapper says it does not send.
    assert [n for n in names if n.startswith("customerio_")] == ["customerio_ready"]
    assert beats["live"] == 2
    assert beats["delivery"] == {"sending": 1, "map_only": 1}
    stages = {e["stage"] for e in list(logs) if e["event"] == "worker_started"}
    assert stages == {"send", "map"}


def test_a_map_worker_holds_back_a_backfill_while_its_sends_are_behind(engine: Engine) -> None:
    """Split stages: the senders are elsewhere, so a map worker looks at the outbox: with a
    full background request still due, it maps no more of a backfill (mapped far ahead of
    its sends, an event judged young would go out hours later); once the senders catch
    up it goes on."""
    from dataclasses import replace
    from datetime import UTC, datetime

    import sqlalchemy as sa

    from tests.pipeline import FIXTURES
    from webhooks.providers.stripe.signature import StripeReceiver
    from webhooks.storage.inbox import store_delivery
    from webhooks.storage.schema import Lane, outbox
    from webhooks.worker import BACKGROUND_SEND_BATCH

    now = datetime.now(UTC)
    queued = [
        {
            "op_key": f"queued:{n}",
            "op_id": f"{n:026d}",
            "kind": "event",
            "payload": {},
            "occurred_at": now,
            "lane": Lane.BACKFILL,
            "next_attempt_at": now,
            "created_at": now,
        }
        for n in range(BACKGROUND_SEND_BATCH)
    ]
    with engine.begin() as conn:
        conn.execute(sa.insert(outbox), queued)
    fixture = json.loads((FIXTURES / "stripe" / "customer_created.json").read_text())
    delivery = StripeReceiver([]).parse(json.dumps(fixture["body"]).encode(), {})
    store_delivery(engine, replace(delivery, lane=Lane.BACKFILL))

    url = engine.url.render_as_string(hide_password=False)
    mapper = Worker(engine, make_settings(url, worker_poll_interval=0.05, worker_stage="map"), None)
    with running(mapper):
        time.sleep(1.0)
        assert [r.state for r in inbox_rows(engine)] == ["pending"]  # held back
        with engine.begin() as conn:  # the senders caught up
            conn.execute(sa.update(outbox).values(state="delivered"))
        wait_for(
            lambda: [r.state for r in inbox_rows(engine)] == ["done"],
            timeout=3,
            what="the backfill mapped once the sends caught up",
        )


def test_a_send_worker_whose_sender_is_stuck_stops_beating(engine: Engine) -> None:
    """WORKER_STAGE=send: the heartbeat says the live sender works, not only that the
    process runs: stuck in one step past the stall limit, the worker logs send_stalled
    and stops beating (status then shows it stale); unstuck, it beats again."""
    url = engine.url.render_as_string(hide_password=False)
    runner = Worker(
        engine, make_settings(url, worker_poll_interval=0.05, worker_stage="send"), None
    )
    runner._stall_after = 0.5
    release = threading.Event()
    original = runner._deliver

    def stuck(limit: int, lanes: tuple[int, ...]) -> Any:
        if lanes == (0,):
            release.wait(10)  # a live send that does not come back
        return original(limit, lanes)

    beats: list[float] = []
    runner._deliver = stuck  # type: ignore[method-assign]
    runner._beat = lambda: beats.append(time.monotonic())  # type: ignore[method-assign]
    with capture_logs() as logs, running(runner):
        wait_for(lambda: events(logs, "send_stalled"), timeout=3, what="the stall noticed")
        stalled_at = time.monotonic()
        time.sleep(0.5)
        assert not [t for t in beats if t > stalled_at]  # no beat while stuck
        release.set()
        wait_for(lambda: [t for t in beats if t > stalled_at + 0.5], timeout=3, what="beats again")
    assert len(events(logs, "send_stalled")) == 1  # said once per stall, not per look


def test_a_map_worker_without_credentials_says_it_is_a_dry_run(engine: Engine) -> None:
    """It never calls Customer.io, but what it maps is recorded as dry_run, which no
    sender sends: it warns at start and beats dry_run, not map_only."""
    mapper = dry_run_worker(engine, worker_stage="map")
    assert mapper.delivery_state() == "dry_run"
    with capture_logs() as logs, running(mapper):
        wait_for(lambda: events(logs, "dry_run"), timeout=3, what="the dry-run warning")
