"""The durable outbox: one row per business fact, written by stage 1, sent by stage 2."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import datetime
from functools import cache
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from webhooks.core.operations import OperationKind
from webhooks.storage import arrays
from webhooks.storage.bulk import update_in_chunks
from webhooks.storage.dialect import insert
from webhooks.storage.queue import utcnow
from webhooks.storage.schema import OutboxState, outbox

# Replaced when a fact is mapped again while its operation is dead.
_REVIVED = (
    "payload",
    "person_id",
    "kind",
    "state",
    "last_error",
    "op_id",
    "occurred_at",
    "lane",
    "inbox_id",
    "subject",
    "next_attempt_at",
    "created_at",
)


@cache
def _upsert(dialect_name: str) -> sa.Insert:
    """INSERT ... ON CONFLICT (op_key) ... RETURNING op_key, built once per dialect.

    The same fact again adds nothing while its operation is pending or delivered. A
    dead one is replaced by the new mapping: a report that names the person a first one
    lacked (a refund naming no customer), or a replay after a mapper fix. Building this
    statement per operation cost more than half of stage 1's CPU.
    """
    statement = insert(outbox, dialect_name)
    return statement.on_conflict_do_update(
        index_elements=["op_key"],
        set_={
            **{name: getattr(statement.excluded, name) for name in _REVIVED},
            "attempts": 0,
            "solo": False,
        },
        where=outbox.c.state == OutboxState.DEAD,
    ).returning(outbox.c.op_key)


def write_operations(conn: Connection, values: list[dict[str, Any]]) -> set[str]:
    """Insert outbox rows; a fact already queued or delivered adds nothing (see _upsert).

    Returns the keys written (new, or a dead operation revived): the caller knows what
    it created without reading it back.
    """
    if not values:
        return set()
    # One statement whatever the number of rows: webhooks.storage.arrays.
    return {row[0] for row in arrays.upsert(conn, _upsert(conn.dialect.name), values)}


EVENT_KINDS = (OperationKind.EVENT, OperationKind.ANONYMOUS_EVENT)


def retime(item: dict[str, Any], earlier: dict[str, Any]) -> dict[str, Any]:
    """`item` (an event row) at the time, and with the id, of an earlier report of its fact.

    What it says stays as first mapped; only its time and id become the fact's earliest,
    so re-ingesting the same history in any order gives the same ids.
    """
    payload = {**item["payload"], "id": earlier["op_id"]}
    if "timestamp" in payload and "timestamp" in earlier["payload"]:
        payload["timestamp"] = earlier["payload"]["timestamp"]
    return {
        **item,
        "op_id": earlier["op_id"],
        "occurred_at": earlier["occurred_at"],
        "payload": payload,
    }


@cache
def _queued_events() -> sa.Select[Any]:
    """Queued events never attempted, of some op keys, not written by this batch.

    Built once: building the statement per batch cost more than running it.
    """
    columns = (outbox.c.id, outbox.c.op_key, outbox.c.op_id, outbox.c.occurred_at)
    return sa.select(*columns, outbox.c.payload).where(
        outbox.c.op_key.in_(sa.bindparam("keys", expanding=True)),
        outbox.c.state == OutboxState.PENDING,
        outbox.c.attempts == 0,
        outbox.c.created_at < sa.bindparam("now"),  # this batch's rows are written at now
    )


def correct_times(conn: Connection, values: list[dict[str, Any]], now: datetime) -> int:
    """Move queued events back to an earlier-dated report of their fact; how many.

    Only an event never attempted and not leased: once a request may have reached
    Customer.io, its id stays, or a retry under a new id could be a second event.
    """
    reported = {v["op_key"]: v for v in values if v["kind"] in EVENT_KINDS}
    moved = 0
    keys = list(reported)
    for start in range(0, len(keys), 500):
        params = {"keys": keys[start : start + 500], "now": now}
        for row in conn.execute(_queued_events(), params):
            earlier = reported[row.op_key]
            if earlier["occurred_at"] >= row.occurred_at or earlier["op_id"] == row.op_id:
                continue
            fixed = retime({"payload": dict(row.payload)}, earlier)
            moved += conn.execute(
                sa.update(outbox)
                .where(
                    outbox.c.id == row.id,
                    outbox.c.state == OutboxState.PENDING,
                    outbox.c.attempts == 0,
                    # Never claimed: a worker that died mid-send leaves its name behind.
                    outbox.c.lease_owner.is_(None),
                )
                .values(
                    op_id=fixed["op_id"], occurred_at=fixed["occurred_at"], payload=fixed["payload"]
                )
            ).rowcount
    return moved


def due_at_least(engine: Engine, lanes: Sequence[int], count: int) -> bool:
    """Are `count` or more operations of `lanes` due to be sent now? (Reads at most
    `count` index entries.)"""
    due = (
        sa.select(outbox.c.id)
        .where(
            outbox.c.state == OutboxState.PENDING,
            outbox.c.lane.in_(lanes),
            outbox.c.next_attempt_at <= utcnow(),
        )
        .limit(count)
        .subquery()
    )
    with engine.connect() as conn:
        return int(conn.scalar(sa.select(sa.func.count()).select_from(due)) or 0) >= count


def due_now(engine: Engine) -> int:
    """Operations waiting out a retry are due at once (Customer.io is back); how many."""
    now = utcnow()
    with engine.begin() as conn:
        return int(
            conn.execute(
                sa.update(outbox)
                .where(
                    outbox.c.state == OutboxState.PENDING,
                    outbox.c.attempts > 0,
                    outbox.c.next_attempt_at > now,
                    outbox.c.lease_owner.is_(None),
                )
                .values(next_attempt_at=now)
            ).rowcount
            or 0
        )


def purge_pending(conn: Connection, person_id: str) -> None:
    """A redacted person's queued operations must not recreate the profile."""
    conn.execute(
        sa.update(outbox)
        .where(
            outbox.c.person_id == person_id,
            outbox.c.state == OutboxState.PENDING,
            outbox.c.kind != OperationKind.DELETE,
        )
        .values(
            state=OutboxState.DEAD, last_error="person redacted before delivery", payload={}
        )  # nothing of theirs is kept for a retry
    )


def requeue_dead(engine: Engine, ids: list[int] | None = None) -> int:
    """Put dead operations back in the queue (after a fix); all of them when `ids` is None."""
    statement = sa.update(outbox).where(outbox.c.state == OutboxState.DEAD)
    if ids is not None:
        statement = statement.where(outbox.c.id.in_(ids))
    now = utcnow()
    with engine.begin() as conn:
        # A fresh created_at restarts the max-age clock for the new round of attempts.
        result = conn.execute(
            statement.values(
                state=OutboxState.PENDING,
                next_attempt_at=now,
                created_at=now,
                attempts=0,
                solo=False,
                lease_owner=None,
                lease_until=None,
            )
        )
    return result.rowcount or 0


def reported(engine: Engine, keys: list[str]) -> set[str]:
    """Which of the operation keys `keys` are queued or were ever (in any state)."""
    if not keys:
        return set()
    with engine.connect() as conn:
        found = conn.scalars(sa.select(outbox.c.op_key).where(outbox.c.op_key.in_(set(keys))))
        return set(found)


def summary(row: Any) -> dict[str, Any]:
    """What a log line may say about an operation: never its attributes or payload, and
    a person id that is an email (GUEST_POLICY=email) only as a digest."""
    payload = row.payload if isinstance(row.payload, dict) else {}
    person = row.person_id
    if person and "@" in person:
        person = "email-sha256:" + hashlib.sha256(person.encode()).hexdigest()[:16]
    return {"op_id": row.op_id, "kind": row.kind, "name": payload.get("name"), "person_id": person}


PURGED = {"purged": True}  # what a finished operation's payload becomes


def purge_payloads(engine: Engine, created_before: datetime, dry_run: bool = False) -> int:
    """Replace the payloads (names, emails, attributes) of finished operations created
    before `created_before`; how many. The rows and their keys stay, so a fact
    delivered once is still never queued again. Pending and dead ones keep theirs."""
    done = (
        OutboxState.DELIVERED,
        OutboxState.DRY_RUN,
        OutboxState.SUPPRESSED,
        OutboxState.DISCARDED,
    )
    finished = sa.and_(
        outbox.c.state.in_(done),
        outbox.c.created_at < created_before,
        outbox.c.purged_at.is_(None),
    )
    purged = {"payload": PURGED, "purged_at": utcnow()}
    return update_in_chunks(engine, outbox, finished, purged, dry_run)
