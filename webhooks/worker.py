"""The worker: maps pending inbox rows and delivers the outbox, until told to stop."""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from types import FrameType

import structlog
from sqlalchemy.engine import Engine

from webhooks.config import Settings
from webhooks.core.retry import outage_pause
from webhooks.errors import CredentialsRefused
from webhooks.stage1 import setup
from webhooks.stage1.process import process_batch
from webhooks.stage1.state import locks
from webhooks.stage2.customerio import CustomerIO, DeliveryError
from webhooks.stage2.deliver import Outcome, deliver_batch
from webhooks.storage import heartbeat, wake
from webhooks.storage import inbox as inbox_store
from webhooks.storage import outbox as outbox_store
from webhooks.storage.queue import Turn, utcnow
from webhooks.storage.schema import Lane

log = structlog.get_logger("webhooks.worker")
AUTH_PAUSE_FIRST = 5.0  # seconds; doubles up to AUTH_PAUSE_MAX while credentials fail
AUTH_PAUSE_MAX = 300.0
# A pass maps at most WORKER_MAP_BATCH inbox rows in one transaction (100 by default:
# see Settings.worker_map_batch). It sends up to SEND_BATCH operations (about two v2
# batches of ~475 KB at most); while a backlog lasts, sending waits until SEND_AFTER
# rows were mapped, so requests stay large instead of one small one per transaction.
SEND_BATCH = 1000
SEND_AFTER = 500
# Workers whose batches should fit PostgreSQL's lock table at once (check_lock_budget).
BUDGET_WORKERS = 4
# Background lanes (replay, backfill, history) get their own mapper and sender threads:
# a live webhook arriving while a backfill drains is mapped on its own, never in a
# transaction of backfill rows, without waiting for a background slice (on SQLite at
# most for one background commit: see _map_turn), and sent by the live sender, never
# behind a backfill request. While live webhooks flow (mapped in the last LIVE_RECENT
# seconds), slices shrink (5 rows, 50 operations; else 20 and 200) and background
# steps take at most half the time (a pause as long as each step).
LIVE = (Lane.LIVE,)
BACKGROUND = (Lane.REPLAY, Lane.BACKFILL, Lane.HISTORY)
BACKGROUND_MAP_BATCH = 20
BACKGROUND_SEND_BATCH = 200
BACKGROUND_NICENESS = 19  # the background sender's thread: the CPU live work leaves
BACKGROUND_MAP_SLICE = 5  # while live webhooks flow
BACKGROUND_SEND_SLICE = 50
LIVE_RECENT = 2.0  # seconds since live rows were mapped that count as live traffic
BEHIND_WAIT = 0.02  # seconds between looks for live rows while background sends catch up
BACKGROUND_PAUSE_MAX = 0.5  # seconds: the longest pause after one background step
# A woken worker waits this long before mapping, to take what arrives together in one
# transaction (at 200 webhooks a second: about 4 rows, 50 write transactions a second);
# no shorter than a web process's wake-ups are apart, so what one stores after its last
# wake-up is in the same pass.
GATHER_SECONDS = wake.WAKE_EVERY
SEND_JOIN_SECONDS = 30.0  # stop(): the send in hand finishes (within its timeout)
ERROR_PAUSE = 1.0  # after an unexpected error (the database away), before trying again
PROBE_EVERY = 5.0  # seconds between cheap probes of Customer.io while an outage lasts
EXPIRE_EVERY = 60.0  # seconds between sweeps of waiting deliveries past their expiry


class Worker:
    """One worker process: both stages (or the one WORKER_STAGE names), latency first
    when idle."""

    def __init__(self, engine: Engine, settings: Settings, cio: CustomerIO | None) -> None:
        self.engine = engine
        self.settings = settings
        self.cio = cio
        # A random suffix: pids repeat across container restarts.
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        self.stopping = threading.Event()
        self._stage1 = setup.build(settings)
        self._max_age = timedelta(hours=settings.delivery_max_age_hours)
        self._lease = timedelta(seconds=settings.worker_lease_seconds)
        self._auth_pause = 0.0  # current length of the credentials pause; 0 = none
        self._failures = 0  # transient delivery failures in a row
        self._paused_until = 0.0  # monotonic time delivery may resume (mapping never stops)
        self._next_probe = 0.0  # monotonic time of the next outage probe (while failing)
        self._parent = int(os.environ.get("WEBHOOKS_PARENT_PID", "0"))
        self.stop_signal: str | None = None  # the signal that asked it to stop, if any
        self._started_at = utcnow()
        self._beaten = float("-inf")  # monotonic time of the last heartbeat written
        self._unsent = 0  # live rows mapped since the last live send
        self._unsent_background = 0  # background rows mapped since the last such send
        self._background_behind = False  # the last background request came back full
        # Stage 1 queued operations of a lane: its sender looks at once.
        self._mapped_live = threading.Event()
        self._mapped_background = threading.Event()
        self._live_gathering = threading.Event()  # woken by a stored delivery, not mapped yet
        self._background_woken = threading.Event()  # only stop() sets it: that mapper polls
        self._send_lock = threading.Lock()  # the senders' shared pause state
        self._live_at = float("-inf")  # monotonic time live rows were last mapped
        self._listener: wake.Listener | None = None
        # SQLite: the live and background mappers' turns (see _map_turn).
        self._sqlite_turn = threading.Lock() if engine.dialect.name == "sqlite" else None
        self.map_batch = settings.worker_map_batch  # live rows mapped in one transaction
        self.stage = settings.worker_stage  # both, map or send
        # A worker that only maps tells the workers that only send, in other processes.
        self._senders = wake.Waker(engine, wake.OUTBOX) if self.stage == "map" else None
        # WORKER_STAGE=send: when the live sender last finished a step, and how long
        # without one makes the worker stop beating (status then shows it stale).
        self._live_sent_at = time.monotonic()
        self._stall_after = heartbeat.STALE_AFTER.total_seconds()
        self._next_expiry = 0.0  # monotonic time of the next sweep of waiting rows

    def check_credentials(self) -> bool:
        """Ask Customer.io which region these credentials belong to; log the answer."""
        if self.cio is None:
            log.warning(
                "dry_run",
                message="no CUSTOMERIO_SITE_ID/CUSTOMERIO_API_KEY: "
                "operations are recorded as dry_run and NOT sent to Customer.io",
            )
            return True
        try:
            region = self.cio.region()
        except DeliveryError as exc:
            log.error(
                "customerio_check_failed",
                status=exc.status,
                error=type(exc).__name__,
                hint="check CUSTOMERIO_SITE_ID, CUSTOMERIO_API_KEY and CUSTOMERIO_REGION"
                if isinstance(exc, CredentialsRefused)
                else "Customer.io unreachable; delivery will retry",
            )
            return not isinstance(exc, CredentialsRefused)
        found = str(region.get("region", "")).lower()
        if (
            not self.settings.customerio_track_url
            and found
            and found != self.settings.customerio_region
        ):
            log.error(
                "customerio_region_mismatch",
                configured=self.settings.customerio_region,
                workspace=found,
                hint=f"set CUSTOMERIO_REGION={found}",
            )
        log.info("customerio_ready", region=found or None, url=region.get("url"))
        return True

    def run_once(self) -> bool:
        """One pass: map (always), then deliver unless paused; True while a backlog lasts.

        Live rows first and on their own; then, unless a live backlog remains, one slice
        of the background lanes."""
        live = self._map(self.map_batch, LIVE)
        live_backlog = live >= self.map_batch
        background = 0
        skipped = self._background_behind  # sending catches up first: more may wait
        if not live_backlog and not skipped:
            background = self._map(BACKGROUND_MAP_BATCH, BACKGROUND)
        self._unsent += live
        self._unsent_background += background
        backlog = live_backlog or skipped or background >= BACKGROUND_MAP_BATCH
        if not self._may_send():
            self._background_behind = False  # mapping never stops for an outage
            return backlog
        # Live operations go out once the live backlog is mapped (or SEND_AFTER of it
        # is, so requests stay large); a due live operation never waits for background.
        if live_backlog and self._unsent < SEND_AFTER:
            return True
        self._unsent = 0
        outcome = self._deliver(SEND_BATCH, LIVE)
        if outcome is None or outcome.claimed >= SEND_BATCH or live_backlog:
            return True if outcome is not None else backlog
        # Then one bounded background request, once about a request's worth is mapped
        # (a row makes two operations or so) or the background mapping ran dry. While
        # a request comes back full, the next pass sends again instead of mapping more,
        # so the background outbox stays short and a backfill's young facts go out soon
        # after they were judged young.
        if (
            background >= BACKGROUND_MAP_BATCH
            and self._unsent_background * 2 < BACKGROUND_SEND_BATCH
        ):
            return True
        self._unsent_background = 0
        outcome = self._deliver(BACKGROUND_SEND_BATCH, BACKGROUND)
        self._background_behind = outcome is not None and (outcome.claimed >= BACKGROUND_SEND_BATCH)
        return backlog or self._background_behind

    def map_step(self) -> bool:
        """Stage 1's live lane (the map loop's own thread in `run`); True while a live
        backlog lasts."""
        try:
            with self._map_turn():
                live = self._map(self.map_batch, LIVE)
        finally:
            self._live_gathering.clear()
        if live:
            self._mapped_live.set()
            self._live_at = time.monotonic()
            self._tell_senders()
        return live >= self.map_batch

    def map_background_step(self) -> bool:
        """One slice of the background lanes (their own thread in `run`, so a live
        webhook never waits for a slice in hand), unless background sends are behind;
        True while a backlog lasts."""
        gathering = self._sqlite_turn is not None and self._live_gathering.is_set()
        if self._background_behind or gathering:
            # The background sender catches up first (it clears the flag). On SQLite a
            # live webhook that woke the live mapper goes first (it clears the other):
            # a slice started now would take the CPU from it, and the turn to write.
            # On PostgreSQL, holding back too starved the backfill (4 rows/s).
            self.stopping.wait(BEHIND_WAIT)
            return True
        if self.stage == "map" and outbox_store.due_at_least(
            self.engine, BACKGROUND, BACKGROUND_SEND_BATCH
        ):
            # The senders are in other processes: a full background request still due
            # means they are behind. Mapping a backfill far ahead of its sends would
            # send events judged young (BACKFILL_LIVE_WINDOW_SECONDS) hours later.
            self.stopping.wait(self.settings.worker_poll_interval)
            return True
        started = time.monotonic()
        # While live webhooks flow, slices are smaller: each takes CPU (and, on SQLite,
        # a write turn) from the live mapper.
        limit = BACKGROUND_MAP_SLICE if self._live_recent() else BACKGROUND_MAP_BATCH
        # Its writes only take the turn: it maps and computes while the live mapper
        # works, and if that one saved person state meanwhile it computes again.
        background = self._map(limit, BACKGROUND, turn=self._map_turn)
        if background:
            self._mapped_background.set()
            self._tell_senders()
            self._yield_to_live(started)
        return background >= limit

    def _tell_senders(self) -> None:
        """WORKER_STAGE=map: wake the sending workers (at most every WAKE_EVERY)."""
        if self._senders is not None:
            self._senders.wake()

    def _map_turn(self) -> contextlib.AbstractContextManager[object]:
        """SQLite's turn in this process: the live mapper holds it for a whole batch,
        background threads for each write. A state step checks that no other committed
        state since it read (webhooks.stage1.state.store), so the live one, holding the
        turn throughout, never computes again because of a background write, and a
        live row waits at most for one background commit, not a slice. PostgreSQL's
        person locks let the mappers run together unless they map the same person."""
        return self._sqlite_turn if self._sqlite_turn is not None else contextlib.nullcontext()

    def _live_recent(self) -> bool:
        return time.monotonic() - self._live_at < LIVE_RECENT

    def _yield_to_live(self, started: float) -> None:
        """While live webhooks flow, background mapping takes at most half the time: after
        each background slice, a pause as long, so live mapping finds the CPU, the
        interpreter and (SQLite) the mapping turn and the write lock free."""
        if self._live_recent():
            self.stopping.wait(min(time.monotonic() - started, BACKGROUND_PAUSE_MAX))

    def send_live_step(self) -> bool:
        """Live operations (their own thread in `run`, so they never wait for a backfill's
        request in flight); True while more are due."""
        if not self._may_send():
            self._live_sent_at = time.monotonic()
            return False
        outcome = self._deliver(SEND_BATCH, LIVE)
        self._live_sent_at = time.monotonic()
        return outcome is not None and outcome.claimed >= SEND_BATCH

    def send_background_step(self) -> bool:
        """One request of the background lanes (replay, backfill, history); True while
        requests come back full, which holds back background mapping meanwhile."""
        if not self._may_send():
            self._background_behind = False  # mapping never stops for an outage
            return False
        live = self._live_recent()
        limit = BACKGROUND_SEND_SLICE if live else BACKGROUND_SEND_BATCH
        started = time.monotonic()
        outcome = self._deliver(limit, BACKGROUND)
        self._background_behind = outcome is not None and outcome.claimed >= limit
        if live and outcome is not None and outcome.claimed:
            # As mapping does: while live webhooks flow, background sends take at most
            # half the time (the GIL, the database and Customer.io's connection).
            self.stopping.wait(min(time.monotonic() - started, BACKGROUND_PAUSE_MAX))
        return self._background_behind

    def _map(self, limit: int, lanes: tuple[int, ...], turn: Turn = contextlib.nullcontext) -> int:
        return process_batch(
            self.engine,
            self.owner,
            self._stage1.configs,
            limit=limit,
            lease=self._lease,
            dry_run=self.cio is None,
            state=self._stage1.state,
            enrichers=self._stage1.enrichers,
            lanes=lanes,
            turn=turn,
        )

    def _may_send(self) -> bool:
        """Not paused for an outage or refused credentials (probing as they require).

        Under the send lock: the live and background senders share the pause."""
        with self._send_lock:
            if self._failures and time.monotonic() >= self._next_probe:
                self._probe()
            if time.monotonic() < self._paused_until:
                return False
            return not (self._auth_pause and not self._credentials_back())

    def _deliver(self, limit: int, lanes: tuple[int, ...]) -> Outcome | None:
        """Send up to `limit` due operations of `lanes`; None when the send failed and
        delivery is now paused."""
        outcome = deliver_batch(
            self.engine,
            self.owner,
            self.cio,
            max_age=self._max_age,
            lease=self._lease,
            stop=self.stopping,
            limit=limit,
            lanes=lanes,
            # SQLite: background writes take the mappers' turn, so live mapping waits
            # for them on a thread lock, not in SQLite's busy handler's sleeps.
            turn=self._map_turn if lanes == BACKGROUND else contextlib.nullcontext,
        )
        with self._send_lock:
            return self._after_send(outcome)

    def _after_send(self, outcome: Outcome) -> Outcome | None:
        if outcome.auth_failed:
            self._auth_pause = min(AUTH_PAUSE_MAX, self._auth_pause * 2) or AUTH_PAUSE_FIRST
            self._paused_until = time.monotonic() + self._auth_pause
            log.error(
                "customerio_unauthorized",
                pause_seconds=self._auth_pause,
                hint="Customer.io refused the credentials (401/403): check "
                "CUSTOMERIO_SITE_ID, CUSTOMERIO_API_KEY and CUSTOMERIO_REGION; "
                "delivery resumes by itself once they work, nothing is dropped",
            )
            return None
        if outcome.transient_failed:
            self._failures += 1
            pause = max(outage_pause(self._failures), outcome.retry_after or 0.0)
            now = time.monotonic()
            self._paused_until = now + pause
            # Probed sooner than the pause ends, never before Customer.io's Retry-After.
            self._next_probe = now + max(PROBE_EVERY, outcome.retry_after or 0.0)
            log.warning("customerio_unavailable", failures=self._failures, pause_seconds=pause)
            return None
        if outcome.claimed:
            self._failures = 0
            self._auth_pause = 0.0
        return outcome

    def _probe(self) -> None:
        """During an outage pause: one cheap request; if it answers, resume at once.

        The pause grows with the outage (to spare Customer.io and our logs); without a
        probe, delivery would resume only when it ends, minutes after Customer.io did.
        """
        if self.cio is None:
            return
        try:
            self.cio.region()
        except DeliveryError:
            self._next_probe = time.monotonic() + PROBE_EVERY
            return
        due = outbox_store.due_now(self.engine)
        log.info("customerio_recovered", failures=self._failures, operations_due=due)
        self._failures = 0
        self._paused_until = 0.0

    def _credentials_back(self) -> bool:
        """After a credentials pause: probe once; resume, or pause longer."""
        if self.check_credentials():
            log.info("customerio_resumed")
            self._auth_pause = 0.0
            return True
        self._auth_pause = min(AUTH_PAUSE_MAX, self._auth_pause * 2)
        self._paused_until = time.monotonic() + self._auth_pause
        return False

    def run(self) -> None:
        """Loop until stop(): a full pass again at once while busy, a short wait when idle."""
        log.info(
            "worker_started",
            owner=self.owner,
            stage=self.stage,
            dry_run=self.cio is None,
            enrichment=sorted(self._stage1.enrichers),
        )
        if self.stage != "send":
            self.check_lock_budget()
        try:
            # A worker that only maps calls Customer.io never, but without credentials
            # it queues every operation as dry_run, which no sender ever sends: it says
            # so at start like any dry run.
            if self.stage != "map" or self.cio is None:
                self.check_credentials()
        except Exception as exc:  # an odd answer must not keep the worker from starting
            log.error("customerio_check_failed", error=type(exc).__name__)
        try:
            self._loop()
        finally:
            self._stage1.close()
            with contextlib.suppress(Exception):  # the database may be what stopped us
                heartbeat.stop(self.engine, self.owner)
        if self.stop_signal is not None:
            log.info("worker_stopping", signal=self.stop_signal)
        log.info("worker_stopped", owner=self.owner)

    def check_lock_budget(self) -> bool:
        """Warn when fewer than BUDGET_WORKERS workers' batches would fit in PostgreSQL's
        lock table at once (WORKER_MAP_BATCH against max_locks_per_transaction); False
        then. Never keeps the worker from starting: the database may be away."""
        try:
            with self.engine.connect() as conn:
                budget = locks.lock_budget(conn, self.map_batch)
        except Exception as exc:
            log.warning("lock_budget_unknown", error=type(exc).__name__)
            return True
        if budget is None or budget["batch_locks"] * BUDGET_WORKERS <= budget["lock_table"]:
            return True
        log.warning(
            "lock_budget_small",
            message=f"a stage-1 batch holds about {locks.LOCKS_PER_ROW} advisory locks a "
            "row; lower WORKER_MAP_BATCH or raise PostgreSQL's max_locks_per_transaction",
            map_batch=self.map_batch,
            **budget,
        )
        return False

    def _expire_waiting(self) -> None:
        """Now and then: deliveries that waited past WAITING_EXPIRY_HOURS become dead."""
        now = time.monotonic()
        if now < self._next_expiry:
            return
        self._next_expiry = now + EXPIRE_EVERY
        cutoff = utcnow() - timedelta(hours=self.settings.waiting_expiry_hours)
        expired = inbox_store.expire_waiting(self.engine, cutoff)
        if expired:
            log.warning("waiting_expired", rows=expired, hours=self.settings.waiting_expiry_hours)

    def delivery_state(self) -> str:
        """One of heartbeat.DELIVERY_STATES, for `webhooks status` on any host."""
        if self.cio is None:
            return "dry_run"  # what it maps is recorded, not sent, whatever its stage
        if self.stage == "map":
            return "map_only"
        if self._auth_pause:
            return "paused_credentials"
        if self._failures:
            return "paused_outage"
        return "sending"

    def _beat(self) -> None:
        """Tell the database this worker is alive, every BEAT_EVERY at most."""
        now = time.monotonic()
        if now - self._beaten >= heartbeat.BEAT_EVERY.total_seconds():
            heartbeat.beat(self.engine, self.owner, self._started_at, self.delivery_state())
            self._beaten = now

    def _loop(self) -> None:
        """The stages overlap: stage 1 maps the live lane here while other threads map
        the background lanes and send, one the live lane, one the background lanes, so
        a backlog drains at the slower stage's rate and a live webhook never waits for
        a backfill's slice or request. WORKER_STAGE=map runs only the mappers;
        WORKER_STAGE=send only the senders, woken here by the mapping workers."""
        sends_only = self.stage == "send"
        self._listener = wake.listener(self.engine, wake.OUTBOX if sends_only else wake.INBOX)
        if self._listener is not None:
            self._listener.listen()
        senders = [
            threading.Thread(
                target=self._step_loop,
                args=(self.send_live_step, self._mapped_live, "send"),
                name="worker-send-live",
                daemon=True,
            ),
            threading.Thread(
                target=self._step_loop,
                # Reniced on PostgreSQL only: on SQLite its short writes take the
                # database's one write lock, which a starved thread would hold while
                # live mapping and ingest wait (a 1.9 s live p99 under a backfill).
                args=(
                    self.send_background_step,
                    self._mapped_background,
                    "send",
                    self._sqlite_turn is None,
                ),
                name="worker-send-background",
                daemon=True,
            ),
        ]
        mappers = [
            threading.Thread(
                target=self._step_loop,
                # Backfills and replays are stored by commands, not announced: polled.
                args=(self.map_background_step, self._background_woken, "map_background"),
                name="worker-map-background",
                daemon=True,
            ),
        ]
        threads = ([] if self.stage == "map" else senders) + ([] if sends_only else mappers)
        for thread in threads:
            thread.start()
        try:
            if sends_only:
                self._send_loop()
            else:
                self._map_loop()
        finally:
            self.stopping.set()
            self._wake_threads()
            for thread in threads:
                thread.join(timeout=SEND_JOIN_SECONDS)
            if self._listener is not None:
                self._listener.close()

    def _wake_threads(self) -> None:
        for event in (self._mapped_live, self._mapped_background, self._background_woken):
            event.set()

    def _map_loop(self) -> None:
        while not self.stopping.is_set():
            if self._parent and os.getppid() != self._parent:
                log.error("worker_orphaned", message="the serve process is gone; stopping")
                return
            try:
                backlog = self.map_step()
                self._beat()  # after a pass that reached the database: alive, not stuck
                self._expire_waiting()
            except Exception as exc:  # the database away, a bug: log, wait, go on
                # The class only: the message of a database error quotes its parameters.
                log.error("worker_error", stage="map", error=type(exc).__name__)
                self.stopping.wait(ERROR_PAUSE)
                continue
            if not backlog:
                self._idle()

    def _send_loop(self) -> None:
        """WORKER_STAGE=send: the sender threads send; this one beats the heartbeat and
        passes on the mapping workers' wake-ups (the senders poll without them).

        It beats only while the live sender finishes steps: a sender stuck for good
        would otherwise look alive (a worker running both beats after each mapping
        pass, which proves its own loop, not its senders')."""
        # No orphan check: `webhooks serve`, the only parent, runs its worker with both
        # stages (webhooks.supervisor), where _map_loop checks.
        stalled = False
        while not self.stopping.is_set():
            idle = time.monotonic() - self._live_sent_at
            if idle > self._stall_after:
                if not stalled:
                    log.error("send_stalled", seconds=round(idle, 1))
                stalled = True
                self.stopping.wait(self.settings.worker_poll_interval)
                continue
            stalled = False
            try:
                self._beat()
            except Exception as exc:  # the database away: the senders say so too
                log.error("worker_error", stage="send", error=type(exc).__name__)
                self.stopping.wait(ERROR_PAUSE)
                continue
            poll = self.settings.worker_poll_interval
            if self._listener is None:
                self.stopping.wait(poll)
            elif self._listener.wait(poll):
                # What the mappers commit meanwhile goes in the same request.
                self.stopping.wait(GATHER_SECONDS)
                self._mapped_live.set()
                self._mapped_background.set()

    def _idle(self) -> None:
        """Wait for a wake-up (a stored delivery) or the poll interval. Once woken, wait a
        moment more, so a stream of webhooks is mapped a few at a time instead of one
        transaction each competing with ingest for the database."""
        poll = self.settings.worker_poll_interval
        if self._listener is None:
            self.stopping.wait(poll)
        elif self._listener.wait(poll):
            # Meanwhile no background slice starts (SQLite): see map_background_step.
            self._live_gathering.set()
            self.stopping.wait(GATHER_SECONDS)

    def _step_loop(
        self,
        step: Callable[[], bool],
        woken: threading.Event,
        stage: str,
        background: bool = False,
    ) -> None:
        """Run `step` while it reports more to do; else wait for `woken` or the poll."""
        if background:
            _lower_this_thread()
        while not self.stopping.is_set():
            # Cleared before looking: whatever stage 1 queues after this is seen now
            # or wakes the wait below.
            woken.clear()
            try:
                more = step()
            except Exception as exc:
                log.error("worker_error", stage=stage, error=type(exc).__name__)
                self.stopping.wait(ERROR_PAUSE)
                continue
            if not more:
                woken.wait(self.settings.worker_poll_interval)

    def stop(self, signal_name: str | None = None) -> None:
        """Finish the send in hand, hand the rest of the pass back, return from run()."""
        self.stop_signal = signal_name
        self.stopping.set()
        self._wake_threads()  # the other threads stop waiting at once
        if self._listener is not None:
            self._listener.interrupt()  # and so does an idle wait for a wake-up


def _lower_this_thread() -> None:
    """Run the calling thread at the lowest CPU priority (Linux: threads are scheduled
    alone), so background sends take only the CPU live work leaves."""
    with contextlib.suppress(AttributeError, OSError):  # not Linux, or not allowed
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), BACKGROUND_NICENESS)


def customerio_client(settings: Settings) -> CustomerIO | None:
    """The Customer.io client for these settings, or None for a dry run."""
    if settings.dry_run:
        return None
    key = settings.customerio_api_key.get_secret_value() if settings.customerio_api_key else ""
    return CustomerIO.create(
        settings.customerio_url,
        settings.customerio_site_id or "",
        key,
        settings.customerio_max_rps,
    )


def install_signal_handlers(worker: Worker) -> None:
    """SIGTERM and SIGINT stop the worker after the pass in hand."""

    def _stop(signum: int, _frame: FrameType | None) -> None:
        # Nothing but the flag here: logging from a signal handler can deadlock on the
        # logger's lock if the signal lands while the loop is writing a line.
        worker.stop(signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
