"""Waiting deliveries: stored webhooks that name their person only by a key no event
has linked yet (a refund naming an order the service never saw). Each wakes by itself
when a later event links its key; these are the operator's views and levers."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from webhooks.ops.rows import delivery_ref
from webhooks.storage.schema import InboxState, inbox, inbox_waits


def find(
    engine: Engine,
    provider: str | None = None,
    event_type: str | None = None,
    received_before: datetime | None = None,
    limit: int | None = None,
) -> list[dict[str, Any]]:
    """Waiting rows, oldest first, with the key each waits for (ids, no personal data)."""
    waits = (
        sa.select(inbox_waits.c.inbox_id, sa.func.min(inbox_waits.c.key).label("key"))
        .group_by(inbox_waits.c.inbox_id)
        .subquery()
    )
    query = (
        sa.select(
            inbox.c.id,
            inbox.c.provider,
            inbox.c.account,
            inbox.c.event_type,
            inbox.c.delivery_id,
            inbox.c.received_at,
            waits.c.key,
        )
        .select_from(sa.outerjoin(inbox, waits, waits.c.inbox_id == inbox.c.id))
        .where(inbox.c.state == InboxState.WAITING)
    )
    if provider:
        query = query.where(inbox.c.provider == provider)
    if event_type:
        query = query.where(inbox.c.event_type == event_type)
    if received_before:
        query = query.where(inbox.c.received_at < received_before)
    with engine.connect() as conn:
        rows = conn.execute(query.order_by(inbox.c.id).limit(limit))
        return [delivery_ref(row) | {"waits_for": row.key} for row in rows]
