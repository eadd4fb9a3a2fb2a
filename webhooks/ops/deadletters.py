"""Dead letters of both stages: list, show, retry after a fix, or discard for good.

Stage 1's dead letters are inbox rows its mapper refused (or could not store); stage
2's are outbox operations Customer.io refused or that failed past
DELIVERY_MAX_AGE_HOURS. A reference names the stage and the row: `inbox:42`,
`outbox:17`. Retrying puts rows back in their queue with a fresh round of attempts;
discarding keeps them, marked `discarded`, so a provider's retry of the same delivery
is still a duplicate and the same fact is not queued again.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from webhooks.errors import WebhooksError
from webhooks.storage import inbox as inbox_store
from webhooks.storage import outbox as outbox_store
from webhooks.storage.schema import InboxState, OutboxState, inbox, outbox

STAGES = ("inbox", "outbox")


class NoSuchDeadLetter(WebhooksError, LookupError):
    """A reference that names no dead letter (wrong form, unknown id, not dead)."""


@dataclass(frozen=True)
class Filters:
    """Which dead letters a command is about; None matches everything."""

    stage: str | None = None  # "inbox" or "outbox"
    provider: str | None = None
    event_type: str | None = None
    reason: str | None = None  # a substring of the recorded reason, any case
    since: datetime | None = None


@dataclass(frozen=True)
class DeadLetter:
    """One dead letter as the list shows it: no payload, no personal data but ids."""

    ref: str
    provider: str | None
    event_type: str | None
    name: str | None  # the canonical event (stage 2), when it is one
    person_id: str | None
    reason: str
    attempts: int
    at: datetime | None  # received (stage 1), last failed or created (stage 2)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "ref": self.ref,
            "provider": self.provider,
            "type": self.event_type,
            "name": self.name,
            "person_id": self.person_id,
            "reason": self.reason,
            "attempts": self.attempts,
            "at": self.at.isoformat() if self.at else None,
        }


def parse_ref(ref: str) -> tuple[str, int]:
    """`inbox:42` -> ("inbox", 42); NoSuchDeadLetter when it is not of that form."""
    stage, _, number = ref.partition(":")
    if stage not in STAGES or not number.isdigit():
        raise NoSuchDeadLetter(f"{ref!r} is not a dead-letter reference (inbox:ID or outbox:ID)")
    return stage, int(number)


def find(engine: Engine, filters: Filters, limit: int | None = None) -> list[DeadLetter]:
    """Dead letters matching `filters`, oldest first, stage 1 before stage 2."""
    found: list[DeadLetter] = []
    with engine.connect() as conn:
        if filters.stage in (None, "inbox"):
            found += [_inbox_letter(row) for row in conn.execute(_inbox_query(filters, limit))]
        if filters.stage in (None, "outbox"):
            found += [_outbox_letter(row) for row in conn.execute(_outbox_query(filters, limit))]
    return found[:limit] if limit is not None else found


def show(engine: Engine, ref: str) -> dict[str, Any]:
    """Everything stored about one dead letter (payloads unmasked: the caller masks)."""
    stage, number = parse_ref(ref)
    table = inbox if stage == "inbox" else outbox
    with engine.connect() as conn:
        row = conn.execute(sa.select(table).where(table.c.id == number)).first()
        source = None
        if row is not None and stage == "outbox" and row.inbox_id is not None:
            source = conn.execute(
                sa.select(inbox.c.provider, inbox.c.event_type, inbox.c.delivery_id).where(
                    inbox.c.id == row.inbox_id
                )
            ).first()
    if row is None or row.state != "dead":
        raise NoSuchDeadLetter(f"{ref} is not a dead letter")
    if stage == "inbox":
        return {
            "ref": ref,
            "stage": "1 (mapping)",
            "provider": row.provider,
            "account": row.account,
            "type": row.event_type,
            "delivery_id": row.delivery_id,
            "received_at": row.received_at.isoformat(),
            "attempts": row.attempts,
            "reason": row.last_error,
            "body": _json_or_text(row.body),
        }
    return {
        "ref": ref,
        "stage": "2 (delivery)",
        "source": f"inbox:{row.inbox_id}" if row.inbox_id is not None else None,
        "provider": source.provider if source else None,
        "type": source.event_type if source else None,
        "delivery_id": source.delivery_id if source else None,
        "op_id": row.op_id,
        "kind": row.kind,
        "person_id": row.person_id,
        "created_at": row.created_at.isoformat(),
        "failed_at": row.failed_at.isoformat() if row.failed_at else None,
        "attempts": row.attempts,
        "last_status": row.last_status,
        "reason": row.last_error,
        "payload": row.payload,
    }


def retry(engine: Engine, refs: Iterable[str]) -> dict[str, int]:
    """Put the named dead letters back in their queues; how many per stage."""
    ids = _ids(engine, refs)
    return {
        "inbox": inbox_store.requeue_dead(engine, ids["inbox"]) if ids["inbox"] else 0,
        "outbox": outbox_store.requeue_dead(engine, ids["outbox"]) if ids["outbox"] else 0,
    }


def discard(engine: Engine, refs: Iterable[str]) -> dict[str, int]:
    """Mark the named dead letters discarded (kept for dedup, never retried)."""
    ids = _ids(engine, refs)
    counts = {}
    with engine.begin() as conn:
        for stage, table, dead, gone in (
            ("inbox", inbox, InboxState.DEAD, InboxState.DISCARDED),
            ("outbox", outbox, OutboxState.DEAD, OutboxState.DISCARDED),
        ):
            counts[stage] = 0
            if ids[stage]:
                statement = (
                    sa.update(table)
                    .where(table.c.id.in_(ids[stage]), table.c.state == dead)
                    .values(state=gone)
                )
                counts[stage] = conn.execute(statement).rowcount or 0
    return counts


# --- queries ------------------------------------------------------------------------------


def _inbox_query(filters: Filters, limit: int | None) -> sa.Select[Any]:
    query = sa.select(
        inbox.c.id,
        inbox.c.provider,
        inbox.c.event_type,
        inbox.c.last_error,
        inbox.c.attempts,
        inbox.c.received_at,
    ).where(inbox.c.state == InboxState.DEAD)
    if filters.provider:
        query = query.where(inbox.c.provider == filters.provider)
    if filters.event_type:
        query = query.where(inbox.c.event_type == filters.event_type)
    if filters.reason:
        query = query.where(sa.func.lower(inbox.c.last_error).contains(filters.reason.lower()))
    if filters.since:
        query = query.where(inbox.c.received_at >= filters.since)
    return query.order_by(inbox.c.id).limit(limit)


def _outbox_query(filters: Filters, limit: int | None) -> sa.Select[Any]:
    source = sa.outerjoin(outbox, inbox, outbox.c.inbox_id == inbox.c.id)
    when = sa.func.coalesce(outbox.c.failed_at, outbox.c.created_at)
    query = (
        sa.select(
            outbox.c.id,
            inbox.c.provider,
            inbox.c.event_type,
            outbox.c.payload,
            outbox.c.person_id,
            outbox.c.last_status,
            outbox.c.last_error,
            outbox.c.attempts,
            when.label("at"),
        )
        .select_from(source)
        .where(outbox.c.state == OutboxState.DEAD)
    )
    if filters.provider:
        query = query.where(inbox.c.provider == filters.provider)
    if filters.event_type:
        query = query.where(inbox.c.event_type == filters.event_type)
    if filters.reason:
        text = sa.func.lower(
            sa.func.coalesce(sa.cast(outbox.c.last_status, sa.String), "")
            + " "
            + sa.func.coalesce(outbox.c.last_error, "")
        )
        query = query.where(text.contains(filters.reason.lower()))
    if filters.since:
        query = query.where(when >= filters.since)
    return query.order_by(outbox.c.id).limit(limit)


def _inbox_letter(row: Any) -> DeadLetter:
    return DeadLetter(
        ref=f"inbox:{row.id}",
        provider=row.provider,
        event_type=row.event_type,
        name=None,
        person_id=None,
        reason=_first_line(row.last_error),
        attempts=row.attempts,
        at=row.received_at,
    )


def _outbox_letter(row: Any) -> DeadLetter:
    payload = row.payload if isinstance(row.payload, dict) else {}
    status = f"Customer.io {row.last_status}: " if row.last_status else ""
    return DeadLetter(
        ref=f"outbox:{row.id}",
        provider=row.provider,
        event_type=row.event_type,
        name=payload.get("name"),
        person_id=row.person_id,
        reason=status + _first_line(row.last_error),
        attempts=row.attempts,
        at=row.at,
    )


def _ids(engine: Engine, refs: Iterable[str]) -> dict[str, list[int]]:
    """The ids per stage of `refs`, every one checked to be a dead letter first."""
    ids: dict[str, list[int]] = {"inbox": [], "outbox": []}
    for ref in refs:
        stage, number = parse_ref(ref)
        ids[stage].append(number)
    with engine.connect() as conn:
        for stage, table in (("inbox", inbox), ("outbox", outbox)):
            if not ids[stage]:
                continue
            dead = set(
                conn.scalars(
                    sa.select(table.c.id).where(table.c.id.in_(ids[stage]), table.c.state == "dead")
                )
            )
            missing = sorted(set(ids[stage]) - dead)
            if missing:
                names = ", ".join(f"{stage}:{number}" for number in missing)
                raise NoSuchDeadLetter(f"not dead letters: {names}")
    return ids


def _first_line(text: str | None) -> str:
    return (text or "no reason recorded").splitlines()[0][:200]


def _json_or_text(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        return body.decode("utf-8", "replace")
