"""The worker: maps pending inbox rows and delivers the outbox, until told to stop."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from datetime import timedelta
from types import FrameType

import structlog
from sqlalchemy.engine import Engine

from webhooks.config import Settings
from webhooks.delivery.customerio import CustomerIO, DeliveryError
from webhooks.delivery.deliver import deliver_batch
from webhooks.delivery.process import process_batch
from webhooks.delivery.retry import outage_pause
from webhooks.mapping import mapper_config

log = structlog.get_logger("webhooks.worker")
AUTH_PAUSE_FIRST = 5.0  # seconds; doubles up to AUTH_PAUSE_MAX while credentials fail
AUTH_PAUSE_MAX = 300.0
ERROR_PAUSE = 1.0  # after an unexpected error (the database away), before trying again


class Worker:
    """One worker process: both stages in one loop, latency first when idle."""

    def __init__(self, engine: Engine, settings: Settings, cio: CustomerIO | None) -> None:
        self.engine = engine
        self.settings = settings
        self.cio = cio
        self.owner = f"{socket.gethostname()}:{os.getpid()}"
        self.stopping = threading.Event()
        self._config = mapper_config(settings)
        self._max_age = timedelta(hours=settings.delivery_max_age_hours)
        self._lease = timedelta(seconds=settings.worker_lease_seconds)
        self._auth_pause = 0.0
        self._failures = 0  # transient delivery failures in a row
        self._outage_until = 0.0

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
                error=str(exc),
                hint="check CUSTOMERIO_SITE_ID, CUSTOMERIO_API_KEY and CUSTOMERIO_REGION"
                if exc.auth
                else "Customer.io unreachable; delivery will retry",
            )
            return not exc.auth
        log.info("customerio_ready", region=region.get("region"), url=region.get("url"))
        return True

    def run_once(self) -> int:
        """One pass of both stages; returns how many rows it touched."""
        mapped = process_batch(self.engine, self.owner, self._config, lease=self._lease)
        if self._auth_pause or time.monotonic() < self._outage_until:
            return mapped
        outcome = deliver_batch(
            self.engine, self.owner, self.cio, max_age=self._max_age, lease=self._lease
        )
        if outcome.transient_failed:
            self._failures += 1
            pause = outage_pause(self._failures)
            self._outage_until = time.monotonic() + pause
            log.warning("customerio_unavailable", failures=self._failures, pause_seconds=pause)
        elif outcome.claimed:
            self._failures = 0
        if outcome.auth_failed:
            self._auth_pause = AUTH_PAUSE_FIRST
            log.error(
                "customerio_unauthorized",
                pause_seconds=self._auth_pause,
                hint="Customer.io refused the credentials (401/403): check "
                "CUSTOMERIO_SITE_ID, CUSTOMERIO_API_KEY and CUSTOMERIO_REGION; "
                "delivery resumes by itself once they work, nothing is dropped",
            )
        return mapped + outcome.claimed

    def _resume_after_auth_pause(self) -> None:
        if self.stopping.wait(self._auth_pause):
            return
        if self.check_credentials():
            log.info("customerio_resumed")
            self._auth_pause = 0.0
        else:
            self._auth_pause = min(AUTH_PAUSE_MAX, self._auth_pause * 2)

    def run(self) -> None:
        """Loop until stop(): a full pass again at once while busy, a short wait when idle."""
        log.info("worker_started", owner=self.owner, dry_run=self.cio is None)
        self.check_credentials()
        while not self.stopping.is_set():
            try:
                busy = self.run_once()
            except Exception as exc:  # the database away, a bug: log, wait, go on
                log.error("worker_error", error=type(exc).__name__, detail=str(exc)[:300])
                self.stopping.wait(ERROR_PAUSE)
                continue
            if self._auth_pause:
                self._resume_after_auth_pause()
            elif not busy:
                self.stopping.wait(self.settings.worker_poll_interval)
        log.info("worker_stopped", owner=self.owner)

    def stop(self, *_: object) -> None:
        """Finish the pass in hand, then return from run() (leases of the rest lapse)."""
        self.stopping.set()


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
        log.info("worker_stopping", signal=signal.Signals(signum).name)
        worker.stop()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
