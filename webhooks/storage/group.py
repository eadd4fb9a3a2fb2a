"""Group commit: the inserts that wait for SQLite's writer turn in one process share a
transaction (`store`); on PostgreSQL, those that arrive while one runs (`store_shared`).

SQLite commits one writer at a time, and each commit with synchronous=FULL waits for
the disk. One commit per webhook made ingest as fast as the disk's flushes, less
whatever the worker's transactions took of the turn. Instead, whichever request thread
gets the writer turn (the leader) takes every insert queued in its process so far and
commits them together, up to a bound; the others find theirs done when their turn comes
and give it back at once, without touching the database. Every request is still
answered only after the commit that holds its row, so store-then-ack is unchanged. A
group the database refuses is stored again entry by entry, so one request's failure is
never another's.

PostgreSQL takes concurrent writers and commits concurrent transactions together by
itself, but each request's own statement cost the web process a round trip, a statement
and a commit of Python (SQLAlchemy and psycopg), more than all the rest of the request.
`store_shared` keeps up to `leaders` statements of one process running; a request that
finds them all running waits for one to finish, and the next leader stores everything
queued by then in one statement (webhooks.storage.inbox).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

Row = TypeVar("Row")
MAX_ROWS = 100  # rows in one group's transaction: a few ms of inserts, then the commit
MAX_BYTES = 4 << 20  # bodies in one group (a webhook may be up to MAX_BODY_BYTES)

# The writer turn: given "is my insert done already?", yields whether it holds the turn
# (False: done by another leader, the database was not touched).
Turn = Callable[[Callable[[], bool]], AbstractContextManager[bool]]


@dataclass(eq=False)
class _Entry(Generic[Row]):
    """One caller's rows (stored together), and what became of them."""

    rows: Sequence[Row]
    size: int
    done: threading.Event = field(default_factory=threading.Event)
    result: list[Any] | None = None
    error: BaseException | None = None


class GroupCommit(Generic[Row]):
    """The queue of one process's inserts into one database (see the module doc)."""

    def __init__(self, max_rows: int = MAX_ROWS, max_bytes: int = MAX_BYTES) -> None:
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)  # a leader finished (store_shared)
        self._leading = 0
        self._queue: list[_Entry[Row]] = []
        self.max_rows, self.max_bytes = max_rows, max_bytes

    def store(
        self,
        rows: Sequence[Row],
        size: int,
        turn: Turn,
        insert: Callable[[list[Row]], list[Any]],
        timeout: float,
    ) -> list[Any]:
        """`insert`'s answers for `rows`, stored in one transaction with whatever else
        waits; `size` counts toward MAX_BYTES. Raises what storing them raised, and
        TimeoutError when no turn came in time (then they were not stored)."""
        entry: _Entry[Row] = _Entry(rows, size)
        with self._lock:
            self._queue.append(entry)
        try:
            with turn(entry.done.is_set) as leading:
                while leading and not entry.done.is_set():
                    self._lead(insert)
        except TimeoutError:
            with self._lock:
                if entry in self._queue:  # nobody took it: not stored, say so
                    self._queue.remove(entry)
                    raise
            # A leader is storing it right now: its answer is the truth.
            if not entry.done.wait(timeout):
                raise
        if entry.error is not None:
            raise entry.error
        assert entry.result is not None
        return entry.result

    def store_shared(
        self,
        rows: Sequence[Row],
        size: int,
        insert: Callable[[list[Row]], list[Any]],
        timeout: float,
        leaders: int,
        alone: Callable[[Exception], bool] = lambda exc: True,
    ) -> list[Any]:
        """As store(), with up to `leaders` threads storing groups at once and no turn
        to wait for: a database that takes concurrent writers (PostgreSQL). A thread
        finding every leader busy waits for one to finish; by then its rows are
        usually stored, or it leads the next group itself.

        A group refused with an error `alone` says may be one entry's own (a value the
        database refuses, a row another transaction holds) is stored again entry by
        entry while this request's `timeout` lasts; any other (the database gone) is
        every entry's answer at once, so one leader never keeps the others waiting
        through a retry per entry."""
        entry: _Entry[Row] = _Entry(rows, size)
        deadline = time.monotonic() + timeout
        with self._changed:
            self._queue.append(entry)
            while not entry.done.is_set() and self._leading >= leaders:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not self._changed.wait(remaining):
                    if entry in self._queue:  # nobody took it: not stored, say so
                        self._queue.remove(entry)
                        raise TimeoutError("no inbox writer free within the database timeout")
                    break  # a leader is storing it: its answer is the truth
            leading = not entry.done.is_set() and entry in self._queue
            if leading:
                self._leading += 1
        if leading:
            try:
                # Another leader may have taken this entry meanwhile: then nothing is
                # left to take, and it is waited for below like any other.
                while not entry.done.is_set() and self._lead(insert, deadline, alone):
                    if not entry.done.is_set():  # another round: wake those it stored
                        with self._changed:
                            self._changed.notify_all()
            finally:
                with self._changed:
                    self._leading -= 1
                    self._changed.notify_all()
        if not entry.done.wait(max(0.0, deadline - time.monotonic()) + timeout):
            raise TimeoutError("the group's leader did not store it in time")
        if entry.error is not None:
            raise entry.error
        assert entry.result is not None
        return entry.result

    def _lead(
        self,
        insert: Callable[[list[Row]], list[Any]],
        deadline: float | None = None,
        alone: Callable[[Exception], bool] = lambda exc: True,
    ) -> bool:
        """Store the queue's first entries (at least one) in one transaction; False
        when the queue was empty. After a refused group, each entry is tried alone
        if `alone(error)` and `deadline` has not passed."""
        taken: list[_Entry[Row]] = []
        rows = size = 0
        with self._lock:
            for entry in self._queue:
                over = rows + len(entry.rows) > self.max_rows or size + entry.size > self.max_bytes
                if taken and over:
                    break
                taken.append(entry)
                rows, size = rows + len(entry.rows), size + entry.size
            del self._queue[: len(taken)]
        if not taken:
            return False
        try:
            answers = insert([row for entry in taken for row in entry.rows])
            start = 0
            for entry in taken:
                entry.result = answers[start : start + len(entry.rows)]
                start += len(entry.rows)
        except Exception as exc:
            for entry in taken:  # one entry's refusal must not be the others'
                late = deadline is not None and time.monotonic() >= deadline
                if len(taken) == 1 or late or not alone(exc):
                    entry.error = exc
                    continue
                try:
                    entry.result = insert(list(entry.rows))
                except Exception as own:
                    entry.error = own
        finally:
            for entry in taken:
                if entry.result is None and entry.error is None:
                    entry.error = TimeoutError("the group's leader stopped before storing it")
                entry.done.set()
        return True
