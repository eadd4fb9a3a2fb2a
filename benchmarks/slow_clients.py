"""Ack latency of real webhooks while fifty clients trickle bodies, against sync workers.

    python benchmarks/slow_clients.py [--slow 50] [--rate 50] [--duration 15]

Two servers in one run, one after the other, on fresh SQLite databases, no Customer.io
(the worker is not part of this): `webhooks serve` as configured (gunicorn gthread
workers, BODY_TIMEOUT_SECONDS) and, as the baseline, the same service with gunicorn's
sync workers, the setting before (`--worker-class sync`). Against each:

* quiet:  real signed webhooks at `--rate`/s, open loop (benchmarks/openloop.py);
* slow:   the same, while `--slow` clients each send their headers and then one body
          byte every `--trickle-ms`; a client the server answers (408 at the body
          deadline) reconnects at once, so the pressure never lets up.

A prober GETs /healthz twice a second throughout. Printed side by side: p50 / p99 of the
acknowledgement and how many requests got no 200, /healthz's worst answer time and
failures, and how the slow clients were answered. PASS (the issue's target) when, with
the slow clients, the configured server keeps its ack p99 under 50 ms and /healthz
answers every time.
"""

from __future__ import annotations

import argparse
import http.client
import os
import selectors
import socket
import sys
import tempfile
import threading
import time
from collections import Counter
from contextlib import ExitStack
from pathlib import Path

from harness import code_version, fresh_database, run_main, service_env, start, verdict
from ingest import STRIPE_SECRET, Server, free_port, webhooks_cli
from openloop import OpenLoop, PhaseStats

from webhooks.providers.stripe.signature import sign

MAX_P99_MS = 50.0
BODY = b'{"id": "evt_slow_client", "object": "event"' + b" " * 4096 + b"}"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--slow", type=int, default=50, help="slow clients at once")
    parser.add_argument("--trickle-ms", type=float, default=100.0, help="ms between bytes")
    parser.add_argument("--rate", type=float, default=50.0, help="real webhooks per second")
    parser.add_argument("--duration", type=float, default=15.0, help="seconds per phase")
    parser.add_argument("--body-timeout", type=float, default=5.0, help="BODY_TIMEOUT_SECONDS")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers")
    args = parser.parse_args(argv)
    if args.slow < 1 or args.duration < 2 or args.rate <= 0:
        parser.error("--slow >= 1, --duration >= 2 and --rate > 0")
    return args


class SlowClients:
    """`count` connections trickling a body a byte at a time; reconnect when answered."""

    def __init__(self, port: int, count: int, every: float) -> None:
        self.port, self.count, self.every = port, count, every
        self.answers: Counter[str] = Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        head = (
            b"POST /webhooks/stripe HTTP/1.1\r\nHost: localhost\r\n"
            b"Content-Type: application/json\r\nStripe-Signature: "
            + sign(BODY, STRIPE_SECRET).encode()
            + f"\r\nContent-Length: {len(BODY)}\r\n\r\n".encode()
        )
        self._head = head

    def start(self) -> None:
        """Connect every client and start trickling."""
        self._thread.start()

    def stop(self) -> None:
        """Close every connection."""
        self._stop.set()
        self._thread.join()

    def _connect(self, selector: selectors.BaseSelector) -> None:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        sock.sendall(self._head)
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ, [0])  # bytes of the body sent

    def _run(self) -> None:
        selector = selectors.DefaultSelector()
        for _ in range(self.count):
            self._connect(selector)
        next_byte = time.monotonic()
        while not self._stop.is_set():
            for key, _ in selector.select(timeout=max(0.0, next_byte - time.monotonic())):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                try:
                    answer = sock.recv(4096)
                    status = answer.split(b" ", 2)[1].decode() if answer else "closed"
                except (OSError, IndexError):
                    status = "error"
                self.answers[status] += 1
                selector.unregister(sock)
                sock.close()
                self._connect(selector)
            if time.monotonic() >= next_byte:
                next_byte += self.every
                for key in list(selector.get_map().values()):
                    sent = key.data
                    if sent[0] < len(BODY) - 1:  # never the last byte: always mid-body
                        try:
                            key.fileobj.send(BODY[sent[0] : sent[0] + 1])  # type: ignore[union-attr]
                            sent[0] += 1
                        except OSError:
                            pass
        for key in list(selector.get_map().values()):
            key.fileobj.close()  # type: ignore[union-attr]
        selector.close()


class Prober:
    """GET /healthz every half second; the worst answer time and the failures."""

    def __init__(self, port: int) -> None:
        self.port, self.worst_ms, self.failures, self.probes = port, 0.0, 0, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        """Start probing."""
        self._thread.start()

    def stop(self) -> None:
        """Stop probing."""
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            started = time.monotonic()
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
            try:
                conn.request("GET", "/healthz")
                ok = conn.getresponse().status == 200
            except OSError:
                ok = False
            finally:
                conn.close()
            self.probes += 1
            self.failures += not ok
            self.worst_ms = max(self.worst_ms, (time.monotonic() - started) * 1000)


def gunicorn_server(env: dict[str, str], workdir: Path, name: str, extra: list[str]) -> Server:
    """The service under gunicorn with the package's config, plus `extra` options."""
    port = free_port()
    gunicorn = str(Path(webhooks_cli()).with_name("gunicorn"))
    command = [gunicorn, "-c", "python:webhooks.gunicorn_conf", "-b", f"127.0.0.1:{port}"]
    return Server(name, [*command, *extra], env, port, workdir / f"{name}.log", "/readyz")


def measure(
    server: Server, args: argparse.Namespace
) -> dict[str, tuple[PhaseStats, Prober, Counter[str]]]:
    """Quiet, then slow clients; the ack stats, the prober and the slow clients' answers."""
    results: dict[str, tuple[Prober, Counter[str]]] = {}
    load = OpenLoop(server.url, args.rate, STRIPE_SECRET, timeout=10)
    load.start()
    try:
        time.sleep(2)  # warm-up
        for phase in ("quiet", "slow"):
            prober = Prober(server.port)
            slow = SlowClients(server.port, args.slow, args.trickle_ms / 1000)
            if phase == "slow":
                slow.start()
                time.sleep(0.5)  # every slow client is connected and mid-body
            prober.start()
            load.phase = phase
            time.sleep(args.duration)
            load.phase = "cooldown"
            prober.stop()
            if phase == "slow":
                slow.stop()
            results[phase] = (prober, slow.answers)
    finally:
        load.stop()  # waits for every request still queued or in flight
    # Counted only now: a request due during a phase and answered after it belongs to it.
    return {phase: (PhaseStats.of(load.of(phase)), *seen) for phase, seen in results.items()}


def benchmark(args: argparse.Namespace) -> None:
    """Both servers, both phases; the table and the verdict."""
    configs = {
        "gthread (configured)": [],
        "sync (baseline)": ["--worker-class", "sync", "--threads", "1"],
    }
    print(
        f"Slow clients: {args.slow} clients trickling a byte every {args.trickle_ms:g} ms;"
        f" real webhooks {args.rate:g}/s open loop; {args.duration:g} s per phase;"
        f" BODY_TIMEOUT_SECONDS={args.body_timeout:g}; WEB_CONCURRENCY={args.workers};"
        f" SQLite; {os.cpu_count()} CPUs; code {code_version()}\n",
        flush=True,
    )
    rows = {}
    for name, extra in configs.items():
        with ExitStack() as stack:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="wh-slow-")))
            url = stack.enter_context(fresh_database(None, workdir, "slow"))
            env = service_env(
                url,
                None,
                BODY_TIMEOUT_SECONDS=str(args.body_timeout),
                WEB_CONCURRENCY=str(args.workers),
                LOG_LEVEL="WARNING",
            )
            server = start(stack, gunicorn_server(env, workdir, "web", extra), workdir)
            rows[name] = measure(server, args)
            print(f"  measured {name}", flush=True)
    print(
        f"\n{'server':<22}{'phase':<7}{'acks':>6}{'non-200':>9}{'p50 ms':>9}{'p99 ms':>9}"
        f"{'healthz worst ms':>18}{'healthz failed':>16}   slow clients answered"
    )
    for name, phases in rows.items():
        for phase, (stats, prober, answers) in phases.items():
            shown = ", ".join(f"{status}: {n}" for status, n in sorted(answers.items())) or "-"
            print(
                f"{name:<22}{phase:<7}{stats.requests:>6}{stats.failed:>9}{stats.p50_ms:>9.2f}"
                f"{stats.p99_ms:>9.2f}{prober.worst_ms:>18.1f}"
                f"{f'{prober.failures}/{prober.probes}':>16}   {shown}"
            )
    stats, prober, _ = rows["gthread (configured)"]["slow"]
    ok = stats.p99_ms < MAX_P99_MS and stats.failed == 0 and prober.failures == 0
    print(
        f"\n  with {args.slow} slow clients: ack p99 {stats.p99_ms:.1f} ms < {MAX_P99_MS:g} ms,"
        f" every ack 200, /healthz always answered: {verdict(ok)}"
    )


def main(argv: list[str] | None = None) -> int:
    """0 when it measured, 1 when it broke, 130 on Ctrl-C."""
    return run_main(benchmark, parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
