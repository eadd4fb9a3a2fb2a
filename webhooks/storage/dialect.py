"""The constructs SQLAlchemy Core spells per backend: INSERT ... ON CONFLICT, IN lists."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite


def insert(table: sa.Table, dialect_name: str) -> postgresql.Insert | sqlite.Insert:
    """An INSERT for `table` that supports on_conflict_do_nothing / _do_update.

    Callers build their statement once per dialect (functools.cache) and execute it
    with parameters: building one per row cost more CPU than the insert itself.
    """
    if dialect_name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


def one_of(
    column: sa.ColumnElement[Any], values: Iterable[Any], dialect_name: str
) -> sa.ColumnElement[bool]:
    """`column IN (values)`; on PostgreSQL `column = ANY(:array)`, one parameter.

    An IN list renders a placeholder per value: a new statement text for every list
    length, which psycopg parses again (a third of stage 1's time on PostgreSQL, with
    batches of a hundred) and PostgreSQL plans again. An array keeps one text.
    """
    values = list(values)
    if dialect_name == "postgresql":
        array = sa.bindparam(None, values, type_=postgresql.ARRAY(column.type))
        return column == sa.any_(array)
    # One expanding parameter: `in_` given the list itself coerces every value into a
    # parameter of its own first (2-3 % of stage 1's time on SQLite).
    return column.in_(sa.bindparam(None, values, type_=column.type, expanding=True))
