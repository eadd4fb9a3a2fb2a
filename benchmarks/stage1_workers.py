"""Stage 1 on PostgreSQL with 1, 2 and 4 workers: does mapping scale with workers?

    python benchmarks/stage1_workers.py --database-url postgresql+psycopg://... \\
        [--events 10000] [--persons 1000] [--workers 1,2,4] [--rounds 1]

The inbox of a fresh schema is pre-filled once with `--events` signed, parsed Stripe
deliveries (as delivery.py does: identify + order_completed each, `--persons` distinct
customers). For each worker count, every row is put back to pending and the person
state emptied, then that many processes run stage 1 (process_batch, as `webhooks
worker` calls it) until the inbox is drained. Two lockings side by side, in one run:

- `people`: the product's, locks at the grain of what can conflict
  (webhooks.stage1.state.locks);
- `global`: the baseline, every batch taking the state lock exclusively, i.e. one
  batch at a time in the whole database (what the product did before).

Printed per run: rows mapped per second (wall), the share of the workers' time spent
taking locks, the workers' CPU per row, and rows per CPU-second of the whole machine
(workers and the PostgreSQL server share its cores: on 2 cores, 4 workers cannot go 4x).
The median of `--rounds` runs. Exits 0 when it measured, whatever the numbers.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import resource
import sys
import time
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from delivery import prefill
from harness import BenchmarkError, code_version, fresh_database, run_main
from sqlalchemy.engine import make_url

from webhooks.config import load_settings
from webhooks.stage1.process import process_batch
from webhooks.stage1.setup import mapper_configs
from webhooks.stage1.state import locks
from webhooks.storage.db import create_db_engine
from webhooks.storage.schema import (
    InboxState,
    checkouts,
    identity_links,
    inbox,
    order_aliases,
    outbox,
    person_facts,
    person_state,
)

LOCKINGS = ("people", "global")
IDLE_PASSES = 3  # empty claims in a row before a worker process stops


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", required=True, help="a postgresql+psycopg:// URL")
    parser.add_argument("--events", type=int, default=10_000, help="inbox rows to map")
    parser.add_argument("--persons", type=int, default=1000, help="distinct customers")
    parser.add_argument("--workers", default="1,2,4", help="worker counts, comma-separated")
    parser.add_argument("--rounds", type=int, default=1, help="runs per cell (median shown)")
    args = parser.parse_args(argv)
    if make_url(args.database_url).get_backend_name() != "postgresql":
        parser.error("--database-url must be a postgresql+psycopg:// URL")
    if args.events < 1 or args.persons < 1 or args.rounds < 1:
        parser.error("--events, --persons and --rounds must be at least 1")
    try:
        args.counts = [int(n) for n in args.workers.split(",")]
    except ValueError:
        parser.error("--workers must be numbers separated by commas, e.g. 1,2,4")
    if not args.counts or min(args.counts) < 1:
        parser.error("--workers must be numbers of at least 1")
    return args


@dataclass
class WorkerReport:
    rows: int
    lock_wait_s: float
    busy_s: float  # time inside process_batch
    cpu_s: float


def work(url: str, owner: str, locking: str, start: Any, results: Any) -> None:
    """One worker process: map until the inbox is drained; report what it did."""
    if locking == "global":
        original = locks.StateLocks.begin

        def exclusive(self: locks.StateLocks, exclusive: bool) -> None:
            original(self, True)

        locks.StateLocks.begin = exclusive  # type: ignore[method-assign]
    engine = create_db_engine(url)
    config = mapper_configs(load_settings(_env_file=None))
    rows, busy, idle = 0, 0.0, 0
    start.wait()
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    while idle < IDLE_PASSES:
        began = time.perf_counter()
        mapped = process_batch(engine, owner, config)
        busy += time.perf_counter() - began
        rows += mapped
        idle = 0 if mapped else idle + 1
        if not mapped:
            time.sleep(0.01)
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    engine.dispose()
    results.put(WorkerReport(rows, locks.waited_seconds(), busy, cpu))


def machine_busy_seconds() -> float:
    """CPU-seconds the whole machine has been busy (every process, PostgreSQL's too)."""
    with open("/proc/stat") as stat:
        fields = [int(v) for v in stat.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def reset(url: str) -> None:
    """Every row pending again, no person state or operations: a fresh backlog."""
    engine = create_db_engine(url, timeout=300)  # vacuuming a large inbox takes a while
    with engine.begin() as conn:
        for table in (outbox, identity_links, person_state, person_facts, order_aliases, checkouts):
            conn.execute(sa.delete(table))
        conn.execute(
            sa.update(inbox).values(
                state=InboxState.PENDING,
                lease_owner=None,
                lease_until=None,
                processed_at=None,
                attempts=0,
            )
        )
    with engine.connect() as conn:
        autocommit = conn.execution_options(isolation_level="AUTOCOMMIT")
        for table in (inbox, outbox, identity_links, person_state, person_facts):
            # This schema's tables only: a bare VACUUM would walk the whole database.
            autocommit.exec_driver_sql(f"VACUUM ANALYZE {table.name}")
    engine.dispose()


@dataclass
class Run:
    locking: str
    workers: int
    rows_per_s: float
    lock_share: float  # lock time / time inside process_batch, all workers
    cpu_ms_per_row: float  # the workers' own CPU
    rows_per_cpu_s: float  # rows per busy CPU-second of the whole machine


def run(url: str, workers: int, locking: str, events: int) -> Run:
    """One measurement: `workers` processes drain a fresh backlog."""
    reset(url)
    context = multiprocessing.get_context("spawn")  # clean processes, as real workers
    start, results = context.Barrier(workers + 1), context.Queue()
    processes = [
        context.Process(target=work, args=(url, f"bench-{i}", locking, start, results))
        for i in range(workers)
    ]
    for process in processes:
        process.start()
    start.wait()
    began, machine0 = time.perf_counter(), machine_busy_seconds()
    reports = [results.get(timeout=1800) for _ in processes]
    # The last worker noticed the drain IDLE_PASSES empty claims late; not counted.
    seconds = time.perf_counter() - began - IDLE_PASSES * 0.01
    machine = machine_busy_seconds() - machine0
    for process in processes:
        process.join()
    rows = sum(r.rows for r in reports)
    if rows != events:
        raise BenchmarkError(f"{locking}/{workers}: {rows} rows mapped, {events} expected")
    busy = sum(r.busy_s for r in reports)
    return Run(
        locking,
        workers,
        rows / seconds,
        sum(r.lock_wait_s for r in reports) / busy if busy else 0.0,
        1000 * sum(r.cpu_s for r in reports) / rows,
        rows / machine if machine else 0.0,
    )


def median_run(runs: list[Run]) -> Run:
    """The run with the median throughput."""
    return sorted(runs, key=lambda r: r.rows_per_s)[len(runs) // 2]


def benchmark(args: argparse.Namespace) -> None:
    import tempfile
    from pathlib import Path

    print(
        f"Stage 1 scale-out: {args.events} Stripe deliveries, {args.persons} customers, "
        f"PostgreSQL; {os.cpu_count()} CPUs (shared with the server); code {code_version()}",
        flush=True,
    )
    with (
        tempfile.TemporaryDirectory() as workdir,
        fresh_database(args.database_url, Path(workdir), "stage1") as url,
    ):
        engine = create_db_engine(url)
        try:
            prefill(engine, args.events, args.persons)
        finally:
            engine.dispose()
        table: list[Run] = []
        for workers in args.counts:
            for locking in LOCKINGS:
                runs = [run(url, workers, locking, args.events) for _ in range(args.rounds)]
                best = median_run(runs)
                print(
                    f"  {locking:>6} locks, {workers} worker(s): "
                    + ", ".join(f"{r.rows_per_s:.0f}" for r in runs)
                    + " rows/s",
                    flush=True,
                )
                table.append(best)
    single = {r.locking: r.rows_per_s for r in table if r.workers == min(args.counts)}
    print(
        "\n| locking | workers | rows/s (wall) | vs 1 worker | time taking locks "
        "| worker CPU ms/row | rows per machine CPU-s |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in table:
        print(
            f"| {r.locking} | {r.workers} | {r.rows_per_s:,.0f} | "
            f"{r.rows_per_s / single[r.locking]:.2f}x | {100 * r.lock_share:.1f}% | "
            f"{r.cpu_ms_per_row:.2f} | {r.rows_per_cpu_s:,.0f} |"
        )


def main(argv: list[str] | None = None) -> int:
    """0 when it measured, 1 when the benchmark broke, 130 on Ctrl-C."""
    return run_main(benchmark, parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
