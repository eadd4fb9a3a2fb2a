"""Migrations that change stored data, on each backend."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from webhooks.stage1.state.queued import QUEUED
from webhooks.storage import migrate
from webhooks.storage.db import create_db_engine
from webhooks.storage.schema import outbox


@pytest.fixture
def bare(database_url: str) -> Iterator[Engine]:
    """A database of each backend, not migrated yet."""
    eng = create_db_engine(database_url, timeout=2)
    yield eng
    eng.dispose()


def test_0005_makes_every_persons_totals_count_again_from_their_facts(bare: Engine) -> None:
    # Stored values subtracted every refund; from 0005 refunds count per order, so a
    # value kept under the old rule must not be adjusted under the new one.
    migrate.upgrade(bare, "0004_data_requests")
    row = {
        "person_id": "p",
        "attributes": "{}",
        "watermark": 1,
        "order_count": 1,
        "lifetime_value": "-5",
        "value_currency": "USD",
        "updated_at": datetime(2026, 11, 1, tzinfo=UTC),
    }
    with bare.begin() as conn:
        table = sa.Table("person_state", sa.MetaData(), autoload_with=conn)
        conn.execute(table.insert(), row)
    migrate.upgrade(bare)
    with bare.connect() as conn:
        table = sa.Table("person_state", sa.MetaData(), autoload_with=conn)
        assert conn.execute(sa.select(table.c.value_currency)).scalar_one() is None
        facts = sa.Table("person_facts", sa.MetaData(), autoload_with=conn)
        assert "parent_key" in facts.c


def test_0008_allows_discarded_rows_and_its_downgrade_makes_them_dead_again(
    bare: Engine,
) -> None:
    from alembic import command

    from tests.storage.test_inbox import delivery
    from webhooks.storage.inbox import store_delivery
    from webhooks.storage.schema import inbox

    migrate.upgrade(bare)
    store_delivery(bare, delivery("evt_discard"))
    with bare.begin() as conn:
        conn.execute(sa.update(inbox).values(state="discarded"))
    with bare.begin() as conn:
        config = migrate.alembic_config(bare.url.render_as_string(hide_password=False))
        config.attributes["connection"] = conn
        command.downgrade(config, "0007_worker_heartbeats")
    with bare.connect() as conn:
        assert conn.scalar(sa.text("SELECT state FROM inbox")) == "dead"
        with pytest.raises(sa.exc.IntegrityError):
            conn.execute(sa.text("UPDATE inbox SET state = 'discarded'"))


def test_withholding_a_checkouts_queued_cart_events_reads_by_subject(tmp_path: Path) -> None:
    """Not every pending operation: SQLite's planner took ix_outbox_due's state column
    for `subject IN (...) AND state IN (...)` while the index was on subject alone."""
    # SQLite only: PostgreSQL plans from statistics, and the index serves it too.
    bare = create_db_engine(f"sqlite:///{tmp_path / 'plan.db'}")
    migrate.upgrade(bare)
    statement = (
        sa.update(outbox)
        .where(outbox.c.subject.in_(["a", "b"]), outbox.c.state.in_(QUEUED))
        .values(state="suppressed")
    )
    with bare.connect() as conn:
        sql = str(statement.compile(conn, compile_kwargs={"render_postcompile": True}))
        plan = " ".join(
            str(row)
            for row in conn.exec_driver_sql(
                f"EXPLAIN QUERY PLAN {sql}", ("suppressed", "a", "b", *QUEUED)
            )
        )
    assert "ix_outbox_subject_state" in plan
    bare.dispose()
