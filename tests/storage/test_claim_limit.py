"""A claim leases at most `limit` rows, on every backend (webhooks/storage/queue.py).

Found while writing tests/stage1/state/test_permutations.py, and not fixed here (this change
adds tests only). On PostgreSQL, `UPDATE ... WHERE id IN (SELECT id ... LIMIT n FOR UPDATE
SKIP LOCKED)` is planned as a Nested Loop Semi Join that runs `Limit -> LockRows` again
for every outer row; each run re-checks `lease_until` on the rows this very statement
has just leased, skips them, and hands out the next one. So every due row is leased,
whatever the limit: stage 1 maps a whole backlog in one transaction (and in one state
batch), stage 2 claims the whole outbox, and a second worker finds nothing to take.
A CTE (`WITH picked AS (SELECT ... LIMIT n FOR UPDATE SKIP LOCKED) UPDATE ... FROM
picked`) or `id = ANY(ARRAY(SELECT ...))` evaluates the pick once.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from tests.mappers.golden import configs
from webhooks.stage1.process import process_batch
from webhooks.storage import migrate, queue
from webhooks.storage.db import create_db_engine
from webhooks.storage.inbox import Delivery, store_delivery
from webhooks.storage.queue import claim
from webhooks.storage.schema import InboxState, inbox

PENDING = 5


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    """A migrated database of each backend holding PENDING pending deliveries."""
    eng = create_db_engine(database_url, timeout=5)
    migrate.upgrade(eng)
    for n in range(PENDING):
        store_delivery(eng, _delivery(n))
    yield eng
    eng.dispose()


def _delivery(n: int) -> Delivery:
    return Delivery(
        provider="stripe",
        account="platform",
        event_type="customer.created",
        delivery_id=f"evt_{n}",
        event_id=f"evt_{n}",
        api_version="2025-03-31.basil",
        occurred_at=datetime(2026, 11, 28, 10, 0, tzinfo=UTC),
        headers={},
        body=b'{"id": "evt_%d", "data": {"object": {"id": "cus_%d"}}}' % (n, n),
    )


def leased(engine: Engine) -> int:
    """How many inbox rows some worker holds a lease on."""
    with engine.connect() as conn:
        query = sa.select(sa.func.count()).where(inbox.c.lease_owner.is_not(None))
        return int(conn.execute(query).scalar_one())


def test_a_claim_leases_no_more_than_its_limit(engine: Engine) -> None:
    rows = claim(
        engine,
        inbox,
        "w1",
        2,
        timedelta(seconds=60),
        queues=[[inbox.c.state == InboxState.PENDING]],
        order_by=[inbox.c.id],
    )
    # All 5 on PostgreSQL today: one worker holds every row for a lease, the others idle.
    assert [row.delivery_id for row in rows] == ["evt_0", "evt_1"]
    assert leased(engine) == 2


def test_stage_one_maps_no_more_than_its_batch(engine: Engine) -> None:
    # 5 on PostgreSQL today: the batch size does not bound a stage-1 transaction.
    assert process_batch(engine, "w1", configs(), limit=1) == 1
    with engine.connect() as conn:
        states = list(conn.execute(sa.select(inbox.c.state).order_by(inbox.c.id)).scalars())
    assert states.count(InboxState.PENDING) == PENDING - 1


def test_on_sqlite_an_inbox_claims_commit_skips_the_fsync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A lease lost to a power cut only returns rows to the queue: its commit need not
    wait for the disk (nor does stage 1's: tests/stage1/test_durability.py). The claim's
    connection is back at synchronous=FULL in the pool, also after a claim that failed."""
    engine = create_db_engine(f"sqlite:///{tmp_path / 'claims.db'}")
    migrate.upgrade(engine)
    for n in range(3):
        store_delivery(engine, _delivery(n))
    during: list[int] = []

    def record(conn: sa.Connection, _cursor: object, statement: str, *_: object) -> None:
        if statement.startswith("UPDATE inbox"):
            setting = conn.connection.driver_connection.execute("PRAGMA synchronous")
            during.append(setting.fetchone()[0])

    sa.event.listen(engine, "before_cursor_execute", record)
    queues = [[inbox.c.state == InboxState.PENDING]]
    rows = claim(engine, inbox, "w", 2, timedelta(seconds=60), queues, [inbox.c.id])
    assert len(rows) == 2
    assert during == [1]  # NORMAL while the claim commits

    def broken(*_: object) -> None:
        raise RuntimeError("the database refused the lease")

    monkeypatch.setattr(queue, "_lease", broken)
    with pytest.raises(RuntimeError):
        claim(engine, inbox, "w", 2, timedelta(seconds=60), queues, [inbox.c.id])
    with engine.connect() as conn:  # SQLite's pool hands back the same connection
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
        assert (
            conn.execute(
                sa.select(sa.func.count()).where(inbox.c.lease_owner.is_not(None))
            ).scalar()
            == 2
        )
    engine.dispose()
