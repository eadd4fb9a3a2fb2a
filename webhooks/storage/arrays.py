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
    conn: Connection, statement: sa.Insert, rows: Sequence[dict[str, Any]]
) -> CursorResult[Any]:
    """`statement` (a PostgreSQL INSERT ... ON CONFLICT, as the caller runs it on SQLite)
    for all `rows` at once: its ON CONFLICT clause and RETURNING are kept as compiled,
    its VALUES become one array per column, so each table's conflict rule is written once.

    Every row names the same columns, as for any executemany, and no two the same
    conflict key (PostgreSQL refuses to update a row twice in one statement; row by row,
    the second would have met the first's condition). Each value goes through its column
    type's own bind processing (a UTC check, JSON text), as SQLAlchemy binds it, and a
    value it refuses is a StatementError, as from SQLAlchemy: the caller's SQLAlchemyError.
    """
    names = tuple(rows[0])
    text, keys = _statement(statement, names)
    if len({tuple(row[key] for key in keys) for row in rows}) < len(rows):
        # A SQLAlchemyError, as the database's own refusal would be: stage 1 then
        # stores the batch's rows one by one instead of retrying it forever.
        raise sa.exc.InvalidRequestError(f"rows for {statement.table} repeat a key of {keys}")
    dialect = conn.dialect
    arrays: dict[str, list[Any]] = {}
    for name in names:
        process = statement.table.c[name].type.dialect_impl(dialect).bind_processor(dialect)
        values = [row[name] for row in rows]
        try:
            arrays[name] = values if process is None else [process(value) for value in values]
        except (TypeError, ValueError) as exc:
            raise sa.exc.StatementError(f"{name}: {exc}", text, None, exc) from exc
    return conn.exec_driver_sql(text, arrays)


@cache
def _statement(statement: sa.Insert, names: tuple[str, ...]) -> tuple[str, tuple[str, ...]]:
    """The array statement's text, and the conflict target's columns."""
    dialect = registry.load("postgresql")()
    compiled = str(statement.compile(dialect=dialect, compile_kwargs={"literal_binds": True}))
    # "INSERT ... VALUES (...) ON CONFLICT (target) DO ... [RETURNING ...]": the tail
    # as SQLAlchemy wrote it, its constants (attempts = 0) rendered as literals.
    conflict = compiled.split(" ON CONFLICT ", 1)[1]
    keys = tuple(key.strip('"') for key in conflict[1 : conflict.index(")")].split(", "))
    table = statement.table
    columns = [table.c[name] for name in names]  # a name that is no column: KeyError
    arrays = ", ".join(f"%({c.name})b::{_element_type(c, dialect)}[]" for c in columns)
    # Formatted in: the table's own names and SQLAlchemy's compiled clause; values are
    # only ever parameters.
    text = f"INSERT INTO {table.name} ({', '.join(names)}) SELECT * FROM unnest({arrays}) "  # noqa: S608
    return text + f"ON CONFLICT {conflict}", keys


def _element_type(column: sa.ColumnClause[Any], dialect: Dialect) -> str:
    # Strings are cast to text, not VARCHAR(n): an explicit cast to VARCHAR(n) cuts a
    # longer value silently, while storing text in the column refuses it, as before.
    return "TEXT" if isinstance(column.type, sa.String) else column.type.compile(dialect=dialect)
