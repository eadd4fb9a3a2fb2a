"""Shared pieces of the delivery benchmarks (delivery.py, end_to_end.py, ack_under_outage.py).

* unique, realistic Stripe events built from the golden fixtures (tests/fixtures/stripe);
* the fake Customer.io and `webhooks worker` / `webhooks serve` as subprocesses, each in
  its own session so that stopping it stops its children (ingest.Server does the work);
* fresh databases (a temporary SQLite file, or a PostgreSQL schema dropped afterwards);
* the exactly-once check of what the fake accepted, percentiles and PASS/FAIL.

The scripts put this directory first on sys.path (they run as `python benchmarks/x.py`),
so `ingest` and `loadgen` are imported as top-level modules, as ingest.py does.
"""

from __future__ import annotations

import json
import math
import secrets
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ingest import (
    STRIPE_SECRET,
    BenchmarkError,
    Server,
    clean_environment,
    free_port,
    postgres_databases,
    webhooks_cli,
)

from webhooks.fakes.customerio import DEFAULT_API_KEY, DEFAULT_SITE_ID, FakeCustomerIOClient
from webhooks.storage import migrate
from webhooks.storage.db import create_db_engine

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures" / "stripe"
ORDER_EVENT = "order_completed"
# Fixtures whose events map to identify + order_completed under the default settings.
CHECKOUT_FIXTURE = "checkout_session_completed_paid"
INVOICE_FIXTURE = "invoice_paid_renewal_pre_basil"


# --- events ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Event:
    """One unique Stripe event: its id, the order id it must produce, and its body."""

    event_id: str
    order_id: str
    body: bytes


def _fixture_body(name: str) -> dict[str, Any]:
    return dict(json.loads((FIXTURES / f"{name}.json").read_text())["body"])


class EventFactory:
    """Stripe events from the golden fixtures, every id unique across the run.

    Even numbers give a paid `checkout.session.completed` (order id: its payment intent),
    odd ones an `invoice.paid` renewal (order id: the invoice). Customers cycle through
    `persons` distinct people, so identifies repeat people as real traffic does.
    """

    def __init__(self, persons: int = 1000) -> None:
        self._token = secrets.token_hex(4)
        self._persons = max(1, persons)
        self._checkout = _fixture_body(CHECKOUT_FIXTURE)
        self._invoice = _fixture_body(INVOICE_FIXTURE)

    def make(self, index: int, created: int) -> Event:
        """Event number `index`, created at Unix time `created` (2-space JSON, like Stripe)."""
        suffix = f"{self._token}{index:09d}"
        person = index % self._persons
        event = json.loads(json.dumps(self._invoice if index % 2 else self._checkout))
        event.update(id=f"evt_bench{suffix}", created=created)
        obj = event["data"]["object"]
        obj.update(customer=f"cus_bench{person:06d}", payment_intent=f"pi_bench{suffix}")
        if index % 2:
            obj.update(id=f"in_bench{suffix}", charge=f"ch_bench{suffix}")
            # One subscription per person: a shared one would link every person to it.
            obj.update(subscription=f"sub_bench{person:06d}")
            obj.update(customer_email=f"user{person}@example.test")
            obj["subscription_details"]["metadata"]["customer_id"] = f"user_{person}"
            order_id = obj["id"]
        else:
            obj.update(id=f"cs_bench{suffix}", client_reference_id=f"user_{person}")
            obj["customer_details"]["email"] = f"user{person}@example.test"
            obj["metadata"]["customer_id"] = f"user_{person}"
            order_id = obj["payment_intent"]
        body = json.dumps(event, indent=2).encode()
        return Event(event_id=event["id"], order_id=order_id, body=body)


# --- processes and databases ---------------------------------------------------------


def service_env(database_url: str, fake_url: str | None, **extra: str) -> dict[str, str]:
    """The environment of `webhooks serve` / `webhooks worker`, nothing stray inherited."""
    env = clean_environment() | {
        "DATABASE_URL": database_url,
        "STRIPE_WEBHOOK_SECRET": STRIPE_SECRET,
    }
    if fake_url:
        env |= {
            "CUSTOMERIO_SITE_ID": DEFAULT_SITE_ID,
            "CUSTOMERIO_API_KEY": DEFAULT_API_KEY,
            "CUSTOMERIO_TRACK_URL": fake_url,
        }
    return env | extra


def start(stack: ExitStack, server: Server, workdir: Path, ready: bool = True) -> Server:
    """Start `server`, stop it when `stack` closes; wait for its probe unless `ready` is off."""
    stack.callback(server.stop)
    server.start(workdir)
    if ready:
        server.wait_ready()
    return server


def start_fake(stack: ExitStack, workdir: Path) -> FakeCustomerIOClient:
    """The fake Customer.io as its own process (`webhooks dev fake-customerio`), and a client."""
    port = free_port()
    command = [sys.executable, "-m", "webhooks", "dev", "fake-customerio", "--port", str(port)]
    fake = Server("fake", command, clean_environment(), port, workdir / "fake.log", "/_fake/stats")
    start(stack, fake, workdir)
    client = FakeCustomerIOClient(f"http://127.0.0.1:{port}")
    stack.callback(client.close)
    return client


def worker_server(env: dict[str, str], workdir: Path, name: str = "worker") -> Server:
    """`webhooks worker` (no port: never probed)."""
    return Server(name, [webhooks_cli(), "worker"], env, 0, workdir / f"{name}.log", "")


def web_server(env: dict[str, str], workdir: Path, workers: int) -> Server:
    """gunicorn with the packaged config on a free port: the web processes alone, as
    the Procfile's `web:` runs them (no delivery worker)."""
    port = free_port()
    command = [sys.executable, "-m", "gunicorn", "-c", "python:webhooks.gunicorn_conf"]
    command += ["--bind", f"127.0.0.1:{port}", "--workers", str(workers)]
    return Server("web", command, env, port, workdir / "web.log", "/readyz")


def serve_server(env: dict[str, str], workdir: Path, workers: int) -> Server:
    """`webhooks serve` on a free port; it starts its own delivery worker."""
    port = free_port()
    command = [webhooks_cli(), "serve", "--port", str(port), "--workers", str(workers)]
    return Server("serve", command, env, port, workdir / "serve.log", "/readyz")


def serve_with_fake(
    stack: ExitStack,
    workdir: Path,
    database_url: str | None,
    workers: int,
    name: str,
    split: bool = False,
    **extra: str,
) -> tuple[FakeCustomerIOClient, str, Server]:
    """The fake Customer.io, a fresh database and `webhooks serve` (`extra` in its
    environment), all stopped when `stack` closes; returns (fake, database url, server).
    `split`: gunicorn alone and two workers, one that only maps and one that only sends
    (WORKER_STAGE), instead of `webhooks serve` and its one worker."""
    fake = start_fake(stack, workdir)
    url = stack.enter_context(fresh_database(database_url, workdir, name))
    env = service_env(url, fake.url, **extra)
    if not split:
        return fake, url, start(stack, serve_server(env, workdir, workers), workdir)
    web = start(stack, web_server(env, workdir, workers), workdir)
    for stage in ("map", "send"):
        worker = worker_server(env | {"WORKER_STAGE": stage}, workdir, f"worker-{stage}")
        start(stack, worker, workdir, ready=False)
    return fake, url, web


@contextmanager
def fresh_database(postgres_url: str | None, workdir: Path, name: str) -> Iterator[str]:
    """A migrated, empty database: SQLite in `workdir`, or a PostgreSQL schema (dropped after)."""
    if postgres_url:
        with postgres_databases(postgres_url) as dbs:
            _migrate(dbs.real_url)
            yield dbs.real_url
        return
    url = f"sqlite:///{workdir / f'{name}.db'}"
    _migrate(url)
    yield url


def _migrate(url: str) -> None:
    engine = create_db_engine(url)
    try:
        migrate.upgrade(engine)
    finally:
        engine.dispose()


def peak_rss_mb(pid: int) -> float | None:
    """The process's peak resident set (VmHWM) in MB, or None once it has gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return None


def wait_worker_up(fake: FakeCustomerIOClient, timeout: float = 30.0) -> None:
    """The worker's first call (its credentials check) shows it is running."""
    deadline = time.monotonic() + timeout
    while not fake.stats()["requests"]:
        if time.monotonic() > deadline:
            raise BenchmarkError("the worker never called the fake Customer.io")
        time.sleep(0.1)


# --- checking what the fake accepted ----------------------------------------------------


@dataclass(frozen=True, slots=True)
class Exactness:
    """How the fake's accepted order events compare with the expected order ids."""

    expected: int
    accepted: int
    missing: int
    duplicated: int
    unexpected: int
    identifies: int
    duplicates_ignored: int

    @property
    def ok(self) -> bool:
        """Exactly one accepted order_completed per expected order, nothing else."""
        return not (self.missing or self.duplicated or self.unexpected)

    def describe(self) -> str:
        """One line for the report."""
        return (
            f"{self.accepted} order_completed accepted for {self.expected} expected orders: "
            f"{self.missing} missing, {self.duplicated} duplicated, {self.unexpected} "
            f"unexpected; {self.identifies} identifies; the fake ignored "
            f"{self.duplicates_ignored} re-sent event ids"
        )


def order_id(record: dict[str, Any]) -> str | None:
    """The order id of an accepted order_completed operation, else None."""
    item = record.get("operation") or {}
    if item.get("action") != "event" or item.get("name") != ORDER_EVENT:
        return None
    value = (item.get("attributes") or {}).get("order_id")
    return str(value) if value is not None else None


def is_identify(record: dict[str, Any]) -> bool:
    """Whether an accepted operation is a v2 identify."""
    return (record.get("operation") or {}).get("action") == "identify"


def check_exactly_once(
    records: Sequence[dict[str, Any]], expected: set[str], duplicates_ignored: int
) -> Exactness:
    """Compare the fake's accepted operations with the expected order ids."""
    counts = Counter(oid for oid in map(order_id, records) if oid is not None)
    return Exactness(
        expected=len(expected),
        accepted=sum(counts.values()),
        missing=len(expected - counts.keys()),
        duplicated=sum(1 for oid, n in counts.items() if n > 1 and oid in expected),
        unexpected=len(counts.keys() - expected),
        identifies=sum(1 for record in records if is_identify(record)),
        duplicates_ignored=duplicates_ignored,
    )


# --- numbers -------------------------------------------------------------------------


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile of `values` (nan when empty)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


def verdict(ok: bool) -> str:
    """PASS or FAIL."""
    return "PASS" if ok else "FAIL"


def interrupt(signum: int, _frame: Any) -> None:
    """SIGTERM handler: take the Ctrl-C path, so every ExitStack clean-up runs."""
    raise KeyboardInterrupt(f"signal {signum}")


def handle_signals() -> None:
    """SIGTERM and SIGINT raise KeyboardInterrupt (SIGINT too when started in background)."""
    signal.signal(signal.SIGTERM, interrupt)
    signal.signal(signal.SIGINT, signal.default_int_handler)


def code_version() -> str:
    """The commit measured, and whether the product code had uncommitted changes."""
    git = ["git", "-C", str(REPO)]
    head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run(
        [*git, "status", "--porcelain", "--", "webhooks", "mappers"],
        capture_output=True,
        text=True,
    )
    if head.returncode:
        return "unknown (not a git checkout)"
    changes = " + uncommitted changes in webhooks/ or mappers/" if dirty.stdout.strip() else ""
    return head.stdout.strip() + changes


def run_main(
    benchmark: Callable[[Any], None],
    args: Any,
    errors: tuple[type[Exception], ...] = (),
) -> int:
    """Run a benchmark: 0 when it measured, 1 when it broke, 130 on Ctrl-C or SIGTERM."""
    handle_signals()
    try:
        benchmark(args)
    except KeyboardInterrupt:
        print("\ninterrupted; processes stopped and temporary files removed", file=sys.stderr)
        return 130
    except (BenchmarkError, *errors) as exc:
        print(f"\nbenchmark failed: {exc}", file=sys.stderr)
        return 1
    return 0
