"""Bulk updates in short transactions, so maintenance never holds the database long.

On SQLite every webhook arriving meanwhile waits for a write transaction, so a job
over many rows (a purge, a requeue) updates them a chunk at a time, each chunk its
own transaction.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

CHUNK = 1000  # rows per transaction


def update_in_chunks(
    engine: Engine,
    table: sa.Table,
    where: sa.ColumnElement[bool],
    values: dict[str, Any],
    dry_run: bool = False,
) -> int:
    """Set `values` on every row matching `where` (which the update must make false,
    or the loop would not end); how many. With `dry_run`, only count them."""
    if dry_run:
        with engine.connect() as conn:
            return int(conn.scalar(sa.select(sa.func.count()).select_from(table).where(where)) or 0)
    done = 0
    while True:
        with engine.begin() as conn:
            ids = list(conn.scalars(sa.select(table.c.id).where(where).limit(CHUNK)))
            if not ids:
                return done
            conn.execute(sa.update(table).where(table.c.id.in_(ids)).values(**values))
        done += len(ids)
