"""Upserts of many rows in one statement (webhooks.storage.arrays), on both backends:
values bound as SQLAlchemy binds them, the caller's condition and RETURNING kept,
repeated keys refused; over-long values refused on PostgreSQL, and SQLite's rows split
across statements; and stage 1's link condition."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from webhooks.core.identity import CUSTOMER, EMAIL, INTERNAL, Identity
from webhooks.stage1.state import store
from webhooks.storage import arrays
from webhooks.storage.dialect import insert
from webhooks.storage.schema import identity_links, person_state

NOW = datetime(2026, 12, 1, 11, 30, tzinfo=UTC)


def upsert_of(
    engine: Engine, table: sa.Table, ranked: bool = False, returning: bool = False
) -> sa.Insert:
    """ON CONFLICT (primary key) DO UPDATE SET every other column [WHERE the new rank
    is at least the old] [RETURNING the key], in the engine's dialect."""
    statement = insert(table, engine.dialect.name)
    keys = {column.name for column in table.primary_key.columns}
    upsert = statement.on_conflict_do_update(
        index_elements=sorted(keys),
        set_={c.name: statement.excluded[c.name] for c in table.columns if c.name not in keys},
        where=table.c.rank <= statement.excluded.rank if ranked else None,
    )
    return upsert.returning(*table.primary_key.columns) if returning else upsert


def link(key: str, person_id: str, rank: int) -> dict[str, Any]:
    return {"key": key, "person_id": person_id, "rank": rank, "updated_at": NOW}


def links(engine: Engine) -> dict[str, tuple[str, int]]:
    with engine.connect() as conn:
        rows = conn.execute(sa.select(identity_links))
        return {row.key: (row.person_id, row.rank) for row in rows}


def write_links(engine: Engine, rows: list[dict[str, Any]]) -> list[sa.Row[Any]]:
    with engine.begin() as conn:
        return arrays.upsert(conn, upsert_of(engine, identity_links, ranked=True), rows)


def test_the_condition_keeps_a_link_from_a_weaker_id(engine: Engine) -> None:
    write_links(engine, [link("email:a@example.com", "cus_1", 2), link("customer:cus_2", "c", 2)])
    write_links(engine, [link("email:a@example.com", "guest_9", 1), link("customer:cus_2", "u", 3)])
    assert links(engine) == {"email:a@example.com": ("cus_1", 2), "customer:cus_2": ("u", 3)}


def test_returning_gives_the_rows_inserted_or_updated_across_sqlite_statements(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(arrays, "SQLITE_ROWS_PER_STATEMENT", 3)  # 7 rows: 3 statements
    write_links(engine, [link("k1", "strong", 3)])
    rows = [link("k1", "weak", 1)] + [link(f"k{n}", f"p{n}", 2) for n in range(2, 8)]
    statement = upsert_of(engine, identity_links, ranked=True, returning=True)
    with engine.begin() as conn:
        returned = arrays.upsert(conn, statement, rows)
    # k1 was kept (its condition failed): not returned; the six new ones in order.
    assert [row.key for row in returned] == [f"k{n}" for n in range(2, 8)]
    assert links(engine) == {"k1": ("strong", 3)} | {f"k{n}": (f"p{n}", 2) for n in range(2, 8)}


def test_sqlite_statements_stay_within_its_parameter_limit(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Wide rows go fewer to a SQLite statement: at 16 parameters a statement, the
    4-column links go 4, 4 and 1 (PostgreSQL: one statement of arrays)."""
    monkeypatch.setattr(arrays, "SQLITE_MAX_PARAMETERS", 16)
    inserts: list[str] = []

    @sa.event.listens_for(engine, "before_cursor_execute")
    def _count(*args: Any) -> None:
        if args[2].startswith("INSERT INTO identity_links"):
            inserts.append(args[2])

    write_links(engine, [link(f"k{n}", f"p{n}", 2) for n in range(9)])
    assert len(inserts) == {"sqlite": 3, "postgresql": 1}[engine.dialect.name]
    assert links(engine) == {f"k{n}": (f"p{n}", 2) for n in range(9)}


def test_rows_repeating_a_key_are_refused_before_the_database(engine: Engine) -> None:
    # One statement cannot update a row twice, and keeping either row would skip the
    # rank check between them that row-by-row writes made.
    with pytest.raises(sa.exc.InvalidRequestError, match="repeat a key"):
        write_links(engine, [link("k", "first", 1), link("other", "o", 1), link("k", "last", 2)])
    assert links(engine) == {}


def test_a_value_too_long_for_its_column_is_never_cut(engine: Engine) -> None:
    if engine.dialect.name == "sqlite":  # no length limits: kept whole, as row by row
        write_links(engine, [link("k" * 513, "cus_1", 2)])
        assert links(engine) == {"k" * 513: ("cus_1", 2)}
        return
    # An explicit cast to VARCHAR(512) would cut it; the column refuses it, as row by row.
    with pytest.raises(sa.exc.DataError, match="too long"):
        write_links(engine, [link("k" * 513, "cus_1", 2)])
    assert links(engine) == {}


def test_values_go_through_the_column_types(engine: Engine) -> None:
    row = {
        "person_id": "cus_1",
        "attributes": {"name": 'Zoë "Z" {O\'Brien}', "big": 12345678901234567890123},
        "watermark": 1764588600,
        "sent_hash": None,
        "order_count": 3,
        "first_order_at": None,
        "last_order_at": 1764588600,
        "lifetime_value": "12.50",
        "value_currency": "EUR",
        "updated_at": NOW,
    }
    state = upsert_of(engine, person_state)
    with engine.begin() as conn:
        arrays.upsert(conn, state, [row])
    with engine.connect() as conn:
        stored = conn.execute(sa.select(person_state)).mappings().one()
        # Stored as SQLAlchemy stores it: on SQLite, its own DATETIME text.
        as_text = conn.execute(sa.text("SELECT CAST(updated_at AS TEXT) FROM person_state"))
        text = as_text.scalar_one()
    assert {name: stored[name] for name in row} == row
    if engine.dialect.name == "sqlite":
        assert text == "2026-12-01 11:30:00.000000"
    # Refused as SQLAlchemy refuses it (stage 1 then stores the batch's rows one by one).
    naive = {**row, "updated_at": NOW.replace(tzinfo=None)}
    with (
        pytest.raises(sa.exc.StatementError, match="updated_at: naive datetime"),
        engine.begin() as conn,
    ):
        arrays.upsert(conn, state, [naive])


def test_stage_1_never_hands_a_link_to_a_weaker_id(engine: Engine) -> None:
    """store.save on both backends: the rank condition its upsert carries."""

    def save(key: str, who: Identity) -> None:
        with engine.begin() as conn:
            store.save(conn, {key: who}, [], [], {}, [], {})

    save("email:a@example.com", Identity("cus_1", CUSTOMER))
    save("email:a@example.com", Identity("a@example.com", EMAIL))
    assert links(engine)["email:a@example.com"] == ("cus_1", CUSTOMER)
    save("email:a@example.com", Identity("user_1", INTERNAL))
    assert links(engine)["email:a@example.com"] == ("user_1", INTERNAL)
