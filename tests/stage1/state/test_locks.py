"""PostgreSQL: stage-1 batches lock what they read, so only batches about the same
people wait for each other (webhooks.stage1.state.locks)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import OperationalError

from webhooks.stage1.state.locks import StateLocks, contended, lock_id, waited_seconds
from webhooks.storage.db import create_db_engine


@pytest.fixture
def pg(postgres_url: str) -> Iterator[Engine]:
    engine = create_db_engine(postgres_url)
    yield engine
    engine.dispose()


def impatient(conn: Connection) -> StateLocks:
    """A batch's locks on `conn`, giving up on a held lock after 200 ms."""
    conn.exec_driver_sql("SET LOCAL lock_timeout = '200ms'")
    return StateLocks(conn)


def test_batches_about_other_people_do_not_wait(pg: Engine) -> None:
    with pg.begin() as first, pg.begin() as second:
        mine, theirs = impatient(first), impatient(second)
        mine.begin(exclusive=False)
        mine.names(["stripe:acct:customer:cus_A", "order:stripe:acct:in_A"])
        mine.people(["user_A"])
        theirs.begin(exclusive=False)  # the state lock is shared
        theirs.names(["stripe:acct:customer:cus_B"])
        assert theirs.people(["user_B"]) is True
        assert theirs.people(["user_B"]) is False  # held already: no second sweep


@pytest.mark.parametrize(
    "take",
    [
        lambda locks: locks.names(["order:stripe:acct:in_A"]),
        lambda locks: locks.people(["user_A"]),
        lambda locks: locks.begin(exclusive=True),
    ],
    ids=["same order", "same person", "a redaction"],
)
def test_a_batch_about_the_same_people_waits_and_is_told_to_compute_again(
    pg: Engine, take: Callable[[StateLocks], object]
) -> None:
    before = waited_seconds()
    with pg.begin() as first:
        mine = impatient(first)
        mine.begin(exclusive=False)
        mine.names(["order:stripe:acct:in_A"])
        mine.people(["user_A"])
        with pg.begin() as second:
            theirs = impatient(second)
            with pytest.raises(OperationalError) as raised:
                take(theirs)
            # What the writer retries on (a deadlock is the same SQLSTATE family).
            assert contended(raised.value)
            assert theirs.waited >= 0.2
            # The wait that ended in the timeout is in /metrics too.
            assert waited_seconds() >= before + 0.2


def test_locks_end_with_the_transaction(pg: Engine) -> None:
    with pg.begin() as first:
        impatient(first).people(["user_A"])
    with pg.begin() as second:
        assert impatient(second).people(["user_A"]) is True


def test_lock_ids_are_stable_signed_32_bit_integers() -> None:
    # Every process must hash a name to the same lock, or two workers would not meet.
    assert lock_id("user_A") == lock_id("user_A")
    assert lock_id("user_A") != lock_id("user_B")
    assert all(-(2**31) <= lock_id(f"k{i}") < 2**31 for i in range(1000))


def test_locks_are_no_ops_on_sqlite(tmp_path: object) -> None:
    engine = sa.create_engine(f"sqlite:///{tmp_path}/x.db")
    with engine.begin() as conn:
        locks = StateLocks(conn)
        locks.begin(exclusive=True)
        assert locks.people(["user_A"]) is False
        assert locks.names(["order:x"]) is False
