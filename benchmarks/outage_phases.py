"""Ack latency at a fixed webhook rate through Customer.io outages, and recovery time.

    python benchmarks/outage_phases.py [--rate 50] [--duration 15] [--rounds 2]
                                       [--database-url postgresql+psycopg://...]

One `webhooks serve` (gunicorn plus the delivery worker it starts) against the fake
Customer.io in its own process. benchmarks/openloop.py sends real-shaped, uniquely
keyed Stripe events (checkout sessions and invoice renewals from the golden fixtures)
at `--rate` per second throughout, open loop, as a provider does. Each round runs the
phases in order, `--duration` seconds each, switching the fake's faults between them:

    healthy -> 500 -> after 500 -> 429 -> after 429 -> hang -> after hang

* 500:  every Track API request answers 500;
* 429:  every request answers 429 with Retry-After: `--retry-after`;
* hang: every request is held without an answer (the fake's `timeout` fault) until
        the phase ends, so the worker's sends time out;
* after X: the faults are cleared; the worker drains what piled up meanwhile.

Printed side by side: p50 and p99 of the acknowledgement (from when the request was
due to its answer) per phase, medians over rounds, and each phase's p99 over the
healthy p99. PASS when every outage phase's p99 is within 1.5 x healthy (the issue's
target). Recovery: seconds from clearing the faults to the fake accepting the next
operation, PASS within 10 s (the worker probes every few seconds while paused and
honours Retry-After as a minimum). Finally every acknowledged webhook must reach the
fake exactly once. Exits 0 when it measured.
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

from harness import (
    check_exactly_once,
    code_version,
    run_main,
    serve_with_fake,
    verdict,
    wait_worker_up,
)
from ingest import STRIPE_SECRET
from openloop import OpenLoop, PhaseStats
from sqlalchemy.engine import make_url

from webhooks.fakes.customerio import FakeCustomerIOClient

MAX_P99_RATIO = 1.5
MAX_RECOVERY_S = 10.0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=50.0, help="webhooks per second")
    parser.add_argument("--duration", type=float, default=15.0, help="seconds per phase")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of all phases")
    parser.add_argument("--retry-after", type=int, default=2, help="Retry-After of the 429s")
    parser.add_argument(
        "--only", nargs="+", choices=["500", "429", "hang"], help="these outages only"
    )
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers")
    parser.add_argument("--log-level", default="INFO", help="the service's LOG_LEVEL")
    parser.add_argument("--drain-timeout", type=float, default=300.0, help="wait for delivery")
    parser.add_argument("--database-url", help="PostgreSQL URL; default: temporary SQLite")
    args = parser.parse_args(argv)
    if args.database_url and make_url(args.database_url).get_backend_name() != "postgresql":
        parser.error("--database-url must be a postgresql+psycopg:// URL")
    if args.rounds < 1 or args.duration < 2 or args.rate <= 0:
        parser.error("--rounds >= 1, --duration >= 2 and --rate > 0")
    return args


def outages(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """Outage phase name -> the fake's faults."""
    every = {
        "500": {"status": 500},
        "429": {"status": 429, "retry_after": args.retry_after},
        "hang": {"timeout": True},
    }
    return {name: faults for name, faults in every.items() if name in (args.only or every)}


def recovery_seconds(fake: FakeCustomerIOClient, seconds: float) -> float:
    """Clear the faults; run the next phase; return when the fake accepted again (or nan)."""
    before = fake.stats()["operations"]
    cleared = time.monotonic()
    fake.set_faults()
    resumed = float("nan")
    while time.monotonic() - cleared < seconds:
        if resumed != resumed and fake.stats()["operations"] > before:  # nan: not yet
            resumed = time.monotonic() - cleared
        time.sleep(0.05)
    return resumed


def run_rounds(
    fake: FakeCustomerIOClient, load: OpenLoop, args: argparse.Namespace
) -> dict[str, list[float]]:
    """Every round's phases; returns recovery seconds per outage."""
    recoveries: dict[str, list[float]] = {name: [] for name in outages(args)}
    load.phase = "warmup"
    time.sleep(3)
    for number in range(1, args.rounds + 1):
        load.phase = f"healthy#{number}"
        time.sleep(args.duration)
        for name, faults in outages(args).items():
            load.phase = f"{name}#{number}"
            fake.set_faults(**faults)
            time.sleep(args.duration)
            load.phase = f"after {name}#{number}"
            recoveries[name].append(recovery_seconds(fake, args.duration))
        print(f"  round {number}/{args.rounds} done", flush=True)
    return recoveries


def report(load: OpenLoop, recoveries: dict[str, list[float]], args: argparse.Namespace) -> None:
    """Medians over rounds per phase, ratios to healthy, and the verdicts."""
    names = ["healthy"] + [f"{kind}{name}" for name in outages(args) for kind in ("", "after ")]
    table: dict[str, list[PhaseStats]] = {
        name: [PhaseStats.of(load.of(f"{name}#{n}")) for n in range(1, args.rounds + 1)]
        for name in names
    }
    base = statistics.median(stats.p99_ms for stats in table["healthy"])
    print(
        f"\n{'phase':<12}{'requests':>9}{'non-200':>9}{'p50 ms':>9}{'p99 ms':>9}"
        f"{'p99/healthy':>13}{'recovery s':>12}"
    )
    ok = True
    for name in names:
        runs = table[name]
        p50 = statistics.median(stats.p50_ms for stats in runs)
        p99 = statistics.median(stats.p99_ms for stats in runs)
        outage = name in outages(args)
        recovery = (
            statistics.median(recoveries[name.removeprefix("after ")])
            if name.startswith("after ")
            else float("nan")
        )
        print(
            f"{name:<12}{sum(s.requests for s in runs):>9}{sum(s.failed for s in runs):>9}"
            f"{p50:>9.2f}{p99:>9.2f}{p99 / base:>13.2f}"
            f"{'' if recovery != recovery else f'{recovery:.1f}':>12}"
        )
        if outage:
            ok &= p99 <= MAX_P99_RATIO * base
    print(f"\n  outage p99 within {MAX_P99_RATIO} x healthy p99: {verdict(ok)}")
    every = [seconds for values in recoveries.values() for seconds in values]
    recovered = all(seconds <= MAX_RECOVERY_S for seconds in every)
    shown = ", ".join(f"{seconds:.1f}" for seconds in every)
    print(
        f"  delivery resumed within {MAX_RECOVERY_S:g} s of recovery ({shown}): "
        f"{verdict(recovered)}"
    )


def check_delivery(fake: FakeCustomerIOClient, load: OpenLoop, args: argparse.Namespace) -> None:
    """Every acknowledged webhook reaches the fake exactly once (after the backlog drains)."""
    expected = {sample.event.order_id for sample in load.samples if sample.status == 200}
    deadline = time.monotonic() + args.drain_timeout
    while True:
        stats = fake.stats()
        exact = check_exactly_once(fake.operations(), expected, stats["duplicates_ignored"])
        if exact.ok or time.monotonic() > deadline:
            break
        time.sleep(1)
    print(f"  every acknowledged webhook delivered exactly once: {verdict(exact.ok)}")
    print(f"    {exact.describe()}")


def benchmark(args: argparse.Namespace) -> None:
    """Fake, database, service, the open-loop load through every phase; all cleaned up."""
    with ExitStack() as stack:
        args.workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="wh-out-")))
        fake, _url, server = serve_with_fake(
            stack, args.workdir, args.database_url, args.workers, "outage", LOG_LEVEL=args.log_level
        )
        wait_worker_up(fake)
        backend = "postgresql (fresh schema)" if args.database_url else "sqlite (temporary file)"
        print(
            f"Ack latency through Customer.io outages: `webhooks serve --workers {args.workers}`"
            f" + its worker, {backend}; load: {args.rate:g} webhooks/s open loop,"
            f" {args.duration:g} s per phase, {args.rounds} rounds; {os.cpu_count()} CPUs"
            f" shared by the load, service, worker and fake; code {code_version()}\n",
            flush=True,
        )
        load = OpenLoop(server.url, args.rate, STRIPE_SECRET)
        load.start()
        try:
            recoveries = run_rounds(fake, load, args)
        finally:
            load.stop()
        report(load, recoveries, args)
        check_delivery(fake, load, args)


def main(argv: list[str] | None = None) -> int:
    """0 when it measured, 1 when it broke, 130 on Ctrl-C."""
    return run_main(benchmark, parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
