"""Replay: map stored webhooks again (after a mapper fix or a settings change) and
deliver what changed, in the backfill lane, so live traffic always goes first.

The rows go back to pending in lane 1; the worker maps them again like any delivery.
Facts already queued or delivered keep their outbox rows (the semantic key is unique),
so only what the new mapping adds is sent: a new event, an identify whose attributes
changed. `force` also puts the operations these rows produced before back in the
queue, to be sent again (Customer.io deduplicates an event by its id, so a forced
resend reaches journeys only if it had not arrived). Purged deliveries (no body left)
cannot be replayed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from webhooks.storage.queue import utcnow
from webhooks.storage.schema import InboxState, Lane, OutboxState, inbox, outbox

REPLAY_LANE = Lane.REPLAY
CHUNK = 500
# Rows a replay takes up: mapped, dead-lettered or discarded. Pending and waiting
# rows are already on their way; replaying them would only race the worker.
REPLAYABLE = (InboxState.DONE, InboxState.DEAD, InboxState.DISCARDED)
# Operations `force` sends again.
SENT_BEFORE = (OutboxState.DELIVERED, OutboxState.DRY_RUN, OutboxState.DEAD)


@dataclass(frozen=True)
class Selection:
    """Which stored webhooks to replay: received in [since, until)."""

    since: datetime
    until: datetime | None = None
    provider: str | None = None
    event_type: str | None = None

    def where(self) -> list[sa.ColumnElement[bool]]:
        """The conditions on the inbox."""
        found = [
            inbox.c.state.in_(REPLAYABLE),
            inbox.c.received_at >= self.since,
            sa.func.length(inbox.c.body) > 0,
        ]
        if self.until is not None:
            found.append(inbox.c.received_at < self.until)
        if self.provider:
            found.append(inbox.c.provider == self.provider)
        if self.event_type:
            found.append(inbox.c.event_type == self.event_type)
        return found


def count(engine: Engine, selection: Selection) -> dict[str, int]:
    """How many stored webhooks the selection takes, by type (for --dry-run)."""
    query = (
        sa.select(inbox.c.provider, inbox.c.event_type, sa.func.count())
        .where(*selection.where())
        .group_by(inbox.c.provider, inbox.c.event_type)
    )
    with engine.connect() as conn:
        return {f"{provider} {kind}": int(n) for provider, kind, n in conn.execute(query)}


def requeue(
    engine: Engine,
    selection: Selection,
    force: bool = False,
    progress: Callable[[int], Any] = lambda _n: None,
) -> int:
    """Put the selected webhooks back to be mapped, in the replay lane; how many."""
    total = 0
    for ids in _chunks(engine, selection):
        with engine.begin() as conn:
            conn.execute(
                sa.update(inbox)
                .where(inbox.c.id.in_(ids), *selection.where())
                .values(
                    state=InboxState.PENDING,
                    lane=REPLAY_LANE,
                    attempts=0,
                    last_error=None,
                    lease_owner=None,
                    lease_until=None,
                )
            )
            if force:
                now = utcnow()
                conn.execute(
                    sa.update(outbox)
                    .where(
                        outbox.c.inbox_id.in_(ids),
                        outbox.c.state.in_(SENT_BEFORE),
                        outbox.c.purged_at.is_(None),  # nothing left to send
                    )
                    .values(
                        state=OutboxState.PENDING,
                        lane=REPLAY_LANE,
                        attempts=0,
                        next_attempt_at=now,
                        created_at=now,
                        solo=False,
                        lease_owner=None,
                        lease_until=None,
                    )
                )
        total += len(ids)
        progress(len(ids))
    return total


def remaining(engine: Engine) -> int:
    """Replay-lane work not finished yet: rows to map plus operations to send."""
    with engine.connect() as conn:
        rows = conn.scalar(
            sa.select(sa.func.count()).where(
                inbox.c.lane == REPLAY_LANE,
                inbox.c.state.in_((InboxState.PENDING, InboxState.FAILED)),
            )
        )
        ops = conn.scalar(
            sa.select(sa.func.count()).where(
                outbox.c.lane == REPLAY_LANE, outbox.c.state == OutboxState.PENDING
            )
        )
    return int(rows or 0) + int(ops or 0)


def _chunks(engine: Engine, selection: Selection) -> Iterator[list[int]]:
    """Selected ids in chunks, by id: each chunk its own short transaction."""
    after = 0
    while True:
        with engine.connect() as conn:
            ids = list(
                conn.scalars(
                    sa.select(inbox.c.id)
                    .where(*selection.where(), inbox.c.id > after)
                    .order_by(inbox.c.id)
                    .limit(CHUNK)
                )
            )
        if not ids:
            return
        yield ids
        after = ids[-1]
