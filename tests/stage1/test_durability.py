"""What waits for the disk: ingest's commit, and stage 2's claim before it sends; stage 1's
never (webhooks/storage/queue.py `unsynced`): it derives everything from inbox rows ingest
stored durably, and is done again the same way if a power cut takes it before anything
was sent."""

from __future__ import annotations

from typing import Any

import httpx
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from tests.mappers.golden import configs
from tests.pipeline import inbox_rows, ingest, outbox_rows
from webhooks.fakes.customerio import FakeCustomerIO
from webhooks.stage1.process import process_batch
from webhooks.stage2.customerio import CustomerIO
from webhooks.stage2.deliver import deliver_batch

# What the setting reads on each backend when the commit does not wait for the disk,
# and when it does.
SETTING = {
    "sqlite": ("PRAGMA synchronous", {"unsynced": 1, "synced": 2}),  # NORMAL, FULL
    "postgresql": ("SHOW synchronous_commit", {"unsynced": "off", "synced": "on"}),
}


def _mode(engine: Engine, dbapi_conn: Any) -> str:
    query, values = SETTING[engine.dialect.name]
    found = dbapi_conn.execute(query).fetchone()[0]
    return next(name for name, value in values.items() if value == found)


def test_ingest_and_sending_wait_for_the_disk_and_stage_1_does_not(engine: Engine) -> None:
    seen: dict[str, str] = {}

    def record(conn: sa.Connection, _cursor: object, statement: str, *_: object) -> None:
        for table in ("inbox", "outbox", "person_state"):
            if statement.startswith(f"INSERT INTO {table} "):
                seen[table] = _mode(engine, conn.connection.driver_connection)
        if statement.startswith("UPDATE outbox SET lease_owner"):
            seen["outbox claim"] = _mode(engine, conn.connection.driver_connection)

    sa.event.listen(engine, "before_cursor_execute", record)
    ingest(engine, "shopify", "order_create")  # as the web endpoint stores it
    assert process_batch(engine, "worker-1", configs()) == 1
    with (
        FakeCustomerIO() as fake,
        httpx.Client(base_url=fake.url, auth=fake.auth, timeout=10) as http,
    ):
        sent = deliver_batch(engine, "worker-1", CustomerIO(http))
    sa.event.remove(engine, "before_cursor_execute", record)

    # The acknowledged webhook is on disk before the answer; what stage 1 derived from
    # it (operations, person state) is committed without waiting; stage 2's claim
    # waits, so nothing goes to Customer.io that a power cut could still take back.
    assert seen == {
        "inbox": "synced",
        "outbox": "unsynced",
        "person_state": "unsynced",
        "outbox claim": "synced",
    }
    assert sent.claimed == len(outbox_rows(engine)) > 0
    assert {r.state for r in outbox_rows(engine)} == {"delivered"}
    assert [r.state for r in inbox_rows(engine)] == ["done"]
    # The setting ends with stage 1's transaction: the pooled connection (SQLite hands
    # back the same one) commits synchronously again, for stage 2 and anything else.
    with engine.connect() as conn:
        assert _mode(engine, conn.connection.driver_connection) == "synced"
