"""Many rows in one PostgreSQL upsert: one binary array parameter per column.

SQLAlchemy sends an INSERT of many rows either as one text with a placeholder per value
(INSERT ... RETURNING: 2,800 for 200 outbox rows), which psycopg parses again on every
execution because it caches short texts only, or as one execution per row (a pipeline
message and a plan run each). `INSERT ... SELECT * FROM unnest(arrays)` has one short
text whatever the number of rows and one execution. Arrays go in binary: text arrays
are escaped element by element in Python. Stage 1 writes its state and outbox rows so
(12 % and more of its time on PostgreSQL went to the other forms).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import registry
from sqlalchemy.engine import Connection, CursorResult, Dialect


def upsert(
    conn: Connection,
    table: sa.Table,
    rows: Sequence[dict[str, Any]],
    update: Sequence[str],
    *,
    conflict: Sequence[str] = (),
    also: str = "",
    where: str = "",
    returning: str = "",
) -> CursorResult[Any]:
    """INSERT `rows` ... ON CONFLICT (`conflict`, by default the primary key) DO UPDATE
    SET each of `update` to the new row's value (and `also`, SQL) [WHERE `where`]
    [RETURNING `returning`].

    Every row names the same columns, as for any executemany, and no two the same key
    (PostgreSQL refuses to update a row twice in one statement; row by row, the second
    would have met the first's condition). Each value goes through its column type's
    own bind processing (a UTC check, JSON text), as SQLAlchemy binds it, and a value it
    refuses is a StatementError, as from SQLAlchemy: the caller's SQLAlchemyError.
    """
    keys = list(conflict) or [column.name for column in table.primary_key.columns]
    if len({tuple(row[key] for key in keys) for row in rows}) < len(rows):
        # A SQLAlchemyError, as the database's own refusal would be: stage 1 then
        # stores the batch's rows one by one instead of retrying it forever.
        raise sa.exc.InvalidRequestError(f"rows for {table.name} repeat a key of {keys}")
    names = tuple(rows[0])
    text = _statement(table, names, tuple(keys), tuple(update), also, where, returning)
    dialect = conn.dialect
    arrays: dict[str, list[Any]] = {}
    for name in names:
        process = table.c[name].type.dialect_impl(dialect).bind_processor(dialect)
        values = [row[name] for row in rows]
        try:
            arrays[name] = values if process is None else [process(value) for value in values]
        except (TypeError, ValueError) as exc:
            raise sa.exc.StatementError(f"{name}: {exc}", text, None, exc) from exc
    return conn.exec_driver_sql(text, arrays)


@cache
def _statement(
    table: sa.Table,
    names: tuple[str, ...],
    keys: tuple[str, ...],
    update: tuple[str, ...],
    also: str,
    where: str,
    returning: str,
) -> str:
    dialect = registry.load("postgresql")()
    columns = [table.c[name] for name in names]  # a name that is no column: KeyError
    arrays = ", ".join(f"%({c.name})b::{_element_type(c, dialect)}[]" for c in columns)
    sets = [f"{name} = excluded.{name}" for name in update if name in names]
    sets += [also] if also else []
    # Formatted in: the table's own names and the callers' constant SQL; values are
    # only ever parameters.
    text = f"INSERT INTO {table.name} ({', '.join(names)}) SELECT * FROM unnest({arrays}) "  # noqa: S608
    text += f"ON CONFLICT ({', '.join(keys)}) "
    text += f"DO UPDATE SET {', '.join(sets)}" if sets else "DO NOTHING"
    text += f" WHERE {where}" if where and sets else ""
    return text + (f" RETURNING {returning}" if returning else "")


def _element_type(column: sa.Column[Any], dialect: Dialect) -> str:
    # Strings are cast to text, not VARCHAR(n): an explicit cast to VARCHAR(n) cuts a
    # longer value silently, while storing text in the column refuses it, as before.
    return "TEXT" if isinstance(column.type, sa.String) else column.type.compile(dialect=dialect)
