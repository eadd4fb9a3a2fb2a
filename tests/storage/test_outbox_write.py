"""Outbox rows as stage 1 writes them, on both backends: what is stored is what was given,
a repeat adds nothing, a dead operation is revived. PostgreSQL binds each column as one
array (webhooks.storage.outbox._write_arrays), SQLite row by row."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from webhooks.core.operations import OperationKind
from webhooks.storage.outbox import write_operations
from webhooks.storage.schema import OutboxState, outbox

NOW = datetime(2026, 12, 1, 11, 0, 0, 123456, tzinfo=UTC)
# What array literals, JSON and SQL must each keep intact.
AWKWARD = "quote \" apostrophe ' backslash \\ braces {} comma , é ✓"


def operation(index: int, **changes: Any) -> dict[str, Any]:
    row = {
        "op_key": f"order_completed:stripe:platform:in_{index}",
        "op_id": f"01JDR{index:021d}",
        "kind": OperationKind.EVENT,
        "person_id": f"cus_{index}" if index % 2 else None,
        "payload": {
            "name": "order_completed",
            "data": {"note": AWKWARD, "big": 12345678901234567890123, "index": index},
        },
        "occurred_at": NOW - timedelta(minutes=index),
        "lane": index % 4,
        "inbox_id": index if index % 3 else None,
        "subject": None,
        "solo": bool(index % 2),
        "next_attempt_at": NOW + timedelta(seconds=index),
        "created_at": NOW,
        "state": OutboxState.PENDING,
        "last_error": AWKWARD if index == 2 else None,
    }
    return {**row, **changes}


def stored(engine: Engine) -> dict[str, dict[str, Any]]:
    with engine.connect() as conn:
        rows = conn.execute(sa.select(outbox).order_by(outbox.c.op_key)).mappings()
        return {row["op_key"]: dict(row) for row in rows}


def test_every_column_is_stored_as_given(engine: Engine) -> None:
    given = [operation(index) for index in range(1, 8)]
    with engine.begin() as conn:
        written = write_operations(conn, given)
    assert written == {row["op_key"] for row in given}
    rows = stored(engine)
    for row in given:
        assert {name: rows[row["op_key"]][name] for name in row} == row
        assert rows[row["op_key"]]["attempts"] == 0


def test_a_repeat_adds_nothing_and_a_dead_operation_is_mapped_again(engine: Engine) -> None:
    first = [operation(index) for index in range(1, 4)]
    with engine.begin() as conn:
        write_operations(conn, first)
    again = [operation(index, payload={"name": "order_completed", "n": 2}) for index in (1, 2, 3)]
    with engine.begin() as conn:
        assert write_operations(conn, again) == set()  # pending: the first mapping stays
    dead = first[1]["op_key"]
    with engine.begin() as conn:
        conn.execute(
            sa.update(outbox)
            .where(outbox.c.op_key == dead)
            .values(state=OutboxState.DEAD, attempts=5, solo=True, last_error="refused")
        )
    with engine.begin() as conn:
        assert write_operations(conn, again) == {dead}
    rows = stored(engine)
    assert rows[dead]["payload"] == {"name": "order_completed", "n": 2}
    assert (rows[dead]["state"], rows[dead]["attempts"], rows[dead]["solo"]) == (
        OutboxState.PENDING,
        0,
        False,
    )
    assert rows[dead]["last_error"] == again[1]["last_error"]
    assert rows[first[0]["op_key"]]["payload"] == first[0]["payload"]
