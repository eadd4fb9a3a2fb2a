"""Operator commands: `webhooks status` and `webhooks dead-letters ...`.

Human output by default, `--json` for scripts. Every failure is a message and an exit
code, never a traceback: 1 for an unhealthy status or a refused request, 2 for bad
usage (click's), 3 when the database cannot be read at all.
"""

from __future__ import annotations

import json
import re
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import click
import structlog
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from webhooks.config import load_settings
from webhooks.errors import (
    ConfigError,
    IngestError,
    LookupRefused,
    LookupUnauthorized,
    LookupUnavailable,
)

if TYPE_CHECKING:
    from webhooks.providers.registry import AnySpec

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
    from webhooks.logging import configure_logging
    from webhooks.storage import migrate
    from webhooks.storage.db import create_db_engine

    try:
        settings = load_settings()
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    # What the command's work logs (a Stripe retry, a lookup) goes to stderr at
    # LOG_LEVEL: stdout is the command's answer, which --json callers parse. The
    # process's own set-up is put back afterwards (a command run in-process, in tests).
    saved = structlog.get_config()
    configure_logging(settings.log_level, settings.log_format, to_stderr=True)
    engine = create_db_engine(settings.database_url, **settings.engine_options())
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
        structlog.configure(**saved)


def _unreadable(message: str) -> None:
    click.echo(f"Error: {message}", err=True)
    sys.exit(UNREADABLE)


def _spec(provider: str) -> AnySpec:
    """The registered provider named PROVIDER, or a usage error naming the known ones."""
    from webhooks.errors import UnknownProvider
    from webhooks.providers import registry

    try:
        return registry.get(provider)
    except UnknownProvider as exc:
        raise click.BadParameter(str(exc), param_hint="PROVIDER") from None


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
    from webhooks.ops.mask import mask

    with database() as engine:
        letters = find(engine, _make_filters(**filters), limit)
    # A person id may be an email (GUEST_POLICY=email): masked like everything listed.
    listed = [letter.as_dict() | {"person_id": mask(letter.person_id)} for letter in letters]
    emit(listed, as_json, lambda: _table(letters))


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


# --- waiting deliveries ----------------------------------------------------------------------


@click.group()
def waiting() -> None:
    """Deliveries waiting for an event that names their person.

    A refund naming only an order no event linked to anyone waits until one does; each
    wakes by itself then. Past WAITING_EXPIRY_HOURS the worker turns them into dead
    letters. A reference is `inbox:ID`.
    """


def _waiting_filters(fn: Callable[..., Any]) -> Callable[..., Any]:
    for option in reversed(
        [
            click.option("--provider", help="stripe, shopify, ..."),
            click.option("--type", "event_type", help="Provider event type or topic."),
            click.option(
                "--older-than", type=Since(), help="Received before: 24h, 7d, 2026-11-01, ..."
            ),
        ]
    ):
        fn = option(fn)
    return fn


@waiting.command("list")
@_waiting_filters
@click.option("--limit", type=click.IntRange(min=1), default=100, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def list_waiting(
    provider: str | None,
    event_type: str | None,
    older_than: datetime | None,
    limit: int,
    as_json: bool,
) -> None:
    """List waiting deliveries, oldest first, with the key each waits for."""
    from webhooks.ops.waiting import find

    with database() as engine:
        rows = find(engine, provider, event_type, older_than, limit)

    def human() -> str:
        if not rows:
            return "Nothing is waiting."
        return "\n".join(
            f"{row['ref']:<14}{row['received_at'][:16]}  {row['provider']} {row['type']}"
            f"  waits for {row['waits_for']}"
            for row in rows
        )

    emit(rows, as_json, human)


def _waiting_refs(
    engine: Engine,
    refs: tuple[str, ...],
    every: bool,
    provider: str | None,
    event_type: str | None,
    older_than: datetime | None,
) -> list[int]:
    from webhooks.ops.waiting import find

    if refs and (every or provider or event_type or older_than):
        raise click.UsageError("give references, or --all with filters, not both")
    if not refs and not every:
        raise click.UsageError("name waiting deliveries (inbox:ID) or pass --all")
    if every:
        return [
            int(row["ref"].split(":")[1]) for row in find(engine, provider, event_type, older_than)
        ]
    ids = []
    for ref in refs:
        stage, _, number = ref.partition(":")
        if stage != "inbox" or not number.isdigit():
            raise click.BadParameter(f"{ref!r} is not inbox:ID", param_hint="REFS")
        ids.append(int(number))
    waiting_now = {int(row["ref"].split(":")[1]) for row in find(engine)}
    missing = [f"inbox:{n}" for n in ids if n not in waiting_now]
    if missing:
        raise click.ClickException(f"not waiting: {', '.join(missing)}")
    return ids


@waiting.command("release")
@click.argument("refs", nargs=-1)
@click.option("--all", "every", is_flag=True, help="Every waiting delivery the filters match.")
@_waiting_filters
def release_waiting(
    refs: tuple[str, ...],
    every: bool,
    provider: str | None,
    event_type: str | None,
    older_than: datetime | None,
) -> None:
    """Map waiting deliveries again now (after a fix); one still unresolved waits again."""
    from webhooks.storage.inbox import release_waiting as release

    with database() as engine:
        ids = _waiting_refs(engine, refs, every, provider, event_type, older_than)
        released = release(engine, ids)
    click.echo(f"released {released} to be mapped again")


@waiting.command("expire")
@click.argument("refs", nargs=-1)
@click.option("--all", "every", is_flag=True, help="Every waiting delivery the filters match.")
@click.option("--dry-run", is_flag=True, help="Say what would expire, change nothing.")
@_waiting_filters
def expire_waiting(
    refs: tuple[str, ...],
    every: bool,
    dry_run: bool,
    provider: str | None,
    event_type: str | None,
    older_than: datetime | None,
) -> None:
    """Give up waiting: the deliveries become dead letters that say what they waited for."""
    from webhooks.storage.inbox import expire_waiting as expire

    with database() as engine:
        ids = _waiting_refs(engine, refs, every, provider, event_type, older_than)
        if dry_run:
            click.echo(
                f"would expire {len(ids)}: {' '.join(f'inbox:{n}' for n in ids)}".rstrip(": ")
            )
            return
        expired = expire(engine, datetime.now(UTC) + timedelta(seconds=1), ids)
    click.echo(f"expired {expired} into dead letters")


# --- retention ---------------------------------------------------------------------------------


@click.command()
@click.option(
    "--older-than",
    type=Since(),
    default=None,
    help="Finished work received before this (30d, 2026-10-01, ...); "
    "default PAYLOAD_RETENTION_DAYS.",
)
@click.option("--dry-run", is_flag=True, help="Count what would be purged, change nothing.")
def purge(older_than: datetime | None, dry_run: bool) -> None:
    """Drop raw webhook bodies and operation payloads (personal data) past retention.

    Only finished work: delivered, dry-run, suppressed and discarded operations, and
    deliveries mapped or discarded. Rows and their dedup keys stay, so a provider's
    retry is still a duplicate and a delivered fact is never queued again; purged
    deliveries can no longer be replayed. Pending, waiting and dead work keeps its
    data. Run it daily (cron), or after lowering the retention.
    """
    from webhooks.storage.inbox import purge_bodies
    from webhooks.storage.outbox import purge_payloads

    with database() as engine:
        days = load_settings().payload_retention_days  # valid: database() loaded it
        cutoff = older_than or datetime.now(UTC) - timedelta(days=days)
        bodies = purge_bodies(engine, cutoff, dry_run)
        payloads = purge_payloads(engine, cutoff, dry_run)
    verb = "would purge" if dry_run else "purged"
    click.echo(
        f"{verb} {bodies} webhook bodies and {payloads} operation payloads "
        f"from before {cutoff.isoformat(timespec='seconds')}"
    )


# --- what is held about a person ---------------------------------------------------------------


@click.command("export-person")
@click.argument("person")
def export_person(person: str) -> None:
    """Print, as JSON, everything held about PERSON (a person id or a linked key such as
    `email:ann@example.com`): attributes, totals, identity keys, facts, operations and
    the stored webhooks they came from. It is personal data: handle the output so."""
    from webhooks.ops.people import UnknownPerson, export, resolve

    with database() as engine:
        try:
            found = export(engine, resolve(engine, person))
        except UnknownPerson as exc:
            raise click.ClickException(str(exc)) from None
    click.echo(json.dumps(found, indent=2, default=str))


@click.group("data-requests")
def data_requests() -> None:
    """Data requests recorded from providers (Shopify customers/data_request).

    The merchant must answer each within 30 days: `export KEY` prints what is held
    about the person it resolved to, `--mark-answered` records that it was answered.
    """


@data_requests.command("list")
@click.option("--open", "open_only", is_flag=True, help="Only those not answered yet.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def list_requests(open_only: bool, as_json: bool) -> None:
    """Recorded data requests, oldest first."""
    from webhooks.ops.people import requests

    with database() as engine:
        found = requests(engine, open_only)

    def human() -> str:
        if not found:
            return "No data requests."
        return "\n".join(
            f"{item['key']}  requested {(item['requested_at'] or '')[:16]}  "
            f"{'answered ' + item['answered_at'][:16] if item['answered_at'] else 'OPEN'}  "
            f"person {item['person_id'] or '(nobody known)'}"
            for item in found
        )

    emit(found, as_json, human)


@data_requests.command("export")
@click.argument("key")
@click.option("--mark-answered", is_flag=True, help="Record the request as answered now.")
def export_request(key: str, mark_answered: bool) -> None:
    """Print the request and what is held about its person, as JSON."""
    from webhooks.ops.people import UnknownRequest, answer

    with database() as engine:
        try:
            found = answer(engine, key, mark_answered)
        except UnknownRequest as exc:
            raise click.ClickException(str(exc)) from None
    click.echo(json.dumps(found, indent=2, default=str))


# --- replay ------------------------------------------------------------------------------------


@click.command()
@click.option("--since", type=Since(), required=True, help="Received from: 24h, 2026-11-01, ...")
@click.option("--until", type=Since(), default=None, help="Received before (default: now).")
@click.option("--provider", help="stripe, shopify, ...")
@click.option("--type", "event_type", help="Provider event type or topic.")
@click.option("--dry-run", is_flag=True, help="Count what would be replayed, change nothing.")
@click.option("--force", is_flag=True, help="Also send again what was sent before.")
@click.option(
    "--wait/--no-wait",
    default=False,
    help="Stay until the worker has mapped and delivered the replay (progress bar).",
)
def replay(
    since: datetime,
    until: datetime | None,
    provider: str | None,
    event_type: str | None,
    dry_run: bool,
    force: bool,
    wait: bool,
) -> None:
    """Map stored webhooks again and deliver what changed, behind live traffic.

    For after a mapper fix or a settings change. The webhooks go back to the worker in
    the replay lane, which it takes only when live work is done. Facts already sent are
    not sent again unless --force. Webhooks purged past PAYLOAD_RETENTION_DAYS are
    skipped. Needs a running worker (or `--wait` with one running elsewhere).
    """
    from webhooks.ops.replay import Selection, count, remaining, requeue

    if until is not None and until <= since:
        raise click.BadParameter("must be after --since", param_hint="--until")
    selection = Selection(since, until, provider, event_type)
    with database() as engine:
        by_type = count(engine, selection)
        total = sum(by_type.values())
        if dry_run or not total:
            click.echo(f"{'would replay' if dry_run else 'nothing to replay:'} {total} webhooks")
            for name, n in sorted(by_type.items()):
                click.echo(f"  {name}: {n}")
            return
        with click.progressbar(length=total, label="requeueing", show_eta=True) as bar:
            replayed = requeue(engine, selection, force, bar.update)
        click.echo(f"replaying {replayed} webhooks in the replay lane")
        if wait:
            _wait_for(engine, remaining)


def _wait_for(engine: Engine, remaining: Callable[[Engine], int]) -> None:

    left = start = remaining(engine)
    with click.progressbar(length=max(start, 1), label="mapping and delivering") as bar:
        while left:
            time.sleep(1)
            now = remaining(engine)
            bar.update(max(0, left - now))
            left = now
    click.echo("replay finished")


# --- trace -----------------------------------------------------------------------------------


@click.command()
@click.argument("ref")
@click.option("--show-pii", is_flag=True, help="Print payloads unmasked.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def trace(ref: str, show_pii: bool, as_json: bool) -> None:
    """The whole path of REF: a delivery id (Stripe event id, Shopify webhook id), an
    operation key or id, a person id or linked key (`email:...`), or an order id.

    What was received (when, verified with which secret, how many times), which
    person it was mapped to and the keys linked to them, and each Customer.io
    operation with its attempts and outcome. Personal data is masked unless --show-pii.
    """
    from webhooks.ops.mask import mask
    from webhooks.ops.trace import NothingToTrace, render
    from webhooks.ops.trace import trace as follow

    with database() as engine:
        try:
            found = follow(engine, ref)
        except NothingToTrace as exc:
            raise click.ClickException(str(exc)) from None
    if not show_pii:
        for op in found["operations"]:
            op["payload"] = mask(op["payload"])
            op["person_id"] = mask(op["person_id"])  # an email, under GUEST_POLICY=email
        found["persons"] = mask(found["persons"])  # emails inside linked keys
    emit(found, as_json, lambda: render(found))


# --- simulate ---------------------------------------------------------------------------------


@click.command()
@click.argument("provider")
@click.argument("event_type", metavar="TYPE")
@click.option(
    "--url",
    default="http://127.0.0.1:8000",
    show_default=True,
    help="The running service (its base URL; /webhooks/PROVIDER is added).",
)
@click.option("--secret", help="Signing secret (default: the first one configured).")
def simulate(provider: str, event_type: str, url: str, secret: str | None) -> None:
    """Sign a sample webhook of PROVIDER's real shape and post it to a running service.

    TYPE is a Stripe event type (checkout.session.completed, invoice.paid, ...), a
    Shopify topic (orders/create, checkouts/create, ...) or an app event name
    (checkout_started, product_viewed, ...); an unknown one lists the samples. Each run
    is a fresh delivery of a new fact: follow it to the worker's `dry_run_operation`
    line, `webhooks trace`, or the fake Customer.io.
    """
    import httpx

    from webhooks.providers.samples import NoSample

    spec = _spec(provider)
    if spec.sample is None:
        raise click.BadParameter(f"{provider} has no samples", param_hint="PROVIDER")
    try:
        sample = spec.sample(event_type)
    except NoSample as exc:
        raise click.BadParameter(str(exc), param_hint="TYPE") from None
    if secret is None:
        try:
            configured = load_settings().provider(spec.name).secrets()
        except ConfigError as exc:
            raise click.ClickException(str(exc)) from None
        if not configured:
            raise click.ClickException(
                f"no {spec.env_prefix}WEBHOOK_SECRET configured (or pass --secret)"
            )
        secret = configured[0]
    headers = {
        **sample.headers,
        **spec.sign(sample.body, secret),
        "Content-Type": "application/json",
    }
    target = f"{url.rstrip('/')}/webhooks/{spec.name}"
    try:
        answer = httpx.post(target, content=sample.body, headers=headers, timeout=10)
    except httpx.HTTPError as exc:
        raise click.ClickException(
            f"cannot reach {target} ({type(exc).__name__}): is `webhooks serve` running there?"
        ) from None
    click.echo(f"POST {target} ({event_type}, {len(sample.body)} bytes): {answer.status_code}")
    click.echo(answer.text.strip())
    if answer.status_code >= 300:
        sys.exit(1)


# --- backfill ---------------------------------------------------------------------------------


@click.command()
@click.argument("provider")
@click.option("--since", type=Since(), required=True, help="From: 24h, 2026-11-01, ...")
@click.option("--until", type=Since(), default=None, help="Before (default: now).")
@click.option(
    "--types",
    "--topics",
    "types",
    default="",
    help="Comma-separated: Stripe event types; Shopify orders,refunds,customers,checkouts "
    "(default: all).",
)
@click.option(
    "--shop",
    "--account",
    "accounts",
    multiple=True,
    help="Shopify: the shop (my-store.myshopify.com); repeat for several (default: every "
    "shop in SHOPIFY_ADMIN_TOKEN).",
)
@click.option("--dry-run", is_flag=True, help="Fetch and count what would be stored.")
@click.option(
    "--attributes-only",
    is_flag=True,
    help="Send only person state (counts, lifetime value, dates), no events at all.",
)
@click.option("--json", "as_json", is_flag=True, help="The summary as JSON.")
def backfill(
    provider: str,
    since: datetime,
    until: datetime | None,
    types: str,
    accounts: tuple[str, ...],
    dry_run: bool,
    attributes_only: bool,
    as_json: bool,
) -> None:
    """Read what PROVIDER's webhooks may have missed back from its API, and store it.

    Stripe: the Events API (30 days of history; STRIPE_API_KEY, a restricted key with
    Events: Read); each event is stored as its webhook would have been. Shopify: orders
    (with refunds), customers and abandoned checkouts updated in the range, through the
    Admin API (SHOPIFY_ADMIN_TOKEN), each turned into the webhook it stands for. Both go
    to the backfill lane, which the worker takes only after live work: what a webhook
    already reported is a duplicate, and a rerun is safe. Old facts are history, not
    triggers (see docs/operations.md#backfill); --attributes-only sends no events at
    all. Exit 1 when the API refuses.
    """
    from webhooks.cli.progress import Progress
    from webhooks.ops.backfill import run
    from webhooks.providers.base import BackfillRequest
    from webhooks.providers.facts import fact_keys

    spec = _spec(provider)
    if spec.backfill is None:
        raise click.BadParameter(f"{provider} has no backfill yet", param_hint="PROVIDER")
    if until is not None and until <= since:
        raise click.BadParameter("must be after --since", param_hint="--until")
    try:
        settings = load_settings()
        provider_settings = settings.provider(spec.name)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    wanted = tuple(kind.strip() for kind in types.split(",") if kind.strip())
    request = BackfillRequest(since, until, wanted, accounts)
    facts = fact_keys(spec, provider_settings, settings.internal_id_key)
    with database() as engine, Progress(quiet=as_json) as progress:
        receiver = spec.receiver(provider_settings)
        try:
            deliveries = spec.backfill(provider_settings, request)
            summary = run(engine, receiver, deliveries, dry_run, progress, attributes_only, facts)
        except (ConfigError, IngestError) as exc:
            # IngestError: a fetched delivery the receiver cannot key, or the database
            # refusing the write; what was stored before it stays, a rerun goes on.
            raise click.ClickException(f"{type(exc).__name__}: {exc}") from None
        except LookupUnauthorized as exc:
            raise click.ClickException(
                f"{exc}: the key or token is wrong, revoked, or lacks read access "
                f"({spec.title}: see `webhooks backfill --help`)"
            ) from None
        except (LookupRefused, LookupUnavailable) as exc:
            raise click.ClickException(
                f"{exc}; nothing after it was fetched, rerun to go on"
            ) from None
    verb = "would store" if dry_run else "stored"
    emit(
        summary.as_dict() | {"dry_run": dry_run},
        as_json,
        lambda: (
            f"fetched {summary.fetched}: {verb} {summary.new} new in the backfill lane, "
            f"{summary.duplicates} already stored or reported"
            + (f", {summary.refreshed} record refreshes" if summary.refreshed else "")
            + "\n"
            + "\n".join(f"  {kind}: {n}" for kind, n in sorted(summary.new_by_type.items()))
        ).rstrip(),
    )


# --- reconcile --------------------------------------------------------------------------------


@click.command()
@click.option("--since", type=Since(), default="24h", show_default=True, help="How far back.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def reconcile(since: datetime, as_json: bool) -> None:
    """Backfill every configured provider since SINCE and report what the webhooks missed.

    What only the backfill found is stored (and delivered behind live traffic, old
    facts as history). Exit 0 when the webhooks had everything, 1 when something was
    missing (now filled in), 3 when a provider could not be checked. For cron:
    `webhooks reconcile --since 25h` daily, alerting on a non-zero exit.
    """
    from webhooks.ops.backfill import run
    from webhooks.providers import registry
    from webhooks.providers.base import BackfillRequest
    from webhooks.providers.facts import fact_keys

    try:
        settings = load_settings()
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    report: dict[str, Any] = {}
    failed: list[str] = []
    with database() as engine:
        for name in settings.enabled_providers():
            spec = registry.get(name)
            if spec.backfill is None:
                # The app endpoint's sender keeps what it sent: nothing to read back.
                reason = "the provider has no API to read missed deliveries back from"
                report[name] = {"checked": False, "reason": reason}
                continue
            provider_settings = settings.provider(name)
            facts = fact_keys(spec, provider_settings, settings.internal_id_key)
            try:
                deliveries = spec.backfill(provider_settings, BackfillRequest(since))
                receiver = spec.receiver(provider_settings)
                summary = run(engine, receiver, deliveries, facts=facts)
            except (
                ConfigError,
                IngestError,
                LookupRefused,
                LookupUnavailable,
                LookupUnauthorized,
            ) as exc:
                report[name] = {"checked": False, "reason": f"{type(exc).__name__}: {exc}"}
                failed.append(name)
                continue
            report[name] = {"checked": True, **summary.as_dict()}
    missed = sum(item.get("new", 0) for item in report.values())

    def human() -> str:
        lines = []
        for name, item in report.items():
            if not item["checked"]:
                lines.append(f"{name}: not checked ({item['reason']})")
                continue
            lines.append(
                f"{name}: {item['fetched']} fetched, {item['duplicates']} already received, "
                f"{item['new']} missed by the webhooks (now stored), "
                f"{item['refreshed']} records refreshed"
            )
            lines += [f"  {kind}: {n}" for kind, n in item["new_by_type"].items()]
        return "\n".join(lines) or "no provider is configured"

    emit({"since": since.isoformat(), "providers": report, "missed": missed}, as_json, human)
    sys.exit(1 if missed else UNREADABLE if failed else 0)


# --- register --------------------------------------------------------------------------------


@click.command()
@click.argument("provider")
@click.option("--url", required=True, help="The public endpoint: https://HOST/webhooks/PROVIDER")
@click.option(
    "--shop",
    "accounts",
    multiple=True,
    help="Shopify: the shop; repeat for several (default: every shop in SHOPIFY_ADMIN_TOKEN).",
)
@click.option("--dry-run", is_flag=True, help="Say what would change, change nothing.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def register(
    provider: str, url: str, accounts: tuple[str, ...], dry_run: bool, as_json: bool
) -> None:
    """Create or update PROVIDER's webhook subscriptions at URL with exactly the handled types.

    Idempotent: a second run changes nothing. Lists what exists and what changed. Stripe
    (STRIPE_API_KEY with Webhook Endpoints: Write): one endpoint; a new one's signing
    secret is printed once (put it in STRIPE_WEBHOOK_SECRET). Shopify (SHOPIFY_ADMIN_TOKEN
    of an app with write access to webhooks): one subscription per handled topic, per
    shop, through GraphQL webhookSubscriptionCreate; they are signed with the app's
    client secret.
    """
    from webhooks.providers.base import RegisterRequest

    spec = _spec(provider)
    if spec.register is None:
        raise click.BadParameter(f"{provider} has no registration yet", param_hint="PROVIDER")
    if not url.startswith(("https://", "http://")):
        raise click.BadParameter("must be an http(s) URL", param_hint="--url")
    try:
        request = RegisterRequest(url, dry_run, accounts)
        results = spec.register(load_settings().provider(spec.name), request)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    except LookupUnauthorized as exc:
        raise click.ClickException(
            f"{exc}: the credentials are wrong, revoked, or cannot write webhook endpoints"
        ) from None
    except (LookupRefused, LookupUnavailable) as exc:
        raise click.ClickException(str(exc)) from None

    def human() -> str:
        would = "would " if dry_run else ""
        lines = []
        for found in results:
            where = f"{found['target']}: " if found.get("target") else ""
            action = found["action"]
            count = len(found["events"])
            if action == "create":
                lines.append(f"{where}{would}create {url} with {count} event types")
                if found.get("secret"):
                    lines.append(f"signing secret (shown once): {found['secret']}")
            elif action == "update":
                lines.append(f"{where}{would}update {found.get('endpoint') or url}")
                lines += [f"  + {kind}" for kind in found["added"]]
                lines += [f"  - {kind}" for kind in found["removed"]]
            else:
                name = found.get("endpoint") or "the subscriptions"
                lines.append(f"{where}{name} at {url} already has the {count} types")
            lines += [f"  other endpoint: {other}" for other in found["other_endpoints"]]
            if found.get("note"):
                lines.append(f"  note: {found['note']}")
        return "\n".join(lines)

    emit({"targets": results, "dry_run": dry_run}, as_json, human)
