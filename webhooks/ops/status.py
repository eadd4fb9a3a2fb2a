"""`webhooks status`: what both stages hold, what went out, and whether it is healthy.

Everything comes from the database, so the answer is the same from any host: backlog
and the age of its oldest item per stage and lane, the last hour's deliveries, dead
letters by reason, waiting deliveries, the last webhook per provider and topic, and
the delivery workers' heartbeats (which say whether Customer.io took the credentials).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from webhooks.storage import heartbeat
from webhooks.storage.queue import utcnow
from webhooks.storage.schema import InboxState, Lane, OutboxState, inbox, outbox

HOUR = timedelta(hours=1)
LANES = {lane.value: lane.name.lower() for lane in Lane}
# Stage-2 dead letters are told apart by Customer.io's status; stage-1 ones (and
# stage-2 ones refused before a send, status NULL) by our own reason text, cut here.
REASON_CHARS = 80


@dataclass(frozen=True)
class Thresholds:
    """When `status` calls the service unhealthy (exit code 1)."""

    max_backlog_age: float = 300.0  # seconds, oldest live item of either stage
    max_dead: int = 0  # dead letters of both stages together
    max_silence_hours: float | None = None  # a provider that sent before, silent since
    require_worker: bool = True


def collect(engine: Engine, now: datetime | None = None) -> dict[str, Any]:
    """The whole status as plain data (what `--json` prints)."""
    now = now or utcnow()
    with engine.connect() as conn:
        report = {
            "at": now.isoformat(),
            "stage1": _stage1(conn, now),
            "stage2": _stage2(conn, now),
            "received": _received(conn, now),
        }
    workers = heartbeat.workers(engine, now)
    report["workers"] = workers
    report["customerio"] = _credentials(workers)
    return report


def problems(report: dict[str, Any], limits: Thresholds) -> list[str]:
    """Why the report is unhealthy under `limits`; empty when healthy."""
    found = []
    for stage in ("stage1", "stage2"):
        live = report[stage]["backlog"].get("live", {})
        age = live.get("oldest_seconds")
        if age is not None and age > limits.max_backlog_age:
            found.append(
                f"{stage} live backlog: oldest item {age:.0f} s old "
                f"(limit {limits.max_backlog_age:g} s)"
            )
    dead = report["stage1"]["dead"]["total"] + report["stage2"]["dead"]["total"]
    if dead > limits.max_dead:
        found.append(
            f"{dead} dead letters (limit {limits.max_dead}): see `webhooks dead-letters list`"
        )
    workers = report["workers"]
    if limits.require_worker and not workers["live"]:
        found.append("no delivery worker has a heartbeat in the last 60 s")
    elif limits.require_worker and report["customerio"] == "map_only":
        found.append("no live worker sends: only WORKER_STAGE=map workers have a heartbeat")
    if report["customerio"] == "paused_credentials":
        found.append("Customer.io refuses the credentials (401/403): delivery is paused")
    if limits.max_silence_hours is not None:
        for provider, seconds in _silence(report).items():
            if seconds > limits.max_silence_hours * 3600:
                found.append(
                    f"no webhook from {provider} for {seconds / 3600:.1f} h "
                    f"(limit {limits.max_silence_hours:g} h)"
                )
    return found


# --- stage 1: the inbox ---------------------------------------------------------------


def _stage1(conn: Connection, now: datetime) -> dict[str, Any]:
    queued = inbox.c.state.in_((InboxState.PENDING, InboxState.FAILED))
    rows = conn.execute(
        sa.select(inbox.c.lane, sa.func.count(), sa.func.min(inbox.c.received_at))
        .where(queued)
        .group_by(inbox.c.lane)
    )
    waiting = conn.execute(
        sa.select(sa.func.count(), sa.func.min(inbox.c.received_at)).where(
            inbox.c.state == InboxState.WAITING
        )
    ).one()
    retrying = conn.scalar(sa.select(sa.func.count()).where(inbox.c.state == InboxState.FAILED))
    mapped = conn.scalar(
        sa.select(sa.func.count()).where(
            inbox.c.state == InboxState.DONE, inbox.c.processed_at >= now - HOUR
        )
    )
    dead = conn.execute(
        sa.select(inbox.c.last_error, sa.func.count())
        .where(inbox.c.state == InboxState.DEAD)
        .group_by(inbox.c.last_error)
    )
    return {
        "backlog": _lanes(rows, now),
        "retrying": retrying or 0,
        "mapped_last_hour": mapped or 0,
        "waiting": {"count": waiting[0], "oldest_seconds": _age(waiting[1], now)},
        "dead": _reasons((_cut(reason), n) for reason, n in dead),
    }


# --- stage 2: the outbox --------------------------------------------------------------


def _stage2(conn: Connection, now: datetime) -> dict[str, Any]:
    pending = outbox.c.state == OutboxState.PENDING
    rows = conn.execute(
        sa.select(outbox.c.lane, sa.func.count(), sa.func.min(outbox.c.created_at))
        .where(pending)
        .group_by(outbox.c.lane)
    )
    due = conn.scalar(sa.select(sa.func.count()).where(pending, outbox.c.next_attempt_at <= now))
    retrying = conn.scalar(sa.select(sa.func.count()).where(pending, outbox.c.attempts > 0))
    hour = now - HOUR
    delivered = conn.scalar(
        sa.select(sa.func.count()).where(
            outbox.c.state == OutboxState.DELIVERED, outbox.c.delivered_at >= hour
        )
    )
    # Dry-run rows are recorded by stage 1 (created_at) or by stage 2 (delivered_at).
    dry_run = conn.scalar(
        sa.select(sa.func.count()).where(
            outbox.c.state == OutboxState.DRY_RUN,
            sa.func.coalesce(outbox.c.delivered_at, outbox.c.created_at) >= hour,
        )
    )
    failed = conn.scalar(sa.select(sa.func.count()).where(outbox.c.failed_at >= hour))
    dead = conn.execute(
        sa.select(outbox.c.last_status, outbox.c.last_error, sa.func.count())
        .where(outbox.c.state == OutboxState.DEAD)
        .group_by(outbox.c.last_status, outbox.c.last_error)
    )
    return {
        "backlog": _lanes(rows, now),
        "due_now": due or 0,
        "retrying": retrying or 0,
        "last_hour": {
            "delivered": delivered or 0,
            "dry_run": dry_run or 0,
            "failed": failed or 0,
        },
        "dead": _reasons(
            (f"Customer.io {status}" if status else _cut(reason), n) for status, reason, n in dead
        ),
    }


# --- what arrived, and the workers ---------------------------------------------------------


def _received(conn: Connection, now: datetime) -> list[dict[str, Any]]:
    rows = conn.execute(
        sa.select(inbox.c.provider, inbox.c.event_type, sa.func.max(inbox.c.received_at))
        .group_by(inbox.c.provider, inbox.c.event_type)
        .order_by(inbox.c.provider, inbox.c.event_type)
    )
    return [
        {"provider": provider, "type": kind, "last_seconds_ago": _age(last, now)}
        for provider, kind, last in rows
    ]


def _credentials(workers: dict[str, Any]) -> str:
    """Customer.io as the live workers see it: the worst state any of them reports."""
    states = workers["delivery"]
    for state in heartbeat.DELIVERY_STATES:
        if states.get(state):
            return state
    return "unknown"  # no live worker to ask


def _silence(report: dict[str, Any]) -> dict[str, float]:
    newest: dict[str, float] = {}
    for item in report["received"]:
        age = item["last_seconds_ago"]
        if age is not None:
            newest[item["provider"]] = min(newest.get(item["provider"], age), age)
    return newest


# --- helpers ---------------------------------------------------------------------------


def _lanes(rows: Any, now: datetime) -> dict[str, Any]:
    found: dict[str, dict[str, Any]] = {"live": {"count": 0, "oldest_seconds": None}}
    for lane, count, oldest in rows:
        found[LANES.get(lane, f"lane {lane}")] = {
            "count": count,
            "oldest_seconds": _age(oldest, now),
        }
    return found


def _age(moment: datetime | None, now: datetime) -> float | None:
    return None if moment is None else round(max(0.0, (now - moment).total_seconds()), 1)


def _cut(reason: str | None) -> str:
    text = (reason or "no reason recorded").splitlines()[0]
    return text if len(text) <= REASON_CHARS else text[: REASON_CHARS - 1] + "…"


def _reasons(pairs: Any) -> dict[str, Any]:
    by_reason: dict[str, int] = {}
    for reason, count in pairs:
        by_reason[reason] = by_reason.get(reason, 0) + int(count)
    return {"total": sum(by_reason.values()), "by_reason": by_reason}


# --- the human form ----------------------------------------------------------------------

CREDENTIALS = {
    "sending": "sending",
    "dry_run": "dry run: operations are recorded, not sent (no credentials configured)",
    "paused_outage": "paused: Customer.io failing (5xx, 429 or timeouts); retrying",
    "paused_credentials": "paused: Customer.io refuses the credentials (401/403)",
    "map_only": "unknown: no live worker sends (only WORKER_STAGE=map workers)",
    "unknown": "unknown: no live delivery worker",
}


def render(report: dict[str, Any], found: list[str]) -> str:
    """The report as a few aligned lines for a terminal."""
    s1, s2, workers = report["stage1"], report["stage2"], report["workers"]
    hour = s2["last_hour"]
    lines = [
        (
            "Stage 1 (mapping)",
            f"{_backlog(s1['backlog'])}; retrying {s1['retrying']}; "
            f"mapped in the last hour {s1['mapped_last_hour']}",
        ),
        (
            "Waiting",
            f"{s1['waiting']['count']}"
            + _oldest(s1["waiting"]["oldest_seconds"])
            + " (deliveries naming a person no event has linked yet)",
        ),
        (
            "Stage 2 (delivery)",
            f"{_backlog(s2['backlog'])}; due now {s2['due_now']}; retrying {s2['retrying']}",
        ),
        (
            "Last hour",
            f"{hour['delivered']} delivered, {hour['dry_run']} dry run, "
            f"{hour['failed']} failed sends",
        ),
        ("Dead letters", f"stage 1: {_dead(s1['dead'])}; stage 2: {_dead(s2['dead'])}"),
        ("Customer.io", CREDENTIALS.get(report["customerio"], report["customerio"])),
        (
            "Workers",
            f"{workers['live']} live, {workers['stale']} stale"
            + (
                f", last beat {_duration(workers['last_beat_seconds'])} ago"
                if workers["last_beat_seconds"] is not None
                else ""
            ),
        ),
    ]
    received = report["received"] or [
        {"provider": "", "type": "none yet", "last_seconds_ago": None}
    ]
    for index, item in enumerate(received):
        ago = item["last_seconds_ago"]
        when = f"  {_duration(ago)} ago" if ago is not None else ""
        lines.append(
            (
                "Last webhooks" if index == 0 else "",
                f"{item['provider']} {item['type']}{when}".strip(),
            )
        )
    lines.append(("Health", "OK" if not found else "UNHEALTHY"))
    lines += [("", f"- {problem}") for problem in found]
    width = max(len(label) for label, _ in lines) + 2
    return "\n".join(f"{label:<{width}}{text}".rstrip() for label, text in lines)


def _backlog(lanes: dict[str, Any]) -> str:
    return ", ".join(
        f"{lane} {value['count']}{_oldest(value['oldest_seconds'])}"
        for lane, value in lanes.items()
    )


def _oldest(seconds: float | None) -> str:
    return f" (oldest {_duration(seconds)})" if seconds is not None else ""


def _dead(dead: dict[str, Any]) -> str:
    if not dead["total"]:
        return "0"
    parts = ", ".join(f"{reason}: {n}" for reason, n in sorted(dead["by_reason"].items()))
    return f"{dead['total']} ({parts})"


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"
