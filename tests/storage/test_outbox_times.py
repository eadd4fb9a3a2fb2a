"""A queued event moves to an earlier report's time and id, only while nothing was sent."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from webhooks.core.ids import op_ulid
from webhooks.core.operations import OperationKind
from webhooks.storage.outbox import correct_times, write_operations
from webhooks.storage.schema import outbox

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
KEY = "order_completed:stripe:platform:in_1"


def report(at: datetime) -> dict[str, Any]:
    op_id = op_ulid(KEY, at)
    return {
        "op_key": KEY,
        "op_id": op_id,
        "kind": OperationKind.EVENT,
        "person_id": "user_1",
        "payload": {"name": "order_completed", "id": op_id, "timestamp": int(at.timestamp())},
        "occurred_at": at,
        "lane": 0,
        "inbox_id": None,
        "subject": None,
        "solo": False,
        "next_attempt_at": NOW,
        "created_at": NOW - timedelta(minutes=10),  # an earlier batch's row
        "state": "pending",
        "last_error": None,
    }


def stored(engine: Engine) -> sa.Row[Any]:
    with engine.connect() as conn:
        return conn.execute(sa.select(outbox)).one()


def test_an_earlier_report_moves_a_queued_event_and_a_later_one_does_not(engine: Engine) -> None:
    later, earlier = NOW - timedelta(minutes=1), NOW - timedelta(minutes=5)
    with engine.begin() as conn:
        write_operations(conn, [report(later)])
        assert correct_times(conn, [report(NOW)], NOW) == 0  # a later report: no change
        write_operations(conn, [report(earlier)])  # the fact is queued: nothing added
        assert correct_times(conn, [report(earlier)], NOW) == 1
    row = stored(engine)
    assert (row.op_id, row.occurred_at) == (op_ulid(KEY, earlier), earlier)
    assert row.payload["id"] == row.op_id
    assert row.payload["timestamp"] == int(earlier.timestamp())


@pytest.mark.parametrize(
    "sent",
    [
        {"attempts": 1},
        {"lease_owner": "w2", "lease_until": NOW + timedelta(seconds=30)},  # being sent
        {"lease_owner": "w2", "lease_until": NOW - timedelta(seconds=30)},  # died sending
        {"state": "delivered"},
    ],
)
def test_an_event_that_may_have_reached_customerio_keeps_its_id(
    engine: Engine, sent: dict[str, Any]
) -> None:
    # A retry under a new id after a request that did arrive would be a second event.
    with engine.begin() as conn:
        write_operations(conn, [report(NOW - timedelta(minutes=1))])
        conn.execute(sa.update(outbox).values(**sent))
        assert correct_times(conn, [report(NOW - timedelta(minutes=5))], NOW) == 0
    assert stored(engine).op_id == op_ulid(KEY, NOW - timedelta(minutes=1))


def test_the_batchs_own_rows_are_not_read_back(engine: Engine) -> None:
    # Rows this batch just wrote (created at `now`) are the reports themselves.
    with engine.begin() as conn:
        write_operations(conn, [{**report(NOW - timedelta(minutes=1)), "created_at": NOW}])
        assert correct_times(conn, [report(NOW - timedelta(minutes=5))], NOW) == 0


def test_a_log_summary_never_carries_an_email_person_id() -> None:
    from types import SimpleNamespace

    from webhooks.storage.outbox import summary

    row = SimpleNamespace(
        op_id="01K", kind="event", payload={"name": "order_completed"}, person_id="ann@x.test"
    )
    described = summary(row)
    assert described["person_id"].startswith("email-sha256:")
    assert "ann" not in str(described)
    row.person_id = "stripe:cus_1"
    assert summary(row)["person_id"] == "stripe:cus_1"
