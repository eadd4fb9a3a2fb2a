"""Stage 1: claim pending inbox rows, map them, and write their outbox operations.

Mapping is pure and runs outside any transaction. Then one transaction per batch
resolves people and updates their state (webhooks.stage1.state.step), writes the outbox rows
and marks the inbox rows done, so a crash leaves all of it or none of it; the outbox's
unique op_key makes a repeat add nothing.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from types import SimpleNamespace
from typing import Any

import sqlalchemy as sa
import structlog
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from mappers.actions import Action, RedactPerson, RedactShop
from mappers.errors import MappingError
from webhooks.core.hashing import bounded
from webhooks.core.ids import op_ulid
from webhooks.core.metrics import MAPPED, MAPPING_FAILED
from webhooks.core.operations import Operation, OperationKind
from webhooks.errors import ProcessingError
from webhooks.providers.base import Enricher
from webhooks.stage1.enrich import enrich_rows
from webhooks.stage1.mapping import map_row
from webhooks.stage1.state.locks import StateLocks, contended
from webhooks.stage1.state.step import MappedDelivery, StateConfig, StateStep
from webhooks.stage1.state.store import StateChanged, begin_state, begin_writes
from webhooks.storage.inbox import add_wait
from webhooks.storage.outbox import (
    EVENT_KINDS,
    correct_times,
    purge_pending,
    retime,
    summary,
    write_operations,
)
from webhooks.storage.queue import (
    DEFAULT_LEASE,
    Turn,
    claim,
    release,
    unsynced,
    utcnow,
    writing,
)
from webhooks.storage.schema import MAX_OP_KEY, InboxState, Lane, OutboxState, inbox

log = structlog.get_logger("webhooks.process")
MAX_STORE_ATTEMPTS = 5  # a row whose operations the database keeps refusing goes dead
STATE_ATTEMPTS = 3  # computing a batch again after another worker saved state meanwhile


Mapped = list[tuple[sa.Row[Any], list[Action]]]  # rows and their actions
Failed = list[tuple[sa.Row[Any], str]]  # rows that cannot be mapped, and why


class LeaseLost(ProcessingError):
    """Another worker took the row over (our lease expired); our writes are rolled back."""


def process_batch(
    engine: Engine,
    owner: str,
    configs: Mapping[str, Any],
    limit: int = 100,
    lease: timedelta = DEFAULT_LEASE,
    dry_run: bool = False,
    state: StateConfig | None = None,
    enrichers: Mapping[str, Enricher] | None = None,
    lanes: Sequence[int] | None = None,
    turn: Turn = contextlib.nullcontext,
) -> int:
    """Map up to `limit` pending inbox rows (live lane first; only `lanes` when given)
    in one transaction, holding `turn` only while it writes (not while it maps and
    computes person state).

    `configs` holds each provider's mapper config by name, `enrichers` the lookups of
    the providers that have them (webhooks.stage1.setup builds both from settings).
    In a dry run operations are recorded straight as `dry_run`: there is nothing to
    send, so claiming and updating them again would only be writes that slow ingest.
    """
    rows = claim(
        engine,
        inbox,
        owner,
        limit,
        lease,
        # Lane by lane; in each, new rows before those whose last attempt failed.
        queues=[
            (inbox.c.lane == lane, inbox.c.state == state)
            for lane in (Lane if lanes is None else lanes)
            for state in (InboxState.PENDING, InboxState.FAILED)
        ],
        order_by=[inbox.c.id],
        turn=turn,
    )
    if not rows:
        return 0
    # Data the payloads lack (Stripe's line items, customer metadata), fetched and stored
    # with the rows; a row whose source could not answer yet keeps its lease until later.
    enriched = enrich_rows(engine, owner, rows, enrichers or {})
    deferred = set(enriched.deferred)
    mapped: Mapped = []
    failed: Failed = []
    for row in rows:  # pure work first, outside any transaction
        if row.id in deferred:
            continue
        try:
            mapped.append((row, map_row(row, configs, enriched.enrichment.get(row.id))))
        except MappingError as exc:
            failed.append((row, exc.reason))
    writer = _Writer(engine, owner, dry_run, state or StateConfig(), turn)
    try:
        writer.store(mapped, failed)
    except LeaseLost:
        # Another worker took some of these over; it will map them again, and the
        # outbox's unique keys make a repeat harmless. Ours are rolled back.
        log.warning("lease_lost", stage="process", rows=len(rows))
    except StateChanged:
        # Other workers kept saving state while this one computed: nothing was
        # written; the rows go back to the queue at once (not when the lease ends).
        log.warning("state_contended", rows=len(rows))
        with writing(engine, turn) as conn:
            release(conn, inbox, [row.id for row, _ in (*mapped, *failed)], owner)
    except SQLAlchemyError:
        # One row the database refuses must not hold up the others: store them one by
        # one, and count the refusal against the row that caused it.
        writer.store_one_by_one(mapped, failed)
    for row, reason in failed:
        MAPPING_FAILED.labels(row.provider, row.event_type).inc()
        log.warning(
            "mapping_failed",
            inbox_id=row.id,
            provider=row.provider,
            type=row.event_type,
            reason=reason,
        )
    return len(rows)


def _erases(actions: list[Action]) -> bool:
    """Does a delivery erase people (a privacy redaction: the batch runs alone)?"""
    return any(isinstance(action, RedactPerson | RedactShop) for action in actions)


def delivery_key(row: sa.Row[Any]) -> str:
    """The inbox row's identity, from which per-delivery operation keys derive."""
    return f"{row.provider}:{row.account}:{row.event_type}:{row.delivery_id}"


@dataclass(frozen=True)
class _Writer:
    """Stores mapped batches for one worker: person state, outbox rows, inbox states."""

    engine: Engine
    owner: str
    dry_run: bool
    state: StateConfig
    turn: Turn = contextlib.nullcontext

    def store(self, mapped: Mapped, failed: Failed) -> None:
        """State, outbox rows and inbox states of a whole batch: all of it or none of it."""
        for attempt in range(1, STATE_ATTEMPTS + 1):
            try:
                return self._store_once(mapped, failed)
            except StateChanged:
                # Another worker saved state while we computed (SQLite); compute again.
                log.info("state_changed_meanwhile", rows=len(mapped))
            except SQLAlchemyError as exc:
                if not contended(exc):
                    raise
                # Lost a lock race with another worker's batch (PostgreSQL cancelled
                # this one to break a deadlock, or it waited too long): compute again.
                log.info("state_lock_contended", rows=len(mapped), attempt=attempt)
        raise StateChanged(f"state kept changing under {STATE_ATTEMPTS} attempts")

    def _store_once(self, mapped: Mapped, failed: Failed) -> None:
        now = utcnow()
        counts: Counter[tuple[str, str]] = Counter()
        for item in self._write(mapped, failed, now):
            counts[item["kind"], item["payload"].get("name") or ""] += 1
            if item["state"] == OutboxState.DRY_RUN:
                # What would have been sent, visibly: one line each, no attributes.
                log.info("dry_run_operation", **summary(SimpleNamespace(**item)))
        for (kind, name), count in counts.items():  # a label lookup per kind, not per row
            MAPPED.labels(kind, name).inc(count)

    def _write(self, mapped: Mapped, failed: Failed, now: datetime) -> list[dict[str, Any]]:
        """Write the batch; the operations it created (not facts queued before it)."""
        # The turn is taken for the writes only and given back after the commit: the
        # outer stack closes after the transaction's own block. Everything written here
        # derives from durable inbox rows: the commit need not wait for the disk.
        with contextlib.ExitStack() as held, unsynced(self.engine) as conn:
            seen = begin_state(conn)
            locks = StateLocks(conn)
            locks.begin(exclusive=any(_erases(actions) for _, actions in mapped))
            step = StateStep(conn, self.state, locks)
            outcomes = step.run(
                [
                    MappedDelivery(delivery_key(row), row.provider, actions)
                    for row, actions in mapped
                ]
            )
            # One fact reported twice within the batch is written once: what the first
            # report says, at the time (and with the id) of the earliest.
            by_key: dict[str, dict[str, Any]] = {}
            waiting: list[tuple[sa.Row[Any], str]] = []
            for (row, _), outcome in zip(mapped, outcomes, strict=True):
                if outcome.wait_on is not None:
                    waiting.append((row, outcome.wait_on))
                for op in outcome.ops:
                    item = _values(op, row, now, self.dry_run)
                    _as_history(item, row, now, self.state.backfill_live_window_seconds)
                    first = by_key.setdefault(item["op_key"], item)
                    if item["occurred_at"] < first["occurred_at"]:
                        by_key[item["op_key"]] = retime(first, item)
            # Everything above only read; from here the batch writes, briefly.
            held.enter_context(self.turn())
            begin_writes(conn, seen)
            written = write_operations(conn, list(by_key.values()))
            if len(written) < len(by_key):
                # Some fact was queued before: an earlier-dated report moves it back.
                correct_times(conn, list(by_key.values()), now)
            for pid in step.redacted:
                purge_pending(conn, pid)
            step.save()
            done = [
                row.id
                for (row, _), outcome in zip(mapped, outcomes, strict=True)
                if outcome.wait_on is None
            ]
            released = _release_waiting(conn, self.owner, waiting, now)
            released += release(
                conn,
                inbox,
                done,
                self.owner,
                state=InboxState.DONE,
                processed_at=now,
                attempts=inbox.c.attempts + 1,
                last_error=None,
            )
            for row, reason in failed:
                released += release(
                    conn,
                    inbox,
                    [row.id],
                    self.owner,
                    state=InboxState.DEAD,
                    last_error=reason,
                    attempts=inbox.c.attempts + 1,
                )
            if released != len(mapped) + len(failed):
                raise LeaseLost(
                    f"{released} of {len(mapped) + len(failed)} rows still leased to us"
                )
            woken = step.wake()
            if woken:
                log.info("deliveries_woken", rows=woken)
        return [item for key, item in by_key.items() if key in written]

    def store_one_by_one(self, mapped: Mapped, failed: Failed) -> None:
        """Store each row alone, so one the database refuses cannot hold up the rest."""
        for row, actions in mapped:
            try:
                self.store([(row, actions)], [])
            except (LeaseLost, StateChanged):
                continue
            except SQLAlchemyError as exc:
                attempts = row.attempts + 1
                outcome = InboxState.DEAD if attempts >= MAX_STORE_ATTEMPTS else InboxState.FAILED
                with writing(self.engine, self.turn) as conn:
                    release(
                        conn,
                        inbox,
                        [row.id],
                        self.owner,
                        state=outcome,
                        attempts=attempts,
                        last_error=f"storing its operations failed: {type(exc).__name__}",
                    )
                log.error("store_failed", inbox_id=row.id, error=type(exc).__name__, state=outcome)
        for row, reason in failed:
            try:
                self.store([], [(row, reason)])
            except (LeaseLost, StateChanged, SQLAlchemyError):
                log.error("store_failed", inbox_id=row.id)


def _release_waiting(
    conn: Connection, owner: str, waiting: list[tuple[sa.Row[Any], str]], now: datetime
) -> int:
    """Park rows whose person is not known yet, each under the key it waits for."""
    released = 0
    for row, key in waiting:
        released += release(
            conn,
            inbox,
            [row.id],
            owner,
            state=InboxState.WAITING,
            last_error=f"waits for an event naming the person of {key.split(':', 2)[-1]}",
        )
        add_wait(conn, key, row.id, now)
    return released


def _values(op: Operation, row: sa.Row[Any], now: datetime, dry_run: bool) -> dict[str, Any]:
    """The outbox row of one operation."""
    # The columns bound keys and ids; a longer one (already a broken limit, so the row
    # is dead) is stored hashed or cut, never refused with the whole batch.
    op_key = bounded(op.op_key, MAX_OP_KEY)
    op_id = op_ulid(op_key, op.occurred_at)
    payload = dict(op.payload)
    if op.kind in EVENT_KINDS:
        payload["id"] = op_id  # Customer.io deduplicates events by this ULID
    return {
        "op_key": op_key,
        "op_id": op_id,
        "kind": op.kind,
        "person_id": op.person_id[:255] if op.person_id else None,
        "payload": payload,
        "occurred_at": op.occurred_at,
        "lane": row.lane,
        "inbox_id": row.id,
        "subject": op.subject,
        # A merge travels alone: its primary's identify must have been applied first.
        "solo": op.kind == OperationKind.MERGE,
        # A held cart update waits, so an order that follows can still suppress it.
        "next_attempt_at": now + timedelta(seconds=op.hold_seconds) if op.hold_seconds else now,
        "created_at": now,
        "state": _state(op, dry_run),
        "last_error": op.suppressed or op.problem,
    }


# Why a backfilled event was withheld: the outbox row's last_error.
HISTORY_REASON = (
    "history: backfilled {age}, older than BACKFILL_LIVE_WINDOW_SECONDS and young enough "
    "to trigger Customer.io campaigns (72 h)"
)
HISTORY_ONLY = "history: backfilled with --attributes-only"
# Customer.io lets events timestamped within the past 72 hours trigger campaigns; older
# ones are stored on the person (segments, activity) but trigger nothing. An hour more,
# because the event reaches it a little later than it is queued.
TRIGGER_HORIZON = timedelta(hours=73)


def _as_history(item: dict[str, Any], row: sa.Row[Any], now: datetime, window: float) -> None:
    """Old backfilled facts are history, not triggers.

    Older than the live window but young enough to trigger a campaign: the event is
    withheld (suppressed, with the reason), so it starts no journey hours late; the
    person's attributes it changed still go out in their identify. Older than Customer.io's
    trigger horizon: sent with its original timestamp, which records it on the person
    without triggering anything. The history lane (--attributes-only) withholds every
    event. Live and replayed rows are untouched."""
    if item["kind"] not in EVENT_KINDS or item["state"] == OutboxState.SUPPRESSED:
        return
    age = now - item["occurred_at"]
    if row.lane == Lane.HISTORY:
        reason = HISTORY_ONLY
    elif row.lane == Lane.BACKFILL and timedelta(seconds=window) < age <= TRIGGER_HORIZON:
        reason = HISTORY_REASON.format(age=f"{age.total_seconds() / 3600:.1f} h old")
    else:
        return
    item["state"] = OutboxState.SUPPRESSED
    item["last_error"] = reason


def _state(op: Operation, dry_run: bool) -> str:
    if op.suppressed:
        return OutboxState.SUPPRESSED
    if op.problem:
        return OutboxState.DEAD
    return OutboxState.DRY_RUN if dry_run else OutboxState.PENDING
