"""Delivery throughput: a backlog of Stripe events through the worker to a fake Customer.io.

    python benchmarks/delivery.py [--events 50000] [--latency-ms 50] [--max-rps 100]
                                  [--database-url postgresql+psycopg://...] [--workers 1]
                                  [--map-batch 100] [--split]

The inbox is pre-filled with `--events` unique, signed and parsed Stripe deliveries
(paid checkout sessions and invoice renewals from the golden fixtures), stored with
webhooks.storage.inbox.store_delivery as the web endpoint stores them. Each maps to an
identify and an order_completed. The fake Customer.io runs as its own process, answering
every request after `--latency-ms`; the worker gets CUSTOMERIO_MAX_RPS=`--max-rps`.

Three measurements, each on a fresh database (temporary SQLite files by default, or a
fresh PostgreSQL schema, dropped at the end):

1. stage 1 alone: process_batch (the worker's own function) in this process, until the
   inbox is drained: inbox rows mapped per second;
2. stage 2 alone: one real `webhooks worker` delivering the outbox stage 1 left;
3. both stages, the issue's scenario: one real `webhooks worker` (or `--workers` of
   them) on the full inbox backlog, until the fake has accepted every expected
   operation; with `--split`, `--workers` processes that only map (WORKER_STAGE=map)
   and one that only sends (WORKER_STAGE=send), each stage on a core of its own.

Throughput is counted from the worker's first Customer.io request (its credentials
check, right after start-up) to the last accepted operation; the wall figure from
process start is printed too. The worker's peak RSS is its VmHWM. Exits 0 when it
measured, whatever the numbers.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from harness import (
    STRIPE_SECRET,
    EventFactory,
    Exactness,
    check_exactly_once,
    code_version,
    fresh_database,
    peak_rss_mb,
    run_main,
    service_env,
    start,
    start_fake,
    verdict,
    worker_server,
)
from ingest import BenchmarkError
from sqlalchemy.engine import Engine, make_url

from webhooks.config import load_settings
from webhooks.core import heap
from webhooks.fakes.customerio import FakeCustomerIOClient
from webhooks.providers.stripe.signature import StripeReceiver, sign
from webhooks.stage1.process import process_batch
from webhooks.stage1.setup import mapper_configs
from webhooks.storage.db import create_db_engine
from webhooks.storage.inbox import store_delivery
from webhooks.storage.schema import InboxState, OutboxState, inbox, outbox

MIN_EVENTS_PER_S = 2000.0
MAX_RSS_MB = 200.0
OPS_PER_EVENT = 2  # identify + order_completed


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=50_000, help="inbox backlog size")
    parser.add_argument("--latency-ms", type=int, default=50, help="fake latency per request")
    parser.add_argument("--max-rps", type=float, default=100.0, help="CUSTOMERIO_MAX_RPS")
    parser.add_argument("--persons", type=int, default=1000, help="distinct customers")
    parser.add_argument("--timeout", type=float, default=1800.0, help="max seconds per run")
    parser.add_argument("--log-level", default="INFO", help="the worker's LOG_LEVEL")
    parser.add_argument("--database-url", help="PostgreSQL URL; default: temporary SQLite")
    parser.add_argument(
        "--map-batch",
        type=int,
        default=100,
        help="WORKER_MAP_BATCH: inbox rows a worker maps in one transaction",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="`webhooks worker` processes draining the both-stages backlog (several: "
        "PostgreSQL, where stage 1 maps in parallel; each applies --max-rps on its own)",
    )
    parser.add_argument(
        "--split",
        action="store_true",
        help="the backlog run as separate processes per stage (WORKER_STAGE): --workers "
        "that only map and one that only sends",
    )
    args = parser.parse_args(argv)
    if args.database_url and make_url(args.database_url).get_backend_name() != "postgresql":
        parser.error("--database-url must be a postgresql+psycopg:// URL")
    if args.events < 1:
        parser.error("--events must be at least 1")
    if args.workers < 1 or args.map_batch < 1:
        parser.error("--workers and --map-batch must be at least 1")
    return args


# --- stage 1 -------------------------------------------------------------------------


def prefill(engine: Engine, events: int, persons: int) -> set[str]:
    """Store `events` signed, verified, parsed deliveries; returns their order ids."""
    factory, provider = EventFactory(persons), StripeReceiver([STRIPE_SECRET])
    orders: set[str] = set()
    started = time.perf_counter()
    # One event a second, ending now: a person's orders (every `persons`-th event) are
    # minutes apart, as real orders are, never two in one second.
    first = int(time.time()) - events
    for index in range(events):
        event = factory.make(index, first + index)
        headers = {"stripe-signature": sign(event.body, STRIPE_SECRET)}
        provider.verify(event.body, headers)
        if not store_delivery(engine, provider.parse(event.body, headers)):
            raise BenchmarkError(f"{event.event_id} stored twice")
        orders.add(event.order_id)
    seconds = time.perf_counter() - started
    print(f"  pre-filled {events} inbox rows in {seconds:.1f} s ({events / seconds:.0f}/s)")
    return orders


def map_in_process(engine: Engine, limit: int) -> float:
    """Run stage 1 (process_batch, as the worker calls it) until the inbox is drained."""
    owner, config, mapped = "benchmark-stage1", mapper_configs(load_settings(_env_file=None)), 0
    heap.settle()  # as `webhooks worker` does once it has started
    started = time.perf_counter()
    while batch := process_batch(engine, owner, config, limit=limit):
        mapped += batch
    seconds = time.perf_counter() - started
    print(f"  stage 1 alone: {mapped} rows mapped in {seconds:.1f} s", flush=True)
    return mapped / seconds


def pending(engine: Engine) -> tuple[int, int]:
    """Pending inbox rows and pending outbox operations."""
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(
                sa.select(sa.func.count())
                .where(inbox.c.state == InboxState.PENDING)
                .scalar_subquery(),
                sa.select(sa.func.count())
                .where(outbox.c.state == OutboxState.PENDING)
                .scalar_subquery(),
            )
        ).one()
    return int(rows[0]), int(rows[1])


# --- a worker run --------------------------------------------------------------------


@dataclass
class WorkerRun:
    """What one worker run delivered, how fast, with how much memory."""

    name: str
    events: int
    operations: int
    batch_requests: int
    fake_ms_per_request: float  # mean time the fake spent on a batch, latency included
    active_s: float  # first Customer.io request -> last accepted operation
    wall_s: float  # worker process start -> last accepted operation
    inbox_drained_s: float | None
    peak_rss_mb: float | None
    exactness: Exactness

    @property
    def events_per_s(self) -> float:
        """order_completed events accepted per second (active window)."""
        return self.events / self.active_s if self.active_s > 0 else 0.0


def wait_delivered(
    server_pid: int, engine: Engine, fake: FakeCustomerIOClient, expected_ops: int, timeout: float
) -> tuple[float | None, float | None]:
    """Poll until the fake has every operation; (inbox drain time, peak RSS)."""
    started = time.time()
    drained: float | None = None
    seen_inbox = False
    last_print, rss = started, None
    while time.time() - started < timeout:
        accepted = fake.stats()["operations"]
        rss = peak_rss_mb(server_pid) or rss
        inbox_left, outbox_left = pending(engine)
        seen_inbox = seen_inbox or inbox_left > 0
        if drained is None and seen_inbox and inbox_left == 0:
            drained = time.time() - started
        if accepted >= expected_ops or (inbox_left == outbox_left == 0 and accepted):
            return drained, rss
        if time.time() - last_print >= 10:
            last_print = time.time()
            print(
                f"    {last_print - started:5.0f} s: {accepted} operations accepted, "
                f"{inbox_left} inbox / {outbox_left} outbox rows pending",
                flush=True,
            )
        time.sleep(0.5)
    raise BenchmarkError(f"not delivered within {timeout:g} s")


def run_worker(
    name: str,
    url: str,
    orders: set[str],
    fake: FakeCustomerIOClient,
    args: argparse.Namespace,
    count: int = 1,
    split: bool = False,
) -> WorkerRun:
    """`count` real `webhooks worker` processes until the fake accepted every operation of
    `orders` (the peak RSS is the first one's); `split`: they only map, and one more
    only sends."""
    fake.reset()
    fake.set_faults(latency_ms=args.latency_ms)
    env = service_env(
        url,
        fake.url,
        CUSTOMERIO_MAX_RPS=str(args.max_rps),
        LOG_LEVEL=args.log_level,
        WORKER_MAP_BATCH=str(args.map_batch),
    )
    engine = create_db_engine(url)
    with ExitStack() as stack:
        stack.callback(engine.dispose)
        started = time.time()
        stages = ["map"] * count + ["send"] if split else ["both"] * count
        servers = [
            start(
                stack,
                worker_server(env | {"WORKER_STAGE": stage}, args.workdir, f"{stage}-{index}"),
                args.workdir,
                False,
            )
            for index, stage in enumerate(stages)
        ]
        assert servers[0].proc is not None
        drained, rss = wait_delivered(
            servers[0].proc.pid, engine, fake, OPS_PER_EVENT * len(orders), args.timeout
        )
    records, requests = fake.operations(), fake.requests()
    last = max(record["received_at"] for record in records)
    batches = [r for r in requests if r["path"] == "/api/v2/batch"]
    exactness = check_exactly_once(records, orders, fake.stats()["duplicates_ignored"])
    return WorkerRun(
        name=name,
        events=exactness.accepted,
        operations=len(records),
        batch_requests=len(batches),
        fake_ms_per_request=sum(r["duration_ms"] for r in batches) / max(1, len(batches)),
        active_s=last - requests[0]["time"],
        wall_s=last - started,
        inbox_drained_s=drained,
        peak_rss_mb=rss,
        exactness=exactness,
    )


# --- report --------------------------------------------------------------------------


def print_runs(mapping_rate: float, runs: list[WorkerRun]) -> None:
    """The results table."""
    print(f"\nstage 1 alone (in-process process_batch): {mapping_rate:8.0f} inbox rows/s")
    print(
        f"\n{'worker run':<14}{'events/s':>10}{'ops/s':>9}{'wall ev/s':>11}{'requests':>10}"
        f"{'ops/req':>9}{'fake ms/req':>12}{'seconds':>9}{'peak RSS':>10}  mapping rows/s"
    )
    for run in runs:
        mapping = f"{run.events / run.inbox_drained_s:8.0f}" if run.inbox_drained_s else "  (none)"
        rss = f"{run.peak_rss_mb:7.1f} MB" if run.peak_rss_mb else "     n/a"
        print(
            f"{run.name:<14}{run.events_per_s:>10.0f}{run.operations / run.active_s:>9.0f}"
            f"{run.events / run.wall_s:>11.0f}{run.batch_requests:>10}"
            f"{run.operations / max(1, run.batch_requests):>9.1f}"
            f"{run.fake_ms_per_request:>12.1f}{run.active_s:>9.1f}"
            f"{rss:>10}  {mapping}"
        )


def print_targets(runs: list[WorkerRun]) -> None:
    """The issue's targets, judged on the both-stages run; exactness on every run."""
    both = runs[-1]
    rss = max(run.peak_rss_mb or 0.0 for run in runs)
    print("\nTargets from the issue (both-stages run = a backlog of webhooks):")
    print(
        f"  events/s >= {MIN_EVENTS_PER_S:.0f}:   {both.events_per_s:8.0f}  "
        f"{verdict(both.events_per_s >= MIN_EVENTS_PER_S)}"
        f"   (stage 2 alone: {runs[0].events_per_s:.0f}/s)"
    )
    print(f"  worker peak RSS < {MAX_RSS_MB:.0f} MB: {rss:6.1f}  {verdict(rss < MAX_RSS_MB)}")
    for run in runs:
        print(f"  exactly once ({run.name}): {verdict(run.exactness.ok)}")
        print(f"    {run.exactness.describe()}")


def staged(args: argparse.Namespace, fake: FakeCustomerIOClient) -> tuple[float, WorkerRun]:
    """Stage 1 alone in this process, then stage 2 alone in a real worker."""
    print("\nstages measured apart:", flush=True)
    with fresh_database(args.database_url, args.workdir, "staged") as url:
        engine = create_db_engine(url)
        try:
            orders = prefill(engine, args.events, args.persons)
            mapping_rate = map_in_process(engine, args.map_batch)
        finally:
            engine.dispose()
        run = run_worker("stage 2 alone", url, orders, fake, args)
    print(f"  stage 2 alone: delivered in {run.active_s:.1f} s", flush=True)
    return mapping_rate, run


def backlog(args: argparse.Namespace, fake: FakeCustomerIOClient) -> WorkerRun:
    """The issue's scenario: one real worker on a full inbox backlog (both stages)."""
    print("\nboth stages (an inbox backlog):", flush=True)
    with fresh_database(args.database_url, args.workdir, "backlog") as url:
        engine = create_db_engine(url)
        try:
            orders = prefill(engine, args.events, args.persons)
        finally:
            engine.dispose()
        name = "both stages" if args.workers == 1 else f"both x{args.workers}"
        if args.split:
            name = f"map x{args.workers} + send"
        run = run_worker(name, url, orders, fake, args, args.workers, args.split)
    print(f"  both stages: delivered in {run.active_s:.1f} s", flush=True)
    return run


def benchmark(args: argparse.Namespace) -> None:
    """Set up the fake, measure, report; every process and file is gone on exit."""
    with ExitStack() as stack:
        args.workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="wh-deliv-")))
        fake = start_fake(stack, args.workdir)
        backend = "postgresql (fresh schema)" if args.database_url else "sqlite (temporary file)"
        print(
            f"Delivery benchmark: {args.events} Stripe events (identify + order_completed each), "
            f"{backend}\n  fake Customer.io (own process): {args.latency_ms} ms per request; "
            f"worker: CUSTOMERIO_MAX_RPS={args.max_rps:g}, LOG_LEVEL={args.log_level}; "
            f"{os.cpu_count()} CPUs; code {code_version()}"
        )
        mapping_rate, stage2 = staged(args, fake)
        both = backlog(args, fake)
        print_runs(mapping_rate, [stage2, both])
        print_targets([stage2, both])


def main(argv: list[str] | None = None) -> int:
    """0 when it measured, 1 when the benchmark broke, 130 on Ctrl-C."""
    args = parse_args(argv)
    return run_main(benchmark, args)


if __name__ == "__main__":
    sys.exit(main())
