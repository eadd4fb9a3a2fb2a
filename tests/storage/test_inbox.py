"""The inbox on every backend: atomic dedup, exact bytes, bounded waits, migrations."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from tests.conftest import TEST_DATABASE_URL
from webhooks.errors import StorageUnavailable
from webhooks.storage import inbox as inbox_module
from webhooks.storage import migrate, writer
from webhooks.storage.db import create_db_engine
from webhooks.storage.inbox import Delivery, store_deliveries, store_delivery
from webhooks.storage.schema import inbox


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    """A migrated engine on a fresh database of each backend."""
    eng = create_db_engine(database_url, timeout=5)
    migrate.upgrade(eng)
    yield eng
    eng.dispose()


def delivery(delivery_id: str = "evt_1", account: str = "platform", **kw: object) -> Delivery:
    values: dict[str, object] = {
        "provider": "stripe",
        "account": account,
        "event_type": "invoice.paid",
        "delivery_id": delivery_id,
        "event_id": delivery_id,
        "api_version": "2025-03-31.basil",
        "occurred_at": datetime(2026, 11, 28, 10, 0, tzinfo=UTC),
        "headers": {"topic": "x"},
        "body": b'{"id": "' + delivery_id.encode() + b'"}',
    }
    values.update(kw)
    return Delivery(**values)  # type: ignore[arg-type]


def rows(engine: Engine) -> list[sa.Row[object]]:
    with engine.connect() as conn:
        return list(conn.execute(sa.select(inbox).order_by(inbox.c.id)))


def test_migration_reaches_head_and_is_idempotent(engine: Engine) -> None:
    assert migrate.current_revision(engine) == migrate.head_revision()
    migrate.upgrade(engine)
    assert migrate.is_current(engine)


def test_new_then_duplicate(engine: Engine) -> None:
    assert store_delivery(engine, delivery()) is True
    assert store_delivery(engine, delivery()) is False
    assert len(rows(engine)) == 1


def test_a_batch_is_stored_in_one_transaction_with_each_ones_outcome(engine: Engine) -> None:
    store_delivery(engine, delivery("evt_2"))
    batch = [delivery("evt_1"), delivery("evt_2"), delivery("evt_1"), delivery("evt_3")]
    assert store_deliveries(engine, batch) == [True, False, False, True]
    with engine.connect() as conn:
        stored = dict(conn.execute(sa.select(inbox.c.delivery_id, inbox.c.duplicates)).all())
    assert stored == {"evt_1": 1, "evt_2": 1, "evt_3": 0}


@pytest.mark.parametrize("autocommit", [False, True], ids=["worker", "web"])
def test_a_batch_that_fails_part_way_stores_none_of_it(database_url: str, autocommit: bool) -> None:
    # A row the database refuses (NULL in a NOT NULL key column) after two good rows:
    # the whole transaction rolls back, on the web app's autocommit engine too.
    eng = create_db_engine(database_url, timeout=5, autocommit=autocommit, poll_busy=autocommit)
    migrate.upgrade(create_db_engine(database_url, timeout=5))
    bad = delivery("evt_bad", event_type=None)
    with pytest.raises(StorageUnavailable):
        store_deliveries(eng, [delivery("evt_1"), delivery("evt_2"), bad])
    with eng.connect() as conn:
        assert conn.scalar(sa.select(sa.func.count()).select_from(inbox)) == 0
    # The engine's own mode is back for the next request: one statement, one commit.
    assert store_delivery(eng, delivery("evt_3")) is True
    eng.dispose()


def test_a_batch_inserts_in_key_order_so_two_batches_never_deadlock(engine: Engine) -> None:
    # Two batches sharing keys lock them in one order; answers keep the caller's order.
    assert store_deliveries(engine, [delivery("evt_b"), delivery("evt_a")]) == [True, True]
    assert [row.delivery_id for row in rows(engine)] == ["evt_a", "evt_b"]


def test_fields_round_trip_exactly(engine: Engine) -> None:
    body = bytes(range(256)) + b'{"x": "\xe2\x82\xac"}'  # every byte value survives
    received = datetime(2026, 11, 28, 10, 0, 5, 123456, tzinfo=UTC)
    store_delivery(engine, delivery(body=body), received_at=received)
    [row] = rows(engine)
    assert row.body == body
    assert row.received_at == received
    assert row.occurred_at == datetime(2026, 11, 28, 10, 0, tzinfo=UTC)
    assert row.headers == {"topic": "x"}
    assert (row.state, row.attempts, row.last_error) == ("pending", 0, None)


def test_key_parts_each_distinguish_deliveries(engine: Engine) -> None:
    base = delivery()
    variants = [
        base,
        delivery(account="acct_other"),
        delivery(event_type="invoice.payment_failed"),
        delivery(provider="shopify"),
        delivery(delivery_id="evt_2"),
    ]
    assert [store_delivery(engine, item) for item in variants] == [True] * 5
    # Everything outside the key may differ and it is still a duplicate.
    assert store_delivery(engine, delivery(body=b"{}", api_version=None, headers={})) is False


def test_concurrent_copies_leave_exactly_one_row(engine: Engine) -> None:
    results: list[bool] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(20)

    def insert() -> None:
        barrier.wait()
        try:
            results.append(store_delivery(engine, delivery("evt_race")))
        except BaseException as exc:  # surfaced by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=insert) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sorted(results) == [False] * 19 + [True]
    assert len(rows(engine)) == 1


def test_unreachable_database_raises_storage_unavailable() -> None:
    engine = create_db_engine("postgresql+psycopg://nobody@127.0.0.1:1/none", timeout=1)
    with pytest.raises(StorageUnavailable) as caught:
        store_delivery(engine, delivery())
    assert caught.value.status == 503


def test_missing_schema_raises_storage_unavailable(database_url: str) -> None:
    engine = create_db_engine(database_url, timeout=1)
    with pytest.raises(StorageUnavailable):
        store_delivery(engine, delivery())
    engine.dispose()


def test_dead_pooled_connection_is_retried_once_not_503(postgres_url: str) -> None:
    engine = create_db_engine(postgres_url, timeout=5, autocommit=True)
    migrate.ensure_current(postgres_url)
    assert store_delivery(engine, delivery("evt_before")) is True
    # What a PostgreSQL restart or failover does to every pooled connection.
    with engine.connect() as conn:
        pid = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one()
    admin = sa.create_engine(str(TEST_DATABASE_URL), poolclass=sa.NullPool)
    with admin.connect() as conn:
        conn.exec_driver_sql(f"SELECT pg_terminate_backend({int(pid)})")
    admin.dispose()
    assert store_delivery(engine, delivery("evt_after")) is True
    assert [row.delivery_id for row in rows(engine)] == ["evt_before", "evt_after"]
    engine.dispose()


def test_migrated_schema_matches_the_code(engine: Engine) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from webhooks.storage.schema import metadata

    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    assert diff == []


def test_postgresql_waits_are_bounded(postgres_url: str) -> None:
    engine = create_db_engine(postgres_url, timeout=1.5, autocommit=True)
    with engine.connect() as conn:
        lock = conn.exec_driver_sql("SHOW lock_timeout").scalar_one()
        statement = conn.exec_driver_sql("SHOW statement_timeout").scalar_one()
        path = conn.exec_driver_sql("SHOW search_path").scalar_one()
    engine.dispose()
    assert (lock, statement) == ("1500ms", "1500ms")
    assert path.startswith("t_")  # the URL's own options survive beside the timeouts


# --- SQLite: writer turns and busy retries in fine steps --------------------------------


@pytest.fixture
def polling_engine(sqlite_url: str) -> Iterator[Engine]:
    """The web app's kind of SQLite engine: a busy database fails at once, retried here."""
    eng = create_db_engine(sqlite_url, timeout=2, autocommit=True, poll_busy=True)
    migrate.upgrade(eng)
    yield eng
    eng.dispose()


def test_an_insert_waits_out_a_busy_sqlite_by_retrying(
    polling_engine: Engine, sqlite_url: str
) -> None:
    # SQLite gives up after 1 ms on this engine: only the retries can store the row.
    path = sqlite_url.removeprefix("sqlite:///")
    locker = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    locker.execute("BEGIN IMMEDIATE")
    releaser = threading.Timer(0.3, lambda: locker.execute("COMMIT"))
    releaser.start()
    try:
        assert store_delivery(polling_engine, delivery("evt_busy")) is True
    finally:
        releaser.join()
        locker.close()
    with polling_engine.connect() as conn:
        assert conn.scalar(sa.select(sa.func.count()).select_from(inbox)) == 1


def test_a_writer_turn_never_freed_is_a_storage_error_in_time(polling_engine: Engine) -> None:
    engine = create_db_engine(str(polling_engine.url), timeout=0.2, autocommit=True, poll_busy=True)
    holding, done = threading.Event(), threading.Event()

    def hold_the_turn() -> None:
        with writer.turn(str(polling_engine.url.database), 5):
            holding.set()
            done.wait(5)

    holder = threading.Thread(target=hold_the_turn)
    holder.start()
    holding.wait(5)
    try:
        with pytest.raises(StorageUnavailable, match="TimeoutError"):
            store_delivery(engine, delivery("evt_no_turn"))
    finally:
        done.set()
        holder.join()
        engine.dispose()
    # Once the turn is free the same delivery is stored, as the provider's retry would be.
    assert store_delivery(polling_engine, delivery("evt_no_turn")) is True


def test_a_process_killed_holding_the_writer_turn_does_not_lock_others_out(
    polling_engine: Engine,
) -> None:
    # A gunicorn worker SIGKILLed mid-insert: the kernel drops its file lock.
    database = str(polling_engine.url.database)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from webhooks.storage import writer\n"
            f"with writer.turn({database!r}, 5):\n"
            "    print('held', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "held"
        engine = create_db_engine(
            str(polling_engine.url), timeout=0.3, autocommit=True, poll_busy=True
        )
        with pytest.raises(StorageUnavailable):  # held: refused in time
            store_delivery(engine, delivery("evt_while_held"))
        holder.send_signal(signal.SIGKILL)
        holder.wait(10)
        assert store_delivery(engine, delivery("evt_after_kill")) is True
        engine.dispose()
    finally:
        holder.kill()
        holder.wait()


def test_a_connection_lost_mid_statement_is_retried_but_a_server_timeout_is_not() -> None:
    """A cut connection can surface as the rollback failing after it, not recognised as a
    disconnect: still retried once (the insert is idempotent). A lock or statement
    timeout comes from the server with a SQLSTATE: retrying would double the wait."""
    import psycopg

    from webhooks.storage.inbox import _connection_lost

    busy = psycopg.OperationalError("sending query failed: another command is already in progress")
    lost = sa.exc.OperationalError("ROLLBACK", {}, busy)
    assert busy.sqlstate is None
    assert _connection_lost(lost) is True
    timeout = psycopg.errors.LockNotAvailable("canceling statement due to lock timeout")
    assert timeout.sqlstate == "55P03"
    assert _connection_lost(sa.exc.OperationalError("INSERT", {}, timeout)) is False
    refused = sa.exc.IntegrityError("INSERT", {}, psycopg.errors.UniqueViolation("dup"))
    assert _connection_lost(refused) is False


def test_requests_waiting_for_the_writer_turn_share_one_commit(
    polling_engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Group commit on SQLite: while the turn is held (the worker committing), the
    requests that arrive are stored together once it is free, each told its own answer;
    a copy of one delivery among them counts as its duplicate."""
    transactions: list[int] = []
    real_insert_all = inbox_module._insert_all

    def counting(
        conn: sa.Connection, statement: sa.Insert, rows: list[dict[str, object]]
    ) -> list[bool]:
        transactions.append(len(rows))
        return real_insert_all(conn, statement, rows)

    monkeypatch.setattr(inbox_module, "_insert_all", counting)
    database = str(polling_engine.url.database)
    answers: dict[int, bool] = {}
    names = [f"evt_group_{n}" for n in range(12)] + ["evt_group_0"]  # the last: a copy

    def store(index: int) -> None:
        answers[index] = store_delivery(polling_engine, delivery(names[index]))

    held, free = threading.Event(), threading.Event()

    def hold() -> None:
        with writer.turn(database, 5):
            held.set()
            free.wait(5)

    holder = threading.Thread(target=hold)
    holder.start()
    held.wait(5)
    threads = [threading.Thread(target=store, args=(i,)) for i in range(len(names))]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 5
    while len(inbox_module._group(polling_engine)._queue) < len(names):
        assert time.monotonic() < deadline, "the requests never queued"
        time.sleep(0.001)
    free.set()
    for thread in [holder, *threads]:
        thread.join(5)
    assert transactions == [len(names)]  # one transaction, one disk flush
    assert [answers[i] for i in range(len(names))] == [True] * 12 + [False]
    with polling_engine.connect() as conn:
        stored = conn.execute(sa.select(inbox.c.delivery_id, inbox.c.duplicates)).all()
    assert sorted(stored) == sorted(
        [(name, 1 if name == "evt_group_0" else 0) for name in names[:12]]
    )


def test_a_group_the_database_keeps_busy_fails_within_the_requests_timeout(
    polling_engine: Engine, sqlite_url: str
) -> None:
    """A group refused for a busy database is not tried again request by request for
    a further timeout each: every request is answered 503 within its own timeout."""
    engine = create_db_engine(str(polling_engine.url), timeout=1, autocommit=True, poll_busy=True)
    locker = sqlite3.connect(sqlite_url.removeprefix("sqlite:///"), isolation_level=None)
    locker.execute("BEGIN IMMEDIATE")  # another writer that does not let go in time
    answers: dict[int, object] = {}

    def store(index: int) -> None:
        try:
            answers[index] = store_delivery(engine, delivery(f"evt_busy_group_{index}"))
        except StorageUnavailable as exc:
            answers[index] = exc

    held, free = threading.Event(), threading.Event()

    def hold() -> None:
        with writer.turn(str(polling_engine.url.database), 5):
            held.set()
            free.wait(5)

    holder = threading.Thread(target=hold)
    holder.start()
    held.wait(5)
    threads = [threading.Thread(target=store, args=(i,)) for i in range(6)]
    started = time.monotonic()
    try:
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 5
        while len(inbox_module._group(engine)._queue) < len(threads):
            assert time.monotonic() < deadline, "the requests never queued"
            time.sleep(0.001)
        free.set()
        for thread in [holder, *threads]:
            thread.join(15)
        elapsed = time.monotonic() - started
    finally:
        locker.execute("ROLLBACK")
        locker.close()
        engine.dispose()
    assert all(isinstance(answers[i], StorageUnavailable) for i in range(6))
    # One timeout (1 s) and a little; storing them one by one with a fresh timeout each
    # took about seven.
    assert elapsed < 3.0


def test_postgresql_requests_arriving_during_a_statement_share_the_next_one(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Group commit on PostgreSQL: while one request's statement runs, the process's
    other requests queue and are stored by the next statement, one upsert of arrays,
    each told its own answer: a copy inside the group and a copy of a delivery stored
    before are duplicates, and `duplicates` counts every copy."""
    engine = create_db_engine(postgres_url, timeout=5, autocommit=True)  # as the web app
    migrate.upgrade(engine)
    assert store_delivery(engine, delivery("evt_before")) is True
    groups: list[int] = []
    real_group = inbox_module._store_group
    first_runs, go_on = threading.Event(), threading.Event()

    def holding(eng: Engine, group: list[dict[str, object]]) -> list[bool]:
        groups.append(len(group))
        if len(groups) == 1:
            first_runs.set()
            go_on.wait(5)
        return real_group(eng, group)

    monkeypatch.setattr(inbox_module, "_store_group", holding)
    # No occurred_at, event id or API version on some: NULLs travel in the arrays too.
    items = [delivery("evt_first")]
    items += [delivery(f"evt_g{n}") for n in range(8)]
    items += [
        delivery(f"evt_bare{n}", occurred_at=None, event_id=None, api_version=None)
        for n in range(3)
    ]
    items += [delivery("evt_g0"), delivery("evt_g0"), delivery("evt_before")]
    answers: dict[int, bool] = {}

    def store(index: int) -> None:
        answers[index] = store_delivery(engine, items[index])

    try:
        threads = [threading.Thread(target=store, args=(0,))]
        threads[0].start()
        assert first_runs.wait(5)
        threads += [threading.Thread(target=store, args=(i,)) for i in range(1, len(items))]
        for thread in threads[1:]:
            thread.start()
        deadline = time.monotonic() + 5
        while len(inbox_module._group(engine)._queue) < len(items) - 1:
            assert time.monotonic() < deadline, "the requests never queued"
            time.sleep(0.001)
        go_on.set()
        for thread in threads:
            thread.join(5)
        assert groups == [1, len(items) - 1]  # the first alone, then all the others at once
        new = [answers[i] for i in range(len(items))]
        assert new == [True] * 12 + [False, False, False]
        stored = {row.delivery_id: row for row in rows(engine)}
        assert {name: row.duplicates for name, row in stored.items() if row.duplicates} == {
            "evt_g0": 2,
            "evt_before": 1,
        }
        assert len(stored) == 13
        bare = stored["evt_bare0"]
        assert (bare.occurred_at, bare.event_id, bare.api_version) == (None, None, None)
        assert stored["evt_g3"].headers == {"topic": "x"}
        assert stored["evt_g3"].body == b'{"id": "evt_g3"}'
    finally:
        go_on.set()
        engine.dispose()


def test_a_group_is_retried_request_by_request_only_for_errors_of_its_own_rows() -> None:
    """A refused PostgreSQL group: a row's own error (a value, a row lock) is worth
    storing the others again one by one; a database gone is everyone's answer."""
    import psycopg

    lost = sa.exc.OperationalError("INSERT", {}, psycopg.OperationalError("closed"))
    assert inbox_module._connection_lost(lost)
    gone = StorageUnavailable("inbox write failed")
    gone.__cause__ = lost
    assert inbox_module._alone(gone) is False
    assert inbox_module._alone(sa.exc.TimeoutError("pool")) is False
    refused = sa.exc.IntegrityError("INSERT", {}, psycopg.errors.UniqueViolation("x"))
    own = StorageUnavailable("inbox write failed")
    own.__cause__ = refused
    assert inbox_module._alone(own) is True
    locked = sa.exc.OperationalError("INSERT", {}, psycopg.errors.LockNotAvailable("lock"))
    assert inbox_module._alone(locked) is True
