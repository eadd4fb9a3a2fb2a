"""UTC datetimes on SQLite: written and read in SQLAlchemy's own DATETIME text."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone

import pytest
import sqlalchemy as sa

from webhooks.storage.schema import UTCDateTime

INSTANTS = [
    datetime(2026, 12, 1, 5, 26, 50, tzinfo=UTC),  # no microseconds: still six digits
    datetime(2026, 12, 1, 5, 26, 50, 123456, tzinfo=UTC),
    datetime(2026, 12, 1, 7, 26, 50, 1, tzinfo=timezone(timedelta(hours=2))),  # not UTC
    datetime(999, 1, 2, 3, 4, 5, tzinfo=UTC),  # a year of three digits is padded
]


@pytest.fixture
def conn() -> Iterator[sa.Connection]:
    metadata = sa.MetaData()
    sa.Table(
        "times",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("plain", sa.DateTime),  # SQLAlchemy's own SQLite processors
        sa.Column("utc", UTCDateTime),
    )
    engine = sa.create_engine("sqlite://")
    metadata.create_all(engine)
    with engine.begin() as connection:
        yield connection


def test_the_text_is_what_sqlalchemys_sqlite_datetime_writes(conn: sa.Connection) -> None:
    times = sa.table("times", sa.column("id"), sa.column("plain", sa.DateTime))
    for number, instant in enumerate(INSTANTS):
        naive = instant.astimezone(UTC).replace(tzinfo=None)
        conn.execute(
            sa.text("INSERT INTO times (id, utc) VALUES (:id, :utc)").bindparams(
                sa.bindparam("utc", type_=UTCDateTime)
            ),
            {"id": number, "utc": instant},
        )
        conn.execute(sa.update(times).where(times.c.id == number).values(plain=naive))
    rows = conn.execute(sa.text("SELECT plain, utc FROM times ORDER BY id")).all()
    assert [utc for _, utc in rows] == [plain for plain, _ in rows]
    assert rows[0][1] == "2026-12-01 05:26:50.000000"
    assert rows[2][1] == "2026-12-01 05:26:50.000001"  # stored in UTC
    assert rows[3][1] == "0999-01-02 03:04:05.000000"


def test_what_was_written_reads_back_as_the_same_aware_instant(conn: sa.Connection) -> None:
    column = sa.table("times", sa.column("id"), sa.column("utc", UTCDateTime))
    conn.execute(sa.insert(column), [{"id": n, "utc": t} for n, t in enumerate(INSTANTS)])
    # Text another writer left (SQLite's CURRENT_TIMESTAMP has no fraction) reads too.
    conn.execute(sa.text("INSERT INTO times (id, utc) VALUES (9, '2026-12-01 05:26:50')"))
    read = conn.scalars(sa.select(column.c.utc).order_by(column.c.id)).all()
    assert read == [*INSTANTS, datetime(2026, 12, 1, 5, 26, 50, tzinfo=UTC)]
    assert all(value.tzinfo is UTC for value in read)


def test_a_naive_datetime_is_refused(conn: sa.Connection) -> None:
    column = sa.table("times", sa.column("id"), sa.column("utc", UTCDateTime))
    with pytest.raises(sa.exc.StatementError, match="naive datetime"):
        conn.execute(sa.insert(column), {"id": 1, "utc": datetime(2026, 12, 1)})
