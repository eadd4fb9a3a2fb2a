"""Stage 2: claim due outbox operations, send them to Customer.io, record the outcome."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
import structlog
from sqlalchemy.engine import Engine

from webhooks.core import jsontext
from webhooks.core.metrics import DEAD, DELIVERED, SEND_FAILED
from webhooks.core.operations import OperationKind
from webhooks.core.retry import DEFAULT_MAX_AGE, backoff
from webhooks.errors import CredentialsRefused, TransientError
from webhooks.stage2.customerio import MAX_BATCH_BYTES, CustomerIO, DeliveryError
from webhooks.storage.outbox import summary
from webhooks.storage.queue import DEFAULT_LEASE, Turn, claim, release, utcnow, writing
from webhooks.storage.schema import Lane, OutboxState, outbox

log = structlog.get_logger("webhooks.deliver")
LEASE_SAFETY = 0.5  # send only within the first half of a claim's lease
BATCH_OVERHEAD = 20  # bytes of '{"batch":[...]}' around the items


@dataclass
class Outcome:
    """What one deliver pass did."""

    claimed: int = 0
    auth_failed: bool = False
    transient_failed: bool = False  # Customer.io unreachable or failing: pause a while
    retry_after: float | None = None  # what Customer.io asked for, if it did


def deliver_batch(
    engine: Engine,
    owner: str,
    cio: CustomerIO | None,
    limit: int = 500,
    max_age: timedelta = DEFAULT_MAX_AGE,
    lease: timedelta = DEFAULT_LEASE,
    stop: threading.Event | None = None,
    lanes: Sequence[int] | None = None,
    turn: Turn = contextlib.nullcontext,
) -> Outcome:
    """Send up to `limit` due operations (live lane first, then by event time; only
    those of `lanes` when given)."""
    now = utcnow()
    rows = claim(
        engine,
        outbox,
        owner,
        limit,
        lease,
        queues=[
            (
                outbox.c.state == OutboxState.PENDING,
                outbox.c.lane == lane,
                outbox.c.next_attempt_at <= now,
            )
            for lane in (Lane if lanes is None else lanes)
        ],
        order_by=[outbox.c.occurred_at, outbox.c.id],
        turn=turn,
        # Stage 1 commits without waiting for the disk: this commit makes what is
        # about to be sent (and what stage 1 changed around it) durable first.
        durable=True,
    )
    outcome = Outcome(claimed=len(rows))
    if not rows:
        return outcome
    # Only background lanes: their calls give way to live ones at the rate limit.
    background = lanes is not None and Lane.LIVE not in lanes
    if cio is None:
        # Dry run: everything but the send, recorded for inspection.
        _finish(engine, turn, owner, rows, {}, OutboxState.DRY_RUN)
        _count_finished(rows, {}, OutboxState.DRY_RUN)
        for row in rows:
            log.info("dry_run_operation", **summary(row))
        return outcome
    groups = _groups(rows)
    deadline = utcnow() + lease * LEASE_SAFETY
    for index, group in enumerate(groups):
        if (stop is not None and stop.is_set()) or utcnow() > deadline:
            # Shutting down, or the lease is running out: hand the rest back now rather
            # than send it after another worker may have claimed it.
            with writing(engine, turn) as conn:
                release(conn, outbox, [r.id for g in groups[index:] for r in g], owner)
            return outcome
        try:
            errors = _send(cio, group, background)
        except DeliveryError as exc:
            rest = [r.id for g in groups[index + 1 :] for r in g]
            SEND_FAILED.labels(_failure(exc)).inc()
            if isinstance(exc, CredentialsRefused):
                # Credentials or region are wrong: give everything back untouched.
                with writing(engine, turn) as conn:
                    release(conn, outbox, [r.id for r in group] + rest, owner)
                outcome.auth_failed = True
                return outcome
            retry_at = _failed(engine, turn, owner, group, exc, max_age)
            if isinstance(exc, TransientError):
                # The rest would most likely fail the same way: hand them back untried,
                # due when the failed group is, so a person's operations keep their
                # order, and let the worker pause instead of failing once per group.
                with writing(engine, turn) as conn:
                    release(conn, outbox, rest, owner, next_attempt_at=retry_at)
                outcome.transient_failed = True
                outcome.retry_after = exc.retry_after
                return outcome
            continue
        _finish(engine, turn, owner, group, errors, OutboxState.DELIVERED)
        _count_finished(group, errors, OutboxState.DELIVERED)
    return outcome


def _failure(exc: DeliveryError) -> str:
    if isinstance(exc, CredentialsRefused):
        return "auth"
    return "transient" if isinstance(exc, TransientError) else "permanent"


def _count_finished(group: list[sa.Row[Any]], errors: dict[int, str], outcome: str) -> None:
    for index, row in enumerate(group):
        if index in errors:
            SEND_FAILED.labels("item").inc()
            DEAD.labels(row.kind).inc()
        else:
            DELIVERED.labels(row.kind, outcome).inc()


def _groups(rows: list[sa.Row[Any]]) -> list[list[sa.Row[Any]]]:
    """Anonymous events and solo rows alone; the rest in batches under the size cap."""
    groups: list[list[sa.Row[Any]]] = []
    batch: list[sa.Row[Any]] = []
    size = BATCH_OVERHEAD
    for row in rows:
        if row.kind == OperationKind.ANONYMOUS_EVENT or row.solo:
            if batch:  # keep claim order: what came before goes first
                groups.append(batch)
                batch, size = [], BATCH_OVERHEAD
            groups.append([row])
            continue
        item = jsontext.size(row.payload)
        if batch and size + item + 1 > MAX_BATCH_BYTES:
            groups.append(batch)
            batch, size = [], BATCH_OVERHEAD
        batch.append(row)
        size += item + 1
    if batch:
        groups.append(batch)
    return groups


def _send(cio: CustomerIO, group: list[sa.Row[Any]], background: bool) -> dict[int, str]:
    if group[0].kind == OperationKind.ANONYMOUS_EVENT:
        cio.send_anonymous_event(group[0].payload, background)
        return {}
    return cio.send_batch([row.payload for row in group], background).item_errors


def _finish(
    engine: Engine,
    turn: Turn,
    owner: str,
    group: list[sa.Row[Any]],
    errors: dict[int, str],
    state: str,
) -> None:
    now = utcnow()
    # An index outside the group (a confused answer) refuses nothing of ours.
    errors = {i: m for i, m in errors.items() if 0 <= i < len(group)}
    ok = [row.id for i, row in enumerate(group) if i not in errors]
    with writing(engine, turn) as conn:
        release(
            conn,
            outbox,
            ok,
            owner,
            state=state,
            delivered_at=now,
            attempts=outbox.c.attempts + 1,
            last_status=200,
            last_error=None,
        )
        for i, message in errors.items():
            # Customer.io refused this item (207): retrying cannot help.
            release(
                conn,
                outbox,
                [group[i].id],
                owner,
                state=OutboxState.DEAD,
                attempts=outbox.c.attempts + 1,
                last_status=207,
                last_error=message,
                failed_at=now,
            )
    for i, message in errors.items():
        log.warning("operation_refused", op_id=group[i].op_id, kind=group[i].kind, reason=message)


def _failed(
    engine: Engine,
    turn: Turn,
    owner: str,
    group: list[sa.Row[Any]],
    exc: DeliveryError,
    max_age: timedelta,
) -> datetime:
    """Record a failed send; returns when the group is due again."""
    now = utcnow()
    # One wait for the whole group, so a person's identify and event stay in order.
    wait = timedelta(seconds=backoff(max(r.attempts for r in group) + 1, exc.retry_after))
    error = (f"{exc}: {exc.body}" if exc.body else str(exc))[:4000]
    with writing(engine, turn) as conn:
        retryable = isinstance(exc, TransientError)
        if not retryable and len(group) > 1:
            # The whole batch was refused (400/413): send each alone next time, so one
            # bad operation cannot take the others down with it.
            release(conn, outbox, [r.id for r in group], owner, solo=True, failed_at=now)
            return now
        # One statement per outcome, not one per operation: during an outage every
        # failed group passes here, and a long write transaction would hold SQLite's
        # write lock while webhooks wait to be stored.
        expired = [row for row in group if not retryable or now - row.created_at > max_age]
        gone = {row.id for row in expired}
        again = [row.id for row in group if row.id not in gone]
        release(
            conn,
            outbox,
            again,
            owner,
            attempts=outbox.c.attempts + 1,
            next_attempt_at=now + wait,
            last_status=exc.status,
            last_error=error,
            failed_at=now,
        )
        release(
            conn,
            outbox,
            [row.id for row in expired],
            owner,
            state=OutboxState.DEAD,
            attempts=outbox.c.attempts + 1,
            last_status=exc.status,
            last_error=error,
            failed_at=now,
        )
    for row in expired:
        DEAD.labels(row.kind).inc()
        log.error(
            "operation_dead",
            op_id=row.op_id,
            kind=row.kind,
            status=exc.status,
            attempts=row.attempts + 1,
        )
    log.warning(
        "delivery_retry",
        status=exc.status,
        operations=len(group),
        retryable=retryable,
        retry_after=exc.retry_after,
    )
    return now + wait
