"""PostgreSQL upserts of one array per column (webhooks.storage.arrays), on the real server:
values bound as SQLAlchemy binds them, the caller's condition kept, repeated keys and
over-long values refused; and stage 1's link condition on both backends."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Engine

from webhooks.core.identity import CUSTOMER, EMAIL, INTERNAL, Identity
from webhooks.stage1.state import store
from webhooks.storage import arrays, migrate
from webhooks.storage.db import create_db_engine
from webhooks.storage.schema import identity_links, person_state

NOW = datetime(2026, 12, 1, 11, 30, tzinfo=UTC)


def upsert_of(table: sa.Table, where: sa.ColumnElement[bool] | None = None) -> sa.Insert:
    """ON CONFLICT (primary key) DO UPDATE SET every other column [WHERE `where`]."""
    statement = postgresql.insert(table)
    keys = {column.name for column in table.primary_key.columns}
    return statement.on_conflict_do_update(
        index_elements=sorted(keys),
        set_={c.name: statement.excluded[c.name] for c in table.columns if c.name not in keys},
        where=where,
    )


RANKED = upsert_of(
    identity_links, identity_links.c.rank <= postgresql.insert(identity_links).excluded.rank
)
STATE = upsert_of(person_state)


@pytest.fixture
def pg(postgres_url: str) -> Iterator[Engine]:
    engine = create_db_engine(postgres_url)
    migrate.upgrade(engine)
    yield engine
    engine.dispose()


def link(key: str, person_id: str, rank: int) -> dict[str, Any]:
    return {"key": key, "person_id": person_id, "rank": rank, "updated_at": NOW}


def links(engine: Engine) -> dict[str, tuple[str, int]]:
    with engine.connect() as conn:
        rows = conn.execute(sa.select(identity_links))
        return {row.key: (row.person_id, row.rank) for row in rows}


def write_links(engine: Engine, rows: list[dict[str, Any]]) -> None:
    with engine.begin() as conn:
        arrays.upsert(conn, RANKED, rows)


def test_the_condition_keeps_a_link_from_a_weaker_id(pg: Engine) -> None:
    write_links(pg, [link("email:a@example.com", "cus_1", 2), link("customer:cus_2", "cus_2", 2)])
    write_links(pg, [link("email:a@example.com", "guest_9", 1), link("customer:cus_2", "u_2", 3)])
    assert links(pg) == {"email:a@example.com": ("cus_1", 2), "customer:cus_2": ("u_2", 3)}


def test_rows_repeating_a_key_are_refused_before_the_database(pg: Engine) -> None:
    # One statement cannot update a row twice, and keeping either row would skip the
    # rank check between them that row-by-row writes made.
    with pytest.raises(sa.exc.InvalidRequestError, match="repeat a key"):
        write_links(pg, [link("k", "first", 1), link("other", "o", 1), link("k", "last", 2)])
    assert links(pg) == {}


def test_a_value_too_long_for_its_column_is_refused_not_cut(pg: Engine) -> None:
    # An explicit cast to VARCHAR(512) would cut it; the column refuses it, as row by row.
    with pytest.raises(sa.exc.DataError, match="too long"):
        write_links(pg, [link("k" * 513, "cus_1", 2)])
    assert links(pg) == {}


def test_values_go_through_the_column_types(pg: Engine) -> None:
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
    with pg.begin() as conn:
        arrays.upsert(conn, STATE, [row])
    with pg.connect() as conn:
        stored = conn.execute(sa.select(person_state)).mappings().one()
    assert {name: stored[name] for name in row} == row
    # Refused as SQLAlchemy refuses it (stage 1 then stores the batch's rows one by one).
    naive = {**row, "updated_at": NOW.replace(tzinfo=None)}
    with (
        pytest.raises(sa.exc.StatementError, match="updated_at: naive datetime"),
        pg.begin() as conn,
    ):
        arrays.upsert(conn, STATE, [naive])


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
