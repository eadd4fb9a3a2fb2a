"""`webhooks purge`: personal data of finished work goes, dedup keys stay."""

from __future__ import annotations

import json

from sqlalchemy.engine import Engine

from tests.ops.conftest import Run, post_signed, worker
from tests.ops.test_status import age
from tests.pipeline import ScriptedCustomerIO, inbox_rows, outbox_rows
from webhooks.storage.inbox import Delivery, store_delivery
from webhooks.storage.schema import inbox, outbox


def test_purge_drops_old_personal_data_and_keeps_dedup(
    engine: Engine, cio: ScriptedCustomerIO, run: Run
) -> None:
    post_signed(engine, "stripe", "checkout_session_completed_paid")
    worker(engine, cio).run_once()
    age(engine, inbox.c.received_at, minutes=31 * 24 * 60)
    age(engine, outbox.c.created_at, minutes=31 * 24 * 60)
    post_signed(engine, "shopify", "order_create")  # recent, not mapped yet: untouched
    assert run("purge", "--dry-run").stdout.startswith(
        "would purge 1 webhook bodies and 2 operation payloads from before"
    )
    assert inbox_rows(engine)[0].body != b""
    result = run("purge")
    assert result.stdout.startswith("purged 1 webhook bodies and 2 operation payloads")
    old, recent = inbox_rows(engine)
    assert (old.body, old.headers, old.enrichment) == (b"", {}, None)
    assert recent.body != b""
    assert all(row.payload == {"purged": True} for row in outbox_rows(engine))
    assert "@" not in json.dumps([row.payload for row in outbox_rows(engine)])
    # Stripe retries the old event: still a duplicate.
    retried = Delivery(old.provider, old.account, old.event_type, old.delivery_id, b"{}")
    assert store_delivery(engine, retried) is False
    # Another delivery of the same facts queues nothing new: the keys are still there.
    post_signed(engine, "stripe", "checkout_session_completed_paid", id="evt_same_facts_later")
    before = len(outbox_rows(engine))
    worker(engine, cio).run_once()
    events = [row for row in outbox_rows(engine) if row.kind == "event"]
    assert len(events) == 2  # the old order_completed, and the shopify order's
    assert len(outbox_rows(engine)) >= before
    # A second purge finds nothing left to do.
    assert run("purge").stdout.startswith("purged 0 webhook bodies and 0 operation payloads")


def test_purge_keeps_what_may_still_be_needed(
    engine: Engine, cio: ScriptedCustomerIO, run: Run
) -> None:
    post_signed(engine, "stripe", "checkout_session_completed_paid", id="evt_broken", data={})
    worker(engine, None).run_once()  # a dead letter: its body is needed to retry it
    age(engine, inbox.c.received_at, minutes=365 * 24 * 60)
    assert run("purge", "--older-than", "1d").stdout.startswith("purged 0 webhook bodies")
    [row] = inbox_rows(engine)
    assert (row.state, row.body != b"") == ("dead", True)


def test_purge_refuses_a_bad_age(engine: Engine, run: Run) -> None:
    result = run("purge", "--older-than", "a while")
    assert result.exit_code == 2
    assert "neither a duration" in result.stderr
