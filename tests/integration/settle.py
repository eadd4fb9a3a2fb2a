"""Waiting for "nothing else will arrive" on signals, not on the clock.

The fake Customer.io logs a request before it answers it, and the worker records an
operation's outcome only after the answer. So once every inbox row is finished and no
outbox operation is pending (due, held or leased), every request the worker made for
them is already in the fake's counters, and an idle worker has nothing left to send.
"""

from __future__ import annotations

import time
from collections.abc import Collection
from typing import Any

import sqlalchemy as sa

from webhooks.fakes.customerio import FakeCustomerIOClient
from webhooks.storage.db import create_db_engine
from webhooks.storage.schema import inbox, outbox

FINISHED = ("done", "dead")  # the inbox states a row leaves only by a requeue
# Between the two reads of the fake's counters: several WORKER_POLL_INTERVALs of the
# stacks under test (0.05 s), so the idle worker really had passes in which to send.
IDLE_READS_APART = 0.15


def pipeline_state(database_url: str) -> tuple[set[str], int]:
    """The states inbox rows are in, and how many outbox operations are still pending."""
    engine = create_db_engine(database_url)
    try:
        with engine.connect() as conn:
            states = set(conn.execute(sa.select(inbox.c.state).distinct()).scalars())
            pending = conn.execute(
                sa.select(sa.func.count()).select_from(outbox).where(outbox.c.state == "pending")
            ).scalar_one()
    finally:
        engine.dispose()
    return states, int(pending)


def wait_until_settled(
    database_url: str,
    fake: FakeCustomerIOClient,
    timeout: float = 20.0,
    finished: Collection[str] = FINISHED,
) -> dict[str, Any]:
    """Wait until the worker is done with everything stored, and has gone quiet.

    Settled: every inbox row is in one of `finished`, no outbox operation is pending,
    and the fake's counters read the same twice, IDLE_READS_APART seconds apart, with
    the database settled at both reads. Returns those counters. Fails after `timeout`
    seconds with what was still unfinished.
    """
    deadline = time.monotonic() + timeout
    quiet: dict[str, Any] | None = None  # the counters at the previous settled read
    while True:
        states, pending = pipeline_state(database_url)
        stats = fake.stats()
        previous = quiet
        if states <= set(finished) and pending == 0:
            if stats == previous:
                return stats
            quiet = stats
        else:
            quiet = None
        if time.monotonic() > deadline:
            raise AssertionError(
                f"the pipeline did not settle within {timeout} s: inbox states "
                f"{sorted(states)}, {pending} outbox operations pending, the fake's "
                f"counters {stats} (at the previous settled read: {previous})"
            )
        time.sleep(IDLE_READS_APART if quiet is not None else 0.05)
