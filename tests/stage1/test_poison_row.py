"""A row whose operations the database keeps refusing: stored alone, retried, then dead.

The refusal is real: a trigger on the outbox (SQLite and PostgreSQL) raises for the
event operation of one inbox row, so the batch's transaction fails in the database,
not in a mock, and stage 1 falls back to storing its rows one by one.
"""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from structlog.testing import capture_logs

from tests.mappers.golden import configs
from tests.pipeline import inbox_rows, ingest, outbox_rows
from webhooks.stage1.process import MAX_STORE_ATTEMPTS, process_batch
from webhooks.storage import inbox as inbox_store

CONFIG = configs()
REFUSED = "storing its operations failed: IntegrityError"


def refuse_events_of(engine: Engine, inbox_id: int) -> None:
    """Make the database refuse the outbox insert of `inbox_id`'s event operations.

    Only the event: its identify, written in the same statement, is accepted by the
    database, so a half-stored row would show up as that identify left behind.
    Both backends report the refusal as an integrity error (SQLite's RAISE(ABORT) is a
    constraint error; the PostgreSQL trigger raises check_violation).
    """
    with engine.begin() as conn:
        if engine.dialect.name == "sqlite":
            conn.exec_driver_sql(
                "CREATE TRIGGER refuse_op BEFORE INSERT ON outbox "
                f"WHEN NEW.kind = 'event' AND NEW.inbox_id = {int(inbox_id)} "
                "BEGIN SELECT RAISE(ABORT, 'refused by the test'); END"
            )
        else:
            conn.exec_driver_sql(
                "CREATE FUNCTION refuse_op() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                f"IF NEW.kind = 'event' AND NEW.inbox_id = {int(inbox_id)} THEN "
                "RAISE EXCEPTION 'refused by the test' USING ERRCODE = 'check_violation'; "
                "END IF; RETURN NEW; END $$"
            )
            conn.exec_driver_sql(
                "CREATE TRIGGER refuse_op BEFORE INSERT ON outbox "
                "FOR EACH ROW EXECUTE FUNCTION refuse_op()"
            )


def stop_refusing(engine: Engine) -> None:
    """Drop the trigger again (the fix an operator would make)."""
    with engine.begin() as conn:
        if engine.dialect.name == "sqlite":
            conn.exec_driver_sql("DROP TRIGGER refuse_op")
        else:
            conn.exec_driver_sql("DROP TRIGGER refuse_op ON outbox")


def by_id(engine: Engine) -> dict[int, sa.Row[Any]]:
    return {row.id: row for row in inbox_rows(engine)}


def written_for(engine: Engine, inbox_id: int) -> list[tuple[str, str, str]]:
    return [
        (row.kind, row.op_key, row.state) for row in outbox_rows(engine) if row.inbox_id == inbox_id
    ]


@pytest.fixture
def batch(engine: Engine) -> tuple[int, int, int]:
    """One batch: a row the database will refuse, a row that cannot map, a good row."""
    ingest(engine, "shopify", "order_create")  # the poison row, first in the batch
    ingest(engine, "stripe", "refund_created_partial", data={})  # a MappingError
    ingest(engine, "stripe", "checkout_session_completed_paid")  # a good row after both
    bad, unmappable, good = (row.id for row in inbox_rows(engine))
    refuse_events_of(engine, bad)
    return bad, unmappable, good


def test_the_poison_row_does_not_hold_up_the_rest_of_its_batch(
    engine: Engine, batch: tuple[int, int, int]
) -> None:
    bad, unmappable, good = batch
    with capture_logs() as logs:
        assert process_batch(engine, "w1", CONFIG) == 3
    rows = by_id(engine)
    # The good row is stored, with all its operations, in the same pass.
    assert (rows[good].state, rows[good].attempts, rows[good].last_error) == ("done", 1, None)
    assert written_for(engine, good) == [
        (
            "identify",
            "identify:stripe:platform:checkout.session.completed:evt_1TestCsPaid:user_8842",
            "pending",
        ),
        ("event", "order_completed:stripe:platform:pi_3TestPay01", "pending"),
    ]
    # The row that could not map still ends dead with its own reason, not the store's.
    assert rows[unmappable].state == "dead"
    assert "data.object" in rows[unmappable].last_error
    # The poison row: failed, counted once, claimable again, nothing of it in the outbox
    # (its identify was accepted by the database but rolled back with its event).
    assert (rows[bad].state, rows[bad].attempts, rows[bad].last_error) == ("failed", 1, REFUSED)
    assert (rows[bad].lease_owner, rows[bad].lease_until) == (None, None)
    assert written_for(engine, bad) == []
    failures = [e for e in logs if e["event"] == "store_failed"]
    assert [(e["inbox_id"], e["error"], e["state"]) for e in failures] == [
        (bad, "IntegrityError", "failed")
    ]
    # The batch's refusal never reaches the log as a message (it may quote parameters).
    assert all("refused by the test" not in str(e) for e in logs)


def test_the_poison_row_is_retried_then_dead_at_max_store_attempts(
    engine: Engine, batch: tuple[int, int, int]
) -> None:
    bad, unmappable, good = batch
    assert process_batch(engine, "w1", CONFIG) == 3
    stored_for_good = written_for(engine, good)
    seen: list[tuple[str, int, str | None]] = []
    with capture_logs() as logs:
        for _ in range(MAX_STORE_ATTEMPTS - 1):
            # Only the failed row is due again: done and dead rows are never reclaimed.
            assert process_batch(engine, "w1", CONFIG) == 1
            row = by_id(engine)[bad]
            seen.append((row.state, row.attempts, row.last_error))
            assert written_for(engine, bad) == []
    assert seen == [
        ("failed", 2, REFUSED),
        ("failed", 3, REFUSED),
        ("failed", 4, REFUSED),
        ("dead", MAX_STORE_ATTEMPTS, REFUSED),
    ]
    assert [e["state"] for e in logs if e["event"] == "store_failed"] == [
        "failed",
        "failed",
        "failed",
        "dead",
    ]
    assert process_batch(engine, "w1", CONFIG) == 0  # dead: not claimed again
    rows = by_id(engine)
    assert (rows[bad].state, rows[bad].attempts) == ("dead", MAX_STORE_ATTEMPTS)
    # The rest of the batch was left as the first pass stored it: no second write.
    assert (rows[good].state, rows[good].attempts) == ("done", 1)
    assert (rows[unmappable].state, rows[unmappable].attempts) == ("dead", 1)
    assert written_for(engine, good) == stored_for_good
    assert written_for(engine, bad) == []


def test_a_dead_poison_row_is_stored_whole_once_requeued_after_the_fix(
    engine: Engine, batch: tuple[int, int, int]
) -> None:
    bad, _, _ = batch
    for _ in range(MAX_STORE_ATTEMPTS):
        process_batch(engine, "w1", CONFIG)
    assert by_id(engine)[bad].state == "dead"
    stop_refusing(engine)
    assert inbox_store.requeue_dead(engine, [bad]) == 1
    # A requeued row gets a full new round of attempts, not one try before dead again.
    assert (by_id(engine)[bad].state, by_id(engine)[bad].attempts) == ("pending", 0)
    assert process_batch(engine, "w1", CONFIG) == 1
    row = by_id(engine)[bad]
    assert (row.state, row.last_error) == ("done", None)
    stored = written_for(engine, bad)
    assert [kind for kind, _, _ in stored] == ["identify", "event"]
    assert stored[1][1] == "order_completed:shopify:example-shop.myshopify.com:6200000000001"
