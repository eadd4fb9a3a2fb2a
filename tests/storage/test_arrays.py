"""PostgreSQL upserts of one array per column (webhooks.storage.arrays), on the real server:
values bound as SQLAlchemy binds them, the caller's condition kept, repeated keys."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from webhooks.storage import arrays, migrate
from webhooks.storage.db import create_db_engine
from webhooks.storage.schema import identity_links, person_state

NOW = datetime(2026, 12, 1, 11, 30, tzinfo=UTC)
RANKED = "identity_links.rank <= excluded.rank"


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
        arrays.upsert(conn, identity_links, rows, ["person_id", "rank", "updated_at"], where=RANKED)


def test_the_condition_keeps_a_link_from_a_weaker_id(pg: Engine) -> None:
    write_links(pg, [link("email:a@example.com", "cus_1", 2), link("customer:cus_2", "cus_2", 2)])
    write_links(pg, [link("email:a@example.com", "guest_9", 1), link("customer:cus_2", "u_2", 3)])
    assert links(pg) == {"email:a@example.com": ("cus_1", 2), "customer:cus_2": ("u_2", 3)}


def test_a_key_given_twice_is_written_once_as_its_last_row(pg: Engine) -> None:
    # PostgreSQL would refuse the statement ("cannot affect row a second time").
    write_links(pg, [link("k", "first", 1), link("other", "o", 1), link("k", "last", 2)])
    assert links(pg) == {"k": ("last", 2), "other": ("o", 1)}


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
        arrays.upsert(conn, person_state, [row], [name for name in row if name != "person_id"])
    with pg.connect() as conn:
        stored = conn.execute(sa.select(person_state)).mappings().one()
    assert {name: stored[name] for name in row} == row
    naive = {**row, "updated_at": NOW.replace(tzinfo=None)}
    with pytest.raises(ValueError, match="naive datetime"), pg.begin() as conn:
        arrays.upsert(conn, person_state, [naive], ["updated_at"])
