"""INSERT ... ON CONFLICT, the one construct SQLAlchemy Core spells per backend."""

from __future__ import annotations

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
