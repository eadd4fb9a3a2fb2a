"""Webhook acknowledgement latency with Customer.io healthy, down and slow, in one run.

    python benchmarks/ack_under_outage.py [--rounds 3] [--duration 10] [--slow-ms 2000]
                                          [--database-url postgresql+psycopg://...]

One `webhooks serve` (gunicorn plus the delivery worker it starts) against a fake
Customer.io in its own process. Each round sets the fake's faults and drives the
webhook endpoint with wrk (benchmarks/loadgen.py: pre-signed unique Stripe checkout
sessions, 2 threads, 16 connections, closed loop, as benchmarks/ingest.py), once per
condition, interleaved:

* healthy: no faults;
* down:    the fake drops every API connection (fault `down`);
* slow:    the fake answers every API request after `--slow-ms` (fault `latency_ms`).

The worker keeps mapping and delivering (or retrying) throughout, so each condition
measures the acknowledgement path beside the worker's real behaviour. Reported: medians
over rounds of accepted/s, p50 and p99 per condition, and the ratios to healthy.
Criterion (ours; the issue says "near 1"): PASS when the p50 ratio of each outage to
healthy is within 1.5x either way (1/1.5 to 1.5): a healthy Customer.io that makes the
acks slower fails as much as an outage that does; p99 ratios are printed beside it.
Afterwards the faults are cleared and every stored webhook must reach the fake exactly
once (one order_completed per order id) within `--drain-timeout`. Exits 0 when it
measured.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from harness import (
    check_exactly_once,
    code_version,
    run_main,
    serve_with_fake,
    verdict,
    wait_worker_up,
)
from ingest import Server, describe, measure
from loadgen import IdSequence, WrkError, WrkResult, wrk_path
from sqlalchemy.engine import make_url

from webhooks.fakes.customerio import FakeCustomerIOClient
from webhooks.storage.db import create_db_engine
from webhooks.storage.schema import InboxState, OutboxState, inbox, outbox

MAX_P50_RATIO = 1.5
# The loadgen template: event evt_1P<suffix> carries payment intent (the order) pi_3P<suffix>.
EVENT_PREFIX, ORDER_PREFIX = "evt_1P", "pi_3P"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the three conditions")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per wrk run")
    parser.add_argument("--warmup", type=float, default=2.0, help="healthy warm-up seconds")
    parser.add_argument("--slow-ms", type=int, default=2000, help="latency of the slow fake")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers")
    parser.add_argument("--connections", type=int, default=16, help="wrk connections")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument("--wrk-timeout", type=float, default=10.0, help="wrk reply timeout")
    parser.add_argument("--pool-rate", type=float, default=5000.0, help="requests/s per pool")
    parser.add_argument("--log-level", default="INFO", help="the service's LOG_LEVEL")
    parser.add_argument("--drain-timeout", type=float, default=900.0, help="wait for delivery")
    parser.add_argument("--database-url", help="PostgreSQL URL; default: temporary SQLite")
    args = parser.parse_args(argv)
    if args.database_url and make_url(args.database_url).get_backend_name() != "postgresql":
        parser.error("--database-url must be a postgresql+psycopg:// URL")
    if args.rounds < 1 or args.duration < 1 or args.connections < args.threads:
        parser.error("--rounds, --duration >= 1 and --connections >= --threads")
    return args


def conditions(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """Condition name -> the fake's faults."""
    return {"healthy": {}, "down": {"down": True}, "slow": {"latency_ms": args.slow_ms}}


# --- measuring -----------------------------------------------------------------------


def run_rounds(
    server: Server, fake: FakeCustomerIOClient, args: argparse.Namespace
) -> dict[str, list[WrkResult]]:
    """A healthy warm-up, then `--rounds` x (healthy, down, slow)."""
    ids, results = IdSequence(), {name: [] for name in conditions(args)}
    warm = measure(server, args, ids, args.workdir, "warmup", args.warmup, args.pool_rate)
    print(f"  warm-up       healthy  {describe(warm)}", flush=True)
    rate = max(args.pool_rate, 2 * warm.accepted_per_s)
    for number in range(1, args.rounds + 1):
        for name, faults in conditions(args).items():
            fake.set_faults(**faults)
            time.sleep(1.0)  # let a request in flight under the previous faults finish
            label = f"round{number}-{name}"
            result = measure(server, args, ids, args.workdir, label, args.duration, rate)
            results[name].append(result)
            print(f"  round {number}/{args.rounds}   {name:<8} {describe(result)}", flush=True)
    fake.set_faults()
    return results


# --- the delivery check ------------------------------------------------------------------


def counts(url: str) -> dict[str, int]:
    """Inbox rows, pending inbox rows, and outbox rows by state."""
    engine = create_db_engine(url)
    try:
        with engine.connect() as conn:
            found = {"inbox": conn.scalar(sa.select(sa.func.count()).select_from(inbox)) or 0}
            found["inbox pending"] = (
                conn.scalar(sa.select(sa.func.count()).where(inbox.c.state == InboxState.PENDING))
                or 0
            )
            rows = conn.execute(sa.select(outbox.c.state, sa.func.count()).group_by("state"))
            found |= {f"outbox {state}": int(n) for state, n in rows}
        return found
    finally:
        engine.dispose()


def expected_orders(url: str) -> set[str]:
    """The order id of every stored webhook (from its event id, by the template's ids)."""
    engine = create_db_engine(url)
    try:
        with engine.connect() as conn:
            ids = conn.scalars(sa.select(inbox.c.delivery_id)).all()
    finally:
        engine.dispose()
    return {ORDER_PREFIX + event_id.removeprefix(EVENT_PREFIX) for event_id in ids}


def drain(url: str, timeout: float) -> float:
    """Wait until nothing is pending in the inbox or the outbox; seconds it took."""
    started = time.monotonic()
    last_print = started
    while time.monotonic() - started < timeout:
        found = counts(url)
        if not found["inbox pending"] and not found.get(f"outbox {OutboxState.PENDING}"):
            return time.monotonic() - started
        if time.monotonic() - last_print >= 15:
            last_print = time.monotonic()
            print(f"    {last_print - started:5.0f} s: {found}", flush=True)
        time.sleep(1.0)
    print(f"  WARNING: still pending after {timeout:g} s: {counts(url)}")
    return time.monotonic() - started


def check_delivery(
    url: str, fake: FakeCustomerIOClient, results: list[WrkResult], timeout: float
) -> None:
    """Every stored webhook delivered once; store-then-ack: at least one row per 2xx."""
    print("\nAfter clearing the faults (waiting for the worker to deliver the backlog):")
    seconds = drain(url, timeout)
    found = counts(url)
    accepted = sum(result.accepted for result in results)
    stats = fake.stats()
    exact = check_exactly_once(fake.operations(), expected_orders(url), stats["duplicates_ignored"])
    print(f"  drained {seconds:.0f} s after the last run; {found}")
    print(f"  fake: {stats['requests']} API requests, by status {stats['by_status']}")
    ok = found["inbox"] >= accepted
    print(f"  inbox rows >= 2xx answers ({found['inbox']} >= {accepted}): {verdict(ok)}")
    print(f"  every stored webhook delivered exactly once: {verdict(exact.ok)}")
    print(f"    {exact.describe()}")


# --- report --------------------------------------------------------------------------


def median(results: list[WrkResult], metric: str) -> float:
    """Median of one WrkResult attribute over rounds."""
    return statistics.median(float(getattr(result, metric)) for result in results)


def print_table(results: dict[str, list[WrkResult]]) -> None:
    """Medians per condition, the ratios to healthy, and the PASS/FAIL criterion."""
    print(
        f"\n{'condition':<10}{'accepted/s':>12}{'p50 ms':>9}{'p99 ms':>9}"
        f"{'p50 ratio':>11}{'p99 ratio':>11}   flagged rounds"
    )
    base_p50 = median(results["healthy"], "p50_ms")
    base_p99 = median(results["healthy"], "p99_ms")
    ratios: dict[str, float] = {}
    for name, runs in results.items():
        p50, p99 = median(runs, "p50_ms"), median(runs, "p99_ms")
        ratios[name] = p50 / base_p50 if base_p50 else float("nan")
        flagged = sum(1 for run in runs if run.problems())
        print(
            f"{name:<10}{median(runs, 'accepted_per_s'):>12.1f}{p50:>9.2f}{p99:>9.2f}"
            f"{ratios[name]:>11.2f}{(p99 / base_p99 if base_p99 else float('nan')):>11.2f}"
            f"   {flagged}/{len(runs)}"
        )
    low, high = 1 / MAX_P50_RATIO, MAX_P50_RATIO
    print(
        "\nTarget from the issue: ack latency ratio near 1 "
        f"(PASS: {low:.2f} <= p50 ratio <= {high})"
    )
    for name in ("down", "slow"):
        ok = low <= ratios[name] <= high
        print(f"  {name}/healthy p50 ratio: {ratios[name]:5.2f}  {verdict(ok)}")


def benchmark(args: argparse.Namespace) -> None:
    """Fake, database, service; interleaved rounds; the delivery check; all cleaned up."""
    with ExitStack() as stack:
        args.workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="wh-ack-")))
        fake, url, server = serve_with_fake(
            stack, args.workdir, args.database_url, args.workers, "ack", LOG_LEVEL=args.log_level
        )
        wait_worker_up(fake)
        backend = "postgresql (fresh schema)" if args.database_url else "sqlite (temporary file)"
        print(
            f"Ack latency under a Customer.io outage: `webhooks serve --workers {args.workers}`"
            f" + its worker, {backend}, LOG_LEVEL={args.log_level}; load: wrk closed loop,"
            f" {args.threads} threads, {args.connections} connections, {args.duration:g} s per"
            f" run, {args.rounds} interleaved rounds; slow = {args.slow_ms} ms per request;"
            f" {os.cpu_count()} CPUs shared by wrk, service, worker and fake; code"
            f" {code_version()}\n",
            flush=True,
        )
        results = run_rounds(server, fake, args)
        print_table(results)
        runs = [run for runs in results.values() for run in runs]
        check_delivery(url, fake, runs, args.drain_timeout)


def main(argv: list[str] | None = None) -> int:
    """0 when it measured, 1 when it broke, 2 without wrk, 130 on Ctrl-C."""
    args = parse_args(argv)
    if wrk_path() is None:
        print("wrk is not installed (apt-get install wrk); nothing measured", file=sys.stderr)
        return 2
    return run_main(benchmark, args, (WrkError,))


if __name__ == "__main__":
    sys.exit(main())
