"""Operator commands: `webhooks status` and `webhooks dead-letters ...`.

Human output by default, `--json` for scripts. Every failure is a message and an exit
code, never a traceback: 1 for an unhealthy status or a refused request, 2 for bad
usage (click's), 3 when the database cannot be read at all.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import click
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from webhooks.config import load_settings
from webhooks.errors import ConfigError

UNREADABLE = 3
DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*(s|m|min|h|d)$")
UNITS = {"s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400}


class Since(click.ParamType[datetime]):
    """`24h`, `30m`, `7d`, `90s`, or a date / ISO 8601 time (UTC unless it says)."""

    name = "since"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> datetime:
        if isinstance(value, datetime):
            return value
        text = str(value).strip()
        match = DURATION.match(text)
        if match:
            return datetime.now(UTC) - timedelta(seconds=float(match[1]) * UNITS[match[2]])
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            self.fail(
                f"{text!r} is neither a duration (24h, 30m, 7d) nor a date or ISO 8601 time",
                param,
                ctx,
            )
        return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@contextmanager
def database() -> Iterator[Engine]:
    """The configured database, migrated to this code's schema, or a clear exit."""
    from webhooks.storage import migrate
    from webhooks.storage.db import create_db_engine

    try:
        settings = load_settings()
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    engine = create_db_engine(settings.database_url, settings.database_timeout)
    try:
        try:
            current = migrate.is_current(engine)
        except SQLAlchemyError as exc:
            _unreadable(f"cannot read the database: {type(exc).__name__}")
        if not current:
            _unreadable(
                "the database schema is not this code's: run `webhooks db upgrade` "
                "(`webhooks db current` shows both)"
            )
        yield engine
    except SQLAlchemyError as exc:
        _unreadable(f"database error: {type(exc).__name__}")
    finally:
        engine.dispose()


def _unreadable(message: str) -> None:
    click.echo(f"Error: {message}", err=True)
    sys.exit(UNREADABLE)


def emit(data: Any, as_json: bool, human: Callable[[], str]) -> None:
    """Print `data` as JSON or the human form."""
    if as_json:
        click.echo(json.dumps(data, indent=2, sort_keys=True, default=str))
    else:
        click.echo(human())


# --- status ----------------------------------------------------------------------------------


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option(
    "--max-backlog-age",
    type=click.FloatRange(min=0),
    default=300,
    show_default=True,
    help="Seconds the oldest live item of either stage may wait before it is unhealthy.",
)
@click.option(
    "--max-dead",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Dead letters (both stages) tolerated before it is unhealthy.",
)
@click.option(
    "--max-silence",
    type=click.FloatRange(min=0),
    default=None,
    help="Hours a provider that sent webhooks before may stay silent (off by default).",
)
@click.option("--no-worker-ok", is_flag=True, help="A missing delivery worker is not unhealthy.")
def status(
    as_json: bool,
    max_backlog_age: float,
    max_dead: int,
    max_silence: float | None,
    no_worker_ok: bool,
) -> None:
    """Backlogs, deliveries, dead letters, workers and Customer.io; exit 1 when unhealthy.

    Exit codes: 0 healthy, 1 unhealthy by the thresholds, 3 database unreadable.
    """
    from webhooks.ops.status import Thresholds, collect, problems, render

    limits = Thresholds(max_backlog_age, max_dead, max_silence, not no_worker_ok)
    with database() as engine:
        report = collect(engine)
    found = problems(report, limits)
    report["healthy"], report["problems"] = not found, found
    emit(report, as_json, lambda: render(report, found))
    sys.exit(1 if found else 0)


# --- dead letters -------------------------------------------------------------------------


@click.group("dead-letters")
def dead_letters() -> None:
    """Deliveries (stage 1) and operations (stage 2) that will not be retried by themselves.

    A reference is `inbox:ID` (a stored webhook the mapper refused) or `outbox:ID` (an
    operation Customer.io refused or that failed for DELIVERY_MAX_AGE_HOURS).
    """


def _filters(fn: Callable[..., Any]) -> Callable[..., Any]:
    for option in reversed(
        [
            click.option(
                "--stage",
                type=click.Choice(["inbox", "outbox"]),
                help="inbox (stage 1, mapping) or outbox (stage 2, delivery).",
            ),
            click.option("--provider", help="stripe, shopify, ..."),
            click.option("--type", "event_type", help="Provider event type or topic."),
            click.option("--reason", help="Text the reason contains (any case), e.g. 400."),
            click.option("--since", type=Since(), help="24h, 7d, 2026-11-01, ..."),
        ]
    ):
        fn = option(fn)
    return fn


def _make_filters(**values: Any) -> Any:
    from webhooks.ops.deadletters import Filters

    return Filters(
        stage=values.get("stage"),
        provider=values.get("provider"),
        event_type=values.get("event_type"),
        reason=values.get("reason"),
        since=values.get("since"),
    )


@dead_letters.command("list")
@_filters
@click.option("--limit", type=click.IntRange(min=1), default=100, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def list_dead(limit: int, as_json: bool, **filters: Any) -> None:
    """List dead letters, oldest first (ids and reasons only, no personal data)."""
    from webhooks.ops.deadletters import find

    with database() as engine:
        letters = find(engine, _make_filters(**filters), limit)
    emit([letter.as_dict() for letter in letters], as_json, lambda: _table(letters))


def _table(letters: list[Any]) -> str:
    if not letters:
        return "No dead letters."
    rows = [
        (
            letter.ref,
            letter.at.strftime("%Y-%m-%d %H:%M") if letter.at else "",
            f"{letter.provider or '-'} {letter.event_type or ''}".strip(),
            letter.name or "",
            letter.reason,
        )
        for letter in letters
    ]
    header = ("REF", "WHEN (UTC)", "SOURCE", "EVENT", "REASON")
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(4)]
    return "\n".join(
        "  ".join(f"{cell!s:<{widths[i]}}" for i, cell in enumerate(row[:4])) + "  " + row[4]
        for row in [header, *rows]
    )


@dead_letters.command("show")
@click.argument("ref")
@click.option("--show-pii", is_flag=True, help="Print personal data unmasked.")
def show_dead(ref: str, show_pii: bool) -> None:
    """Everything stored about one dead letter (personal data masked by default)."""
    from webhooks.ops.deadletters import NoSuchDeadLetter, show
    from webhooks.ops.mask import mask

    with database() as engine:
        try:
            found = show(engine, ref)
        except NoSuchDeadLetter as exc:
            raise click.ClickException(str(exc)) from None
    click.echo(json.dumps(found if show_pii else mask(found), indent=2, default=str))


def _selected(
    engine: Engine, refs: tuple[str, ...], every: bool, filters: dict[str, Any]
) -> list[str]:
    from webhooks.ops.deadletters import find

    chosen = _make_filters(**filters)
    if refs and (every or any(filters.values())):
        raise click.UsageError("give references, or --all with filters, not both")
    if refs:
        return list(refs)
    if not every:
        raise click.UsageError("name dead letters (inbox:ID, outbox:ID) or pass --all")
    return [letter.ref for letter in find(engine, chosen)]


def _act(verb: str, refs: tuple[str, ...], every: bool, dry: bool, filters: dict[str, Any]) -> None:
    from webhooks.ops.deadletters import NoSuchDeadLetter, discard, retry

    with database() as engine:
        selected = _selected(engine, refs, every, filters)
        if dry or not selected:
            click.echo(f"would {verb} {len(selected)}: {' '.join(selected)}".rstrip(": "))
            return
        try:
            counts = (retry if verb == "retry" else discard)(engine, selected)
        except NoSuchDeadLetter as exc:
            raise click.ClickException(str(exc)) from None
    done = "requeued" if verb == "retry" else "discarded"
    click.echo(f"{done} {counts['inbox']} from stage 1, {counts['outbox']} from stage 2")


@dead_letters.command("retry")
@click.argument("refs", nargs=-1)
@click.option("--all", "every", is_flag=True, help="Every dead letter the filters match.")
@click.option("--dry-run", is_flag=True, help="Say what would be retried, change nothing.")
@_filters
def retry_dead(refs: tuple[str, ...], every: bool, dry_run: bool, **filters: Any) -> None:
    """Put dead letters back in their queue, after fixing what killed them.

    Stage-1 rows are mapped again; stage-2 operations are sent again with a fresh
    round of attempts. Customer.io deduplicates events by id, so an operation it had
    in fact taken is not doubled.
    """
    _act("retry", refs, every, dry_run, filters)


@dead_letters.command("discard")
@click.argument("refs", nargs=-1)
@click.option("--all", "every", is_flag=True, help="Every dead letter the filters match.")
@click.option("--dry-run", is_flag=True, help="Say what would be discarded, change nothing.")
@_filters
def discard_dead(refs: tuple[str, ...], every: bool, dry_run: bool, **filters: Any) -> None:
    """Give up on dead letters: kept as `discarded`, no longer counted or retried."""
    _act("discard", refs, every, dry_run, filters)
