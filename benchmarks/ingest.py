"""Ingest throughput of the real service against two baselines, measured with wrk.

    python benchmarks/ingest.py [--rounds 3] [--duration 10] [--workers 2]
                                [--connections 16] [--database-url postgresql+psycopg://...]

Three targets, each under gunicorn with the same settings (worker class, threads and
timeouts of webhooks.gunicorn_conf), bound to a free port on 127.0.0.1:

* real:    `webhooks serve`, exactly as a user starts it, with its default LOG_LEVEL=INFO;
* bare:    a Flask route that answers 200 and does nothing (benchmarks/baselines.py);
* minimal: stdlib HMAC check plus one raw INSERT ... ON CONFLICT DO NOTHING
           (sqlite3, or psycopg with --database-url), the floor for a correct receiver.

Each server is started once and reused for every round; each gets one warm-up run
first. Rounds are interleaved (real, bare, minimal, real, ...) so that drift of the
machine hits all three alike, and the report gives medians over rounds. Every request
is a distinct, validly signed delivery, generated before its round. This is a
measurement, not a test: it exits 0 whatever the numbers, and non-zero only when the
benchmark itself could not run.
"""

from __future__ import annotations

import argparse
import http.client
import os
import platform
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from baselines import DATABASE_ENV, SECRET_ENV, prepare_minimal_store
from loadgen import (
    WEBHOOK_PATH,
    IdSequence,
    WrkError,
    WrkResult,
    pool_size,
    run_wrk,
    write_pool,
    write_script,
    wrk_path,
)
from sqlalchemy.engine import make_url

from webhooks import gunicorn_conf
from webhooks.config import Settings
from webhooks.storage.schema import inbox

BENCH_DIR = Path(__file__).resolve().parent
STRIPE_SECRET = "whsec_benchmark_only_not_a_real_secret"
TARGET_NAMES = ("real", "bare", "minimal")
# The targets for the real service: issue 15 asks ingest to keep 0.8 x its floor
# (the minimal endpoint) while the worker maps the same stream.
MIN_ACCEPTED_PER_S = 800.0
MIN_RATIO_TO_MINIMAL = 0.8
MAX_P99_MS = 50.0


class BenchmarkError(RuntimeError):
    """The benchmark could not run (a server did not start, wrk failed...)."""


# --- command line ------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="measured rounds per target")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per round")
    parser.add_argument("--warmup", type=float, default=2.0, help="warm-up seconds per target")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers per target")
    parser.add_argument("--connections", type=int, default=16, help="wrk connections")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument(
        "--log-level",
        default="INFO",
        choices=["INFO", "WARNING"],
        help="the real service's LOG_LEVEL (INFO, its default, logs every request)",
    )
    parser.add_argument(
        "--database-url",
        help="PostgreSQL URL (postgresql+psycopg://...); a fresh schema is used and dropped."
        " Default: fresh temporary SQLite files.",
    )
    parser.add_argument(
        "--pool-rate",
        type=float,
        default=10_000.0,
        help="requests/s a pool is sized for (at least twice the warm-up rate is used);"
        " a faster target would repeat ids, which is flagged",
    )
    parser.add_argument(
        "--wrk-timeout", type=float, default=10.0, help="seconds before wrk gives up on a reply"
    )
    args = parser.parse_args(argv)
    if args.database_url and make_url(args.database_url).get_backend_name() != "postgresql":
        parser.error("--database-url must be a postgresql+psycopg:// URL")
    if args.rounds < 1 or args.duration < 1 or args.workers < 1:
        parser.error("--rounds, --duration and --workers must be at least 1")
    if args.connections < args.threads:
        parser.error("--connections must be at least --threads")
    return args


# --- databases ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Databases:
    """Where the real service and the minimal baseline store deliveries."""

    backend: str
    real_url: str  # SQLAlchemy URL, the service's DATABASE_URL
    minimal_url: str  # sqlite:///path or a libpq URI, for baselines.connect


def _with_search_path(url: str, schema: str) -> sa.URL:
    parsed = make_url(url)
    options = f"-csearch_path={schema}"
    if parsed.query.get("options"):
        options = f"{parsed.query['options']} {options}"
    return parsed.update_query_dict({"options": options})


@contextmanager
def sqlite_databases(directory: Path) -> Iterator[Databases]:
    """Fresh SQLite files in the run's temporary directory (deleted with it)."""
    yield Databases(
        backend="sqlite",
        real_url=f"sqlite:///{directory / 'real.db'}",
        minimal_url=f"sqlite:///{directory / 'minimal.db'}",
    )


@contextmanager
def postgres_databases(url: str) -> Iterator[Databases]:
    """A fresh schema for this run, selected through search_path and dropped at the end."""
    schema = f"webhooks_bench_{secrets.token_hex(4)}"
    admin = sa.create_engine(url, poolclass=sa.NullPool)
    with admin.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    try:
        scoped = _with_search_path(url, schema)
        yield Databases(
            backend=f"postgresql (schema {schema})",
            real_url=scoped.render_as_string(hide_password=False),
            minimal_url=scoped.set(drivername="postgresql").render_as_string(hide_password=False),
        )
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin.dispose()


def count_inbox_rows(url: str) -> int:
    """Rows in the real service's inbox, read with SQLAlchemy on its DATABASE_URL."""
    engine = sa.create_engine(url, poolclass=sa.NullPool)
    try:
        with engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(inbox)).scalar_one())
    finally:
        engine.dispose()


# --- servers -----------------------------------------------------------------------


def free_port() -> int:
    """A port nothing listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def clean_environment() -> dict[str, str]:
    """This process's environment without anything that would reconfigure a target.

    A stray STRIPE_WEBHOOK_SECRET, DATABASE_TIMEOUT or GUNICORN_CMD_ARGS in the
    caller's shell would otherwise change what is measured.
    """
    settings_names = {name.upper() for name in Settings.model_fields}
    dropped = settings_names | {"GUNICORN_CMD_ARGS", "WEB_CONCURRENCY", "PORT", "HOST"}
    return {key: value for key, value in os.environ.items() if key.upper() not in dropped}


def gunicorn_options(workers: int, port: int) -> list[str]:
    """The baselines' gunicorn flags, taken from the product's gunicorn_conf for parity."""
    return [
        f"--workers={workers}",
        f"--worker-class={gunicorn_conf.worker_class}",
        f"--threads={gunicorn_conf.threads}",
        f"--bind=127.0.0.1:{port}",
        f"--timeout={gunicorn_conf.timeout}",
        f"--graceful-timeout={gunicorn_conf.graceful_timeout}",
        f"--keep-alive={gunicorn_conf.keepalive}",
        # Import the app in the master, so a lock it creates is shared by the forks.
        "--preload",
        "--log-level=warning",
        "--error-logfile=-",
        f"--chdir={BENCH_DIR}",
    ]


@dataclass
class Server:
    """One target: a gunicorn process group, its port and its log file."""

    name: str
    command: list[str]
    env: dict[str, str]
    port: int
    log_path: Path
    probe: str  # a GET path that answers once a worker is up
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        """The webhook endpoint wrk is pointed at."""
        return f"http://127.0.0.1:{self.port}{WEBHOOK_PATH}"

    def start(self, cwd: Path) -> None:
        """Start the server in its own session, so stop() can signal the whole group."""
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                self.command,
                env=self.env,
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Wait until a worker answers the probe; fail early if gunicorn exits."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                raise BenchmarkError(f"{self.name} server exited early:\n{self.log_tail()}")
            if self._probe_answers():
                return
            time.sleep(0.2)
        raise BenchmarkError(f"{self.name} server not ready in {timeout:g}s:\n{self.log_tail()}")

    def _probe_answers(self) -> bool:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
        try:
            conn.request("GET", self.probe)
            status = conn.getresponse().status
        except OSError:
            return False
        finally:
            conn.close()
        # The real service's /readyz is 200 only with a current schema; the baselines
        # answer a GET on their POST-only route with 405, which proves Flask is up.
        return status in (200, 405)

    def stop(self) -> None:
        """SIGTERM the group (gunicorn drains in-flight requests), SIGKILL if it lingers."""
        if self.proc is None or self.proc.returncode is not None:
            return
        for sig, wait in (
            (signal.SIGTERM, gunicorn_conf.graceful_timeout + 5),
            (signal.SIGKILL, 5),
        ):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.proc.wait(timeout=wait)
                break
            except subprocess.TimeoutExpired:
                continue
        self.proc.poll()

    def log_tail(self, lines: int = 30) -> str:
        """The end of the server's output, for error messages."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def webhooks_cli() -> str:
    """The `webhooks` console script of the interpreter running this benchmark."""
    return str(Path(sys.executable).with_name("webhooks"))


def server_command(name: str, workers: int, port: int) -> list[str]:
    """How each target is started: the product's own CLI, or plain gunicorn."""
    if name == "real":
        return [webhooks_cli(), "serve", "--port", str(port), "--workers", str(workers)]
    gunicorn = [sys.executable, "-m", "gunicorn", *gunicorn_options(workers, port)]
    return [*gunicorn, f"baselines:{name}_app"]


def build_servers(args: argparse.Namespace, dbs: Databases, workdir: Path) -> list[Server]:
    """The three targets, in the order they are measured."""
    base = clean_environment()
    real_env = base | {
        "DATABASE_URL": dbs.real_url,
        "STRIPE_WEBHOOK_SECRET": STRIPE_SECRET,
        # The service's default (INFO: one JSON line per request, to a file here),
        # so the figure is what a user gets; --log-level WARNING measures without it.
        "LOG_LEVEL": args.log_level,
    }
    baseline_env = base | {SECRET_ENV: STRIPE_SECRET, DATABASE_ENV: dbs.minimal_url}
    servers = []
    for name in TARGET_NAMES:
        port = free_port()
        servers.append(
            Server(
                name=name,
                command=server_command(name, args.workers, port),
                env=real_env if name == "real" else baseline_env,
                port=port,
                log_path=workdir / f"{name}.log",
                probe="/readyz" if name == "real" else WEBHOOK_PATH,
            )
        )
    return servers


def upgrade_schema(dbs: Databases, env: dict[str, str], cwd: Path) -> None:
    """`webhooks db upgrade`, as a PostgreSQL deployment runs it before serving."""
    done = subprocess.run(
        [webhooks_cli(), "db", "upgrade"],
        env=env | {"DATABASE_URL": dbs.real_url},
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise BenchmarkError(f"webhooks db upgrade failed:\n{done.stdout}{done.stderr}")
    print(f"  {done.stdout.strip()}")


# --- measuring ---------------------------------------------------------------------


@dataclass
class Tally:
    """Every wrk result for one target."""

    warmups: list[WrkResult] = field(default_factory=list)
    rounds: list[WrkResult] = field(default_factory=list)

    def median(self, metric: Callable[[WrkResult], float]) -> float:
        """Median of `metric` over the measured rounds."""
        return statistics.median(metric(result) for result in self.rounds)

    def all_runs(self) -> list[WrkResult]:
        """Warm-ups and rounds: everything that reached the server."""
        return self.warmups + self.rounds


def measure(
    server: Server,
    args: argparse.Namespace,
    ids: IdSequence,
    workdir: Path,
    label: str,
    seconds: float,
    rate: float,
) -> WrkResult:
    """Sign a fresh pool sized for `rate` requests/s, run wrk once, delete the pool."""
    pool = write_pool(workdir, label, ids, pool_size(seconds, rate), STRIPE_SECRET, args.threads)
    script = write_script(workdir / f"{label}.lua", pool)
    try:
        return run_wrk(
            server.url,
            script,
            connections=args.connections,
            threads=args.threads,
            seconds=seconds,
            timeout_s=args.wrk_timeout,
        )
    finally:
        for path in [*pool.paths(), script]:
            path.unlink(missing_ok=True)


def describe(result: WrkResult) -> str:
    """One progress line for a wrk run."""
    problems = result.problems()
    flag = f"  FLAGGED: {'; '.join(problems)}" if problems else ""
    return (
        f"{result.accepted_per_s:8.1f} accepted/s  p50 {result.p50_ms:6.2f} ms  "
        f"p99 {result.p99_ms:7.2f} ms  ({result.accepted} x 2xx in {result.duration_s:.1f} s)"
        f"{flag}"
    )


def run_rounds(servers: list[Server], args: argparse.Namespace, workdir: Path) -> dict[str, Tally]:
    """Warm every target up, then run the interleaved measured rounds."""
    ids = IdSequence()
    tallies = {server.name: Tally() for server in servers}
    rates: dict[str, float] = {}
    for server in servers:
        label = f"warmup-{server.name}"
        result = measure(server, args, ids, workdir, label, args.warmup, args.pool_rate)
        tallies[server.name].warmups.append(result)
        # A target much faster than --pool-rate still gets enough unique requests.
        rates[server.name] = max(args.pool_rate, 2 * result.accepted_per_s)
        print(f"  warm-up   {server.name:<8}{describe(result)}", flush=True)
    for number in range(1, args.rounds + 1):
        for server in servers:
            label = f"round{number}-{server.name}"
            rate = rates[server.name]
            result = measure(server, args, ids, workdir, label, args.duration, rate)
            tallies[server.name].rounds.append(result)
            print(f"  round {number}/{args.rounds} {server.name:<8}{describe(result)}", flush=True)
    return tallies


# --- reporting ---------------------------------------------------------------------


def verdict(ok: bool) -> str:
    """PASS or FAIL."""
    return "PASS" if ok else "FAIL"


def print_table(tallies: dict[str, Tally]) -> None:
    """Medians over rounds for each target, and the real service's ratios."""
    print(f"\n{'target':<9}{'accepted/s':>12}{'p50 ms':>10}{'p99 ms':>10}   flagged rounds")
    for name, tally in tallies.items():
        flagged = sum(1 for result in tally.rounds if result.problems())
        print(
            f"{name:<9}{tally.median(lambda r: r.accepted_per_s):>12.1f}"
            f"{tally.median(lambda r: r.p50_ms):>10.2f}{tally.median(lambda r: r.p99_ms):>10.2f}"
            f"   {flagged}/{len(tally.rounds)}"
        )
    real = tallies["real"].median(lambda r: r.accepted_per_s)
    for other in ("minimal", "bare"):
        base = tallies[other].median(lambda r: r.accepted_per_s)
        print(f"real/{other:<8} accepted/s ratio: {real / base if base else float('nan'):.2f}")


def print_targets(tallies: dict[str, Tally]) -> None:
    """The issue's targets for the real service, PASS/FAIL on the medians."""
    real = tallies["real"].median(lambda r: r.accepted_per_s)
    minimal = tallies["minimal"].median(lambda r: r.accepted_per_s)
    ratio = real / minimal if minimal else 0.0
    p99 = tallies["real"].median(lambda r: r.p99_ms)
    print("\nTargets from the issue (real service, medians):")
    print(
        f"  accepted/s >= {MIN_ACCEPTED_PER_S:.0f}: {real:8.1f}  "
        f"{verdict(real >= MIN_ACCEPTED_PER_S)}"
    )
    print(
        f"  real/minimal >= {MIN_RATIO_TO_MINIMAL}: {ratio:8.2f}  "
        f"{verdict(ratio >= MIN_RATIO_TO_MINIMAL)}"
    )
    print(f"  p99 <= {MAX_P99_MS:.0f} ms:      {p99:8.2f}  {verdict(p99 <= MAX_P99_MS)}")
    if any(result.problems() for tally in tallies.values() for result in tally.rounds):
        print("  (some rounds were FLAGGED, see above: treat these figures with care)")


def print_row_check(rows: int, real: Tally) -> None:
    """Every 2xx the real service sent must be a stored row (store-then-ack).

    wrk stops mid-flight: requests already written when a run ends are stored by the
    server but never counted as answered, so rows may exceed the 2xx count by at most
    the requests left unanswered.
    """
    runs = real.all_runs()
    accepted = sum(result.accepted for result in runs)
    unanswered = sum(result.unanswered for result in runs)
    extra = rows - accepted
    print(f"\nInbox check (real service, warm-up + rounds): {rows} rows, {accepted} x 2xx")
    if extra == 0:
        print("  PASS: exactly one row per acknowledged delivery")
    elif 0 < extra <= unanswered:
        print(
            f"  PASS: every acknowledged delivery is stored; {extra} more rows come from "
            f"requests in flight when wrk stopped ({unanswered} written but unanswered)"
        )
    elif extra < 0:
        print(f"  FAIL: {-extra} acknowledged deliveries are missing from the inbox")
    else:
        print(f"  FAIL: {extra} rows more than 2xx + {unanswered} unanswered requests")


def print_header(args: argparse.Namespace, dbs: Databases, servers: list[Server]) -> None:
    """What is measured, and how."""
    print("Ingest benchmark: signed Stripe checkout.session.completed deliveries, unique ids")
    print(
        f"  machine: {os.cpu_count()} CPUs, Python {platform.python_version()}; "
        "wrk runs on the same CPUs as the servers"
    )
    print(f"  database: {dbs.backend}")
    print(
        f"  gunicorn: {args.workers} {gunicorn_conf.worker_class} workers x"
        f" {gunicorn_conf.threads} threads per target, timeout "
        f"{gunicorn_conf.timeout}s; each server started once and reused for all rounds"
    )
    print(
        f"  wrk: {args.threads} threads, {args.connections} connections, "
        f"{args.duration:g} s x {args.rounds} rounds per target, interleaved, after a "
        f"{args.warmup:g} s warm-up; reported figures are medians over rounds"
    )
    print(f"  real service runs with LOG_LEVEL={args.log_level}")
    for server in servers:
        print(f"  {server.name:<8} {' '.join(server.command)}")


# --- main --------------------------------------------------------------------------


def _interrupt(signum: int, _frame: Any) -> None:
    # SIGTERM takes the same path as Ctrl-C, so every finally/ExitStack cleanup runs.
    raise KeyboardInterrupt(f"signal {signum}")


def benchmark(args: argparse.Namespace) -> None:
    """Set up databases and servers, measure, report; tears everything down on exit."""
    with ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="webhooks-bench-")))
        if args.database_url:
            dbs = stack.enter_context(postgres_databases(args.database_url))
        else:
            dbs = stack.enter_context(sqlite_databases(workdir))
        servers = build_servers(args, dbs, workdir)
        print_header(args, dbs, servers)
        if args.database_url:
            upgrade_schema(dbs, servers[0].env, workdir)
        prepare_minimal_store(dbs.minimal_url)
        for server in servers:
            stack.callback(server.stop)  # registered first, so it runs before the drops
            server.start(workdir)
        for server in servers:
            server.wait_ready()
        print("", flush=True)
        tallies = run_rounds(servers, args, workdir)
        servers[0].stop()  # drain in-flight requests before counting rows
        rows = count_inbox_rows(dbs.real_url)
        print_table(tallies)
        print_targets(tallies)
        print_row_check(rows, tallies["real"])


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; 0 when it measured, 1 when it broke, 2 without wrk, 130 on ^C."""
    args = parse_args(argv)
    if wrk_path() is None:
        print(
            "WARNING: wrk is not installed, so nothing can be measured.\n"
            "  Install it with `sudo apt-get install wrk` (Debian/Ubuntu) or "
            "`brew install wrk` (macOS), then run this again.",
            file=sys.stderr,
        )
        return 2
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        benchmark(args)
    except KeyboardInterrupt:
        print("\ninterrupted; servers stopped and temporary files removed", file=sys.stderr)
        return 130
    except (BenchmarkError, WrkError) as exc:
        print(f"\nbenchmark failed: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
