"""Delivery workers' signs of life, kept in the database so any host can see them."""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from webhooks.storage.dialect import insert
from webhooks.storage.queue import utcnow
from webhooks.storage.schema import worker_heartbeats

# What a worker's delivery is doing, as its heartbeat says: sending to Customer.io,
# recording without sending (no credentials), paused because Customer.io refused the
# credentials (401/403) or is failing (5xx, 429, timeouts), or nothing because it only
# maps (WORKER_STAGE=map: it counts as no sender). Worst first: `webhooks status`
# reports the worst state any live worker is in.
DELIVERY_STATES = ("paused_credentials", "paused_outage", "sending", "dry_run", "map_only")

# A worker beats at most this often (it loops many times a second under load).
BEAT_EVERY = timedelta(seconds=5)
# A beat older than this means the worker died or is stuck; past FORGET_AFTER its row
# is removed (a worker that stopped for good: a redeploy, a scaled-down host).
STALE_AFTER = timedelta(seconds=60)
FORGET_AFTER = timedelta(days=1)


def beat(
    engine: Engine,
    owner: str,
    started_at: datetime,
    delivery: str | None = None,
    now: datetime | None = None,
) -> None:
    """Record that `owner` is alive now and what its delivery is doing (DELIVERY_STATES);
    forget workers silent for FORGET_AFTER."""
    now = now or utcnow()
    statement = insert(worker_heartbeats, engine.dialect.name)
    upsert = statement.on_conflict_do_update(
        index_elements=["owner"],
        set_={"beat_at": statement.excluded.beat_at, "delivery": statement.excluded.delivery},
    )
    row = {"owner": owner, "started_at": started_at, "beat_at": now, "delivery": delivery}
    with engine.begin() as conn:
        conn.execute(upsert, row)
        gone = worker_heartbeats.c.beat_at < now - FORGET_AFTER
        conn.execute(sa.delete(worker_heartbeats).where(gone))


def stop(engine: Engine, owner: str) -> None:
    """A worker stopping cleanly takes its row away (it is not a dead worker)."""
    with engine.begin() as conn:
        conn.execute(sa.delete(worker_heartbeats).where(worker_heartbeats.c.owner == owner))


def workers(engine: Engine, now: datetime | None = None) -> dict[str, Any]:
    """How many workers beat recently, how many went quiet, the newest beat's age, and
    the live workers by delivery state."""
    now = now or utcnow()
    query = sa.select(worker_heartbeats.c.beat_at, worker_heartbeats.c.delivery)
    with engine.connect() as conn:
        beats = list(conn.execute(query))
    live = [row for row in beats if row.beat_at >= now - STALE_AFTER]
    newest = max((row.beat_at for row in beats), default=None)
    return {
        "live": len(live),
        "stale": len(beats) - len(live),
        "last_beat_seconds": round((now - newest).total_seconds(), 1) if newest else None,
        "delivery": dict(Counter(row.delivery or "unknown" for row in live)),
    }
