"""Many rows in one upsert, bound without SQLAlchemy's per-row parameter handling.

SQLAlchemy runs an INSERT of many rows either as one execution per row or as one text
with a placeholder per value (INSERT ... RETURNING), and in both it binds each row's
parameters in Python, one dictionary at a time. Here each column's values go through
the column type's bind processing once, as a list (a UTC check, JSON text), and the
rows go to the driver in one execution:

- PostgreSQL: `INSERT ... SELECT * FROM unnest(arrays)`, one binary array per column,
  so the text is short and the same whatever the number of rows (psycopg caches short
  texts only; text arrays are escaped element by element in Python). 12 % and more of
  stage 1's time on PostgreSQL went to the other forms.
- SQLite: `INSERT ... VALUES (?, ...), (?, ...)` with the values as one flat tuple, up
  to SQLITE_ROWS_PER_STATEMENT rows a statement. SQLAlchemy's per-row binding was about
  a tenth of stage 1's CPU on SQLite; SQLite's own work for the same rows is a third of
  that. (One JSON parameter unpacked by json_each took SQLite twice as long as this.)

Stage 1 writes its state and outbox rows so, on both backends.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import cache, lru_cache
from itertools import chain
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import registry
from sqlalchemy.engine import Connection, Dialect

# Rows in one SQLite statement, at most: SQLite allows 32,766 parameters in one
# statement (SQLITE_MAX_VARIABLE_NUMBER since 3.32), so wider rows go fewer at a time.
SQLITE_ROWS_PER_STATEMENT = 1000
SQLITE_MAX_PARAMETERS = 32_766


def upsert(
    conn: Connection, statement: sa.Insert, rows: Sequence[dict[str, Any]]
) -> list[sa.Row[Any]]:
    """`statement` (an INSERT ... ON CONFLICT of `conn`'s dialect) for all `rows` at
    once; what its RETURNING clause returns (nothing without one). Its ON CONFLICT
    clause and RETURNING are kept as compiled, so each table's conflict rule is
    written once.

    Every row names the same columns, as for any executemany, and no two the same
    conflict key (PostgreSQL refuses to update a row twice in one statement; row by row,
    the second would have met the first's condition). Each value goes through its column
    type's own bind processing (a UTC check, JSON text), as SQLAlchemy binds it, and a
    value it refuses is a StatementError, as from SQLAlchemy: the caller's SQLAlchemyError.
    """
    names = tuple(rows[0])
    dialect = conn.dialect
    head, tail, keys = _statement(statement, names, dialect.name)
    if len({tuple(row[key] for key in keys) for row in rows}) < len(rows):
        # A SQLAlchemyError, as the database's own refusal would be: stage 1 then
        # stores the batch's rows one by one instead of retrying it forever.
        raise sa.exc.InvalidRequestError(f"rows for {statement.table} repeat a key of {keys}")
    columns: dict[str, list[Any]] = {}
    for name in names:
        process = statement.table.c[name].type.dialect_impl(dialect).bind_processor(dialect)
        values = [row[name] for row in rows]
        try:
            columns[name] = values if process is None else _bound(process, values)
        except (TypeError, ValueError) as exc:
            raise sa.exc.StatementError(f"{name}: {exc}", head + tail, None, exc) from exc
    if dialect.name == "postgresql":
        return _rows(conn.exec_driver_sql(head + tail, columns))
    returned: list[sa.Row[Any]] = []
    table = list(zip(*columns.values(), strict=True))
    per_statement = min(SQLITE_ROWS_PER_STATEMENT, SQLITE_MAX_PARAMETERS // len(names))
    for start in range(0, len(table), per_statement):
        chunk = table[start : start + per_statement]
        text = head + _sqlite_values(len(names), len(chunk)) + tail
        returned += _rows(conn.exec_driver_sql(text, tuple(chain.from_iterable(chunk))))
    return returned


def _bound(process: Callable[[Any], Any], values: list[Any]) -> list[Any]:
    """`values` bound by `process`, each distinct object once: a batch's rows share
    one `now` in each of their timestamp columns."""
    done: dict[int, Any] = {}
    bound = []
    for value in values:
        key = id(value)
        if key not in done:
            done[key] = process(value)
        bound.append(done[key])
    return bound


def _rows(result: sa.CursorResult[Any]) -> list[sa.Row[Any]]:
    return list(result.fetchall()) if result.returns_rows else []


@cache
def _statement(
    statement: sa.Insert, names: tuple[str, ...], dialect_name: str
) -> tuple[str, str, tuple[str, ...]]:
    """The statement's text before and after its rows, and the conflict target's columns."""
    dialect = registry.load(dialect_name)()
    compiled = str(statement.compile(dialect=dialect, compile_kwargs={"literal_binds": True}))
    # "INSERT ... VALUES (...) ON CONFLICT (target) DO ... [RETURNING ...]": the tail
    # as SQLAlchemy wrote it, its constants (attempts = 0) rendered as literals.
    conflict = compiled.split(" ON CONFLICT ", 1)[1]
    keys = tuple(key.strip('"') for key in conflict[1 : conflict.index(")")].split(", "))
    table = statement.table
    columns = [table.c[name] for name in names]  # a name that is no column: KeyError
    quoted = ", ".join(dialect.identifier_preparer.quote(name) for name in names)
    # Formatted in: the table's own names and SQLAlchemy's compiled clause; values are
    # only ever parameters.
    head = f"INSERT INTO {table.name} ({quoted}) "
    if dialect_name == "postgresql":
        arrays = ", ".join(f"%({c.name})b::{_element_type(c, dialect)}[]" for c in columns)
        head += f"SELECT * FROM unnest({arrays})"  # noqa: S608
    else:
        head += "VALUES "
    return head, f" ON CONFLICT {conflict}", keys


@lru_cache(maxsize=64)
def _sqlite_values(width: int, count: int) -> str:
    row = "(" + ", ".join("?" * width) + ")"
    return ", ".join([row] * count)


def _element_type(column: sa.ColumnClause[Any], dialect: Dialect) -> str:
    # Strings are cast to text, not VARCHAR(n): an explicit cast to VARCHAR(n) cuts a
    # longer value silently, while storing text in the column refuses it, as before.
    return "TEXT" if isinstance(column.type, sa.String) else column.type.compile(dialect=dialect)
