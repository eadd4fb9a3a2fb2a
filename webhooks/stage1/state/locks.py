"""Which stage-1 batches may run at once: locks at the grain of what can conflict.

PostgreSQL. Two batches conflict only when they read or write the same identity state:
an identifier's link, an order, a checkout, a person's record and facts. So a batch
takes transaction-level advisory locks on exactly those, and workers whose batches
share nothing map in parallel:

1. the state lock, shared (a batch with a privacy redaction takes it exclusively: it
   erases by account and by person, beyond any list of names);
2. every name the batch reads by key (identifiers, orders and their aliases, facts,
   checkouts), hashed, in one sorted sweep;
3. the people those names lead to, in one sorted sweep, after reading the links; then
   the links are read again, and the people of any link another worker moved meanwhile
   (a merge), and the orders an alias led to, are locked too, until a read turns up
   nothing new.

Sweeps 2 and 3 are each taken in a fixed (sorted) order and 3 always after 2, so two
batches cannot deadlock on them; only a lock taken in step 3's repeat can. PostgreSQL
detects that and cancels one transaction, which `contended` recognises: the batch is
computed again, like a StateChanged.

SQLite has a single writer: locks are no-ops there, and the state epoch
(store.begin_writes) tells a worker when another saved state while it computed.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from webhooks.core.metrics import STATE_LOCK_WAIT

# Any constant: the database-wide lock every batch holds shared (a redaction, alone).
STATE_LOCK_ID = 0x57EB400C
NAMES, PEOPLE = 1, 2  # the advisory lock classes (first key of the two-key form)
# SQLSTATEs of a batch that lost a lock race: deadlock detected, lock_timeout reached.
CONTENDED = {"40P01", "55P03"}

_SWEEP = sa.text(
    # An aggregate over unnest takes the locks one by one in the array's (sorted) order.
    "SELECT count(pg_advisory_xact_lock(:cls, h)) FROM unnest(CAST(:ids AS integer[])) AS h"
)


def lock_id(name: str) -> int:
    """A stable signed 32-bit id for a name (a collision only serialises two batches)."""
    digest = hashlib.blake2b(name.encode(), digest_size=4).digest()
    return int.from_bytes(digest, "big", signed=True)


def waited_seconds() -> float:
    """This process's total time taking state locks (the histogram's sum)."""
    return sum(
        sample.value
        for metric in STATE_LOCK_WAIT.collect()
        for sample in metric.samples
        if sample.name.endswith("_sum")
    )


def contended(exc: BaseException) -> bool:
    """Did this database error come from losing a lock race (compute the batch again)?"""
    code = getattr(getattr(exc, "orig", None), "sqlstate", None)
    return isinstance(exc, DBAPIError) and code in CONTENDED


class StateLocks:
    """The locks one batch holds, on its transaction's connection."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.enabled = conn.dialect.name == "postgresql"
        self.held: dict[int, set[int]] = {NAMES: set(), PEOPLE: set()}
        self.waited = 0.0  # seconds spent taking locks

    def begin(self, exclusive: bool) -> None:
        """The state lock: shared, or exclusive for a batch that erases people."""
        if not self.enabled:
            return
        function = "pg_advisory_xact_lock" if exclusive else "pg_advisory_xact_lock_shared"
        self._timed(sa.text(f"SELECT {function}(:id)"), {"id": STATE_LOCK_ID})

    def names(self, names: Iterable[str]) -> bool:
        """Lock identifiers, orders, facts and checkouts before reading them; False
        when all of them were held already (or locks are no-ops here)."""
        return self._sweep(NAMES, names)

    def people(self, person_ids: Iterable[str]) -> bool:
        """Lock these people; False when all of them were held already."""
        return self._sweep(PEOPLE, person_ids)

    def _sweep(self, cls: int, values: Iterable[str]) -> bool:
        if not self.enabled:
            return False
        ids = sorted({lock_id(value) for value in values} - self.held[cls])
        if not ids:
            return False
        self._timed(_SWEEP, {"cls": cls, "ids": ids})
        self.held[cls].update(ids)
        return True

    def _timed(self, statement: sa.TextClause, params: dict[str, object]) -> None:
        started = time.perf_counter()
        try:
            self.conn.execute(statement, params)
        finally:  # a wait that ended in a timeout or a deadlock counts as well
            waited = time.perf_counter() - started
            self.waited += waited
            STATE_LOCK_WAIT.observe(waited)


# Advisory locks a batch holds a row until it commits: measured with the stage-1
# benchmark's paid checkouts (701 for 100 rows, 3,501 for 500: each row's identifiers,
# order, checkout and person). A rough figure: other deliveries name fewer or more.
LOCKS_PER_ROW = 7


def lock_budget(conn: Connection, batch: int) -> dict[str, int] | None:
    """On PostgreSQL, the shared lock table against what a batch of `batch` rows holds;
    None elsewhere. The table (max_locks_per_transaction x (max_connections +
    max_prepared_transactions) entries) serves every session: when full, any of them,
    ingest included, is refused with "out of shared memory"."""
    if conn.dialect.name != "postgresql":
        return None
    settings = ("max_locks_per_transaction", "max_connections", "max_prepared_transactions")
    rows = conn.execute(
        sa.text("SELECT name, setting FROM pg_settings WHERE name = ANY(:names)"),
        {"names": list(settings)},
    )
    value = {name: int(setting) for name, setting in rows}
    table = value[settings[0]] * (value[settings[1]] + value[settings[2]])
    return {"lock_table": table, "batch_locks": batch * LOCKS_PER_ROW}
