"""Delivery workers' signs of life, kept in the database so any host can see them."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from webhooks.storage.dialect import insert
from webhooks.storage.queue import utcnow
from webhooks.storage.schema import worker_heartbeats

# A worker beats at most this often (it loops many times a second under load).
BEAT_EVERY = timedelta(seconds=5)
# A beat older than this means the worker died or is stuck; past FORGET_AFTER its row
# is removed (a worker that stopped for good: a redeploy, a scaled-down host).
STALE_AFTER = timedelta(seconds=60)
FORGET_AFTER = timedelta(days=1)


def beat(engine: Engine, owner: str, started_at: datetime, now: datetime | None = None) -> None:
    """Record that `owner` is alive now; forget workers silent for FORGET_AFTER."""
    now = now or utcnow()
    statement = insert(worker_heartbeats, engine.dialect.name)
    upsert = statement.on_conflict_do_update(
        index_elements=["owner"], set_={"beat_at": statement.excluded.beat_at}
    )
    with engine.begin() as conn:
        conn.execute(upsert, {"owner": owner, "started_at": started_at, "beat_at": now})
        gone = worker_heartbeats.c.beat_at < now - FORGET_AFTER
        conn.execute(sa.delete(worker_heartbeats).where(gone))


def stop(engine: Engine, owner: str) -> None:
    """A worker stopping cleanly takes its row away (it is not a dead worker)."""
    with engine.begin() as conn:
        conn.execute(sa.delete(worker_heartbeats).where(worker_heartbeats.c.owner == owner))


def workers(engine: Engine, now: datetime | None = None) -> dict[str, Any]:
    """How many workers beat recently, how many went quiet, and the newest beat's age."""
    now = now or utcnow()
    with engine.connect() as conn:
        beats = list(conn.execute(sa.select(worker_heartbeats.c.beat_at)).scalars())
    live = [b for b in beats if b >= now - STALE_AFTER]
    newest = max(beats, default=None)
    return {
        "live": len(live),
        "stale": len(beats) - len(live),
        "last_beat_seconds": round((now - newest).total_seconds(), 1) if newest else None,
    }
