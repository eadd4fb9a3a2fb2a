"""Stage 1 alone: this tree's process_batch beside a baseline commit's, in one run.

    python benchmarks/stage1.py [--baseline REF] [--events 5000] [--rounds 5]
                                [--limit 100] [--database-url postgresql+psycopg://...]

The inbox holds `--events` unique, signed and parsed Stripe deliveries (paid checkout
sessions and invoice renewals for 1,000 customers, from the golden fixtures; each maps
to an identify and an order_completed), stored with store_delivery as the web endpoint
stores them. Each round maps the whole inbox with the worker's own function,
process_batch, `--limit` rows a transaction, in a fresh process: rows per second of
wall time and milliseconds of CPU per row.

The baseline (default: HEAD, so that uncommitted changes are measured against it; name
any commit) is checked out into a temporary git worktree and run with the same script;
rounds alternate between the two trees, so a noisy machine slows both alike. The
medians and their ratio are printed. SQLite (default): one inbox is filled per tree,
and each round maps a copy of it. PostgreSQL: each round fills a fresh schema (dropped
after).

The issue's target: stage 1 alone maps >= 3,000 rows/s on SQLite. Exits 0 when it
measured, whatever the numbers.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
TARGET_ROWS_PER_SECOND = 3000.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", default="HEAD", help="git commit to compare with")
    parser.add_argument("--events", type=int, default=5000, help="inbox rows per round")
    parser.add_argument("--rounds", type=int, default=5, help="rounds per tree")
    parser.add_argument("--limit", type=int, default=100, help="rows per transaction")
    parser.add_argument("--persons", type=int, default=1000, help="distinct customers")
    parser.add_argument("--database-url", help="PostgreSQL URL; default: temporary SQLite")
    # One round in this process, with the code of the tree on PYTHONPATH (internal).
    parser.add_argument("--child", metavar="WORKDIR", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.events < 1 or args.rounds < 1 or args.limit < 1:
        parser.error("--events, --rounds and --limit must be at least 1")
    return args


# --- one round, in a child process running the tree under test ----------------------


def child(args: argparse.Namespace) -> None:
    """Fill (or copy) an inbox, map it all, print one JSON line of what it measured."""
    workdir = Path(args.child)
    from ingest import postgres_databases

    if args.database_url:
        with postgres_databases(args.database_url) as dbs:
            _prepare(dbs.real_url, args)
            print(json.dumps(_map_all(dbs.real_url, args)), flush=True)
        return
    template = workdir / "template.db"
    if not template.exists():
        _prepare(f"sqlite:///{workdir / 'filling.db'}", args)
        (workdir / "filling.db").rename(template)
    run = workdir / "run.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{run}{suffix}").unlink(missing_ok=True)
    shutil.copyfile(template, run)
    print(json.dumps(_map_all(f"sqlite:///{run}", args)), flush=True)


def _prepare(url: str, args: argparse.Namespace) -> None:
    """Migrate and fill the inbox with signed, verified, parsed deliveries."""
    from harness import STRIPE_SECRET, EventFactory

    from webhooks.providers.stripe.signature import StripeReceiver, sign
    from webhooks.storage import migrate
    from webhooks.storage.db import create_db_engine
    from webhooks.storage.inbox import store_delivery

    engine = create_db_engine(url)
    try:
        migrate.upgrade(engine)
        factory, receiver = EventFactory(args.persons), StripeReceiver([STRIPE_SECRET])
        first = int(time.time()) - args.events  # one event a second, ending now
        for index in range(args.events):
            event = factory.make(index, first + index)
            headers = {"stripe-signature": sign(event.body, STRIPE_SECRET)}
            receiver.verify(event.body, headers)
            store_delivery(engine, receiver.parse(event.body, headers))
    finally:
        engine.dispose()


def _map_all(url: str, args: argparse.Namespace) -> dict[str, float]:
    from webhooks.config import load_settings
    from webhooks.stage1.process import process_batch
    from webhooks.stage1.setup import mapper_configs

    engine, checkpoints = _engine_like_the_worker(url)
    configs = mapper_configs(load_settings(_env_file=None))
    _settle_like_the_worker()
    mapped = 0
    try:
        with checkpoints:
            wall, cpu = time.perf_counter(), time.process_time()
            while batch := process_batch(engine, "benchmark-stage1", configs, limit=args.limit):
                mapped += batch
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    finally:
        engine.dispose()
    if mapped != args.events:
        raise SystemExit(f"mapped {mapped} rows of {args.events}")
    return {"rows": mapped, "seconds": wall, "cpu_seconds": cpu}


def _engine_like_the_worker(url: str) -> tuple[Any, contextlib.AbstractContextManager[Any]]:
    """The worker's engine and its WAL checkpoint thread (webhooks.storage.checkpoint);
    a baseline tree from before that module checkpoints in its commits, as its worker
    did. The thread's CPU is counted: it is the process's."""
    from webhooks.storage.db import create_db_engine

    try:
        from webhooks.storage import checkpoint
    except ImportError:
        return create_db_engine(url), contextlib.nullcontext()
    engine = create_db_engine(url, own_checkpoints=True)
    return engine, checkpoint.background(engine)


def _settle_like_the_worker() -> None:
    """What `webhooks worker` does once it has started (a baseline tree from before
    webhooks.core.heap runs with the interpreter's defaults, as its worker did)."""
    try:
        from webhooks.core import heap
    except ImportError:
        return
    heap.settle()


# --- the comparison ------------------------------------------------------------------


def _round(tree: Path, workdir: Path, args: argparse.Namespace) -> dict[str, float]:
    command = [sys.executable, str(HERE / "stage1.py"), "--child", str(workdir)]
    command += ["--events", str(args.events), "--limit", str(args.limit)]
    command += ["--persons", str(args.persons)]
    if args.database_url:
        command += ["--database-url", args.database_url]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tree), str(HERE)])}
    env.pop("DATABASE_URL", None)
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"round in {tree} failed:\n{done.stderr[-3000:]}")
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _git(*argv: str) -> str:
    return subprocess.run(
        ["git", "-C", str(REPO), *argv], capture_output=True, text=True, check=True
    ).stdout.strip()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        child(args)
        return 0
    baseline = _git("rev-parse", "--short", args.baseline)
    current = _git("rev-parse", "--short", "HEAD")
    dirty = (
        " + uncommitted changes"
        if _git("status", "--porcelain", "--", "webhooks", "mappers")
        else ""
    )
    backend = "PostgreSQL" if args.database_url else "SQLite (temporary file)"
    print(
        f"Stage 1 alone: {args.events} Stripe deliveries, {args.limit} rows a transaction, "
        f"{backend}; {args.rounds} rounds per tree, alternating; {os.cpu_count()} CPUs"
    )
    with tempfile.TemporaryDirectory(prefix="stage1-bench-") as tmp:
        base_tree = Path(tmp) / "baseline"
        _git("worktree", "add", "--detach", "--quiet", str(base_tree), baseline)
        try:
            trees = {
                f"this tree ({current}{dirty})": (REPO, Path(tmp) / "this"),
                f"baseline ({baseline})": (base_tree, Path(tmp) / "base"),
            }
            results: dict[str, list[dict[str, float]]] = {name: [] for name in trees}
            for number in range(1, args.rounds + 1):
                for name, (tree, workdir) in trees.items():
                    workdir.mkdir(exist_ok=True)
                    got = _round(tree, workdir, args)
                    results[name].append(got)
                    print(
                        f"  round {number} {name}: {got['rows'] / got['seconds']:.0f} rows/s, "
                        f"{1000 * got['cpu_seconds'] / got['rows']:.2f} ms CPU a row",
                        flush=True,
                    )
        finally:
            _git("worktree", "remove", "--force", str(base_tree))
    print()
    print(f"{'tree':<44} {'rows/s median':>14} {'best':>6} {'ms CPU/row median':>18} {'best':>6}")
    medians, bests = {}, {}
    for name, runs in results.items():
        rates = [r["rows"] / r["seconds"] for r in runs]
        cpus = [1000 * r["cpu_seconds"] / r["rows"] for r in runs]
        medians[name], bests[name] = statistics.median(rates), max(rates)
        print(
            f"{name:<44} {medians[name]:>14.0f} {bests[name]:>6.0f} "
            f"{statistics.median(cpus):>18.2f} {min(cpus):>6.2f}"
        )
    this, base = medians.values()
    best_this, best_base = bests.values()
    # The host's speed drifts by a fifth within minutes here: the best rounds (the least
    # disturbed) tell the code's own cost; the medians what a busy hour gives.
    print(
        f"\nthis tree / baseline: {this / base:.2f} x (medians), "
        f"{best_this / best_base:.2f} x (best rounds)"
    )
    if not args.database_url:
        verdict = "PASS" if this >= TARGET_ROWS_PER_SECOND else "FAIL"
        print(f"target: stage 1 alone >= {TARGET_ROWS_PER_SECOND:.0f} rows/s on SQLite: {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
