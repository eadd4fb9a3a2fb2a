"""Group commit: concurrent inserts of one process share a transaction (storage/group.py).

The turn here is the real writer turn of an in-memory database (this process's threads
only); the inserts are functions that record what they were given, so the tests say
exactly which rows went into which transaction.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import pytest

from webhooks.storage import writer
from webhooks.storage.group import GroupCommit, _Entry


def turn(unneeded: Callable[[], bool]) -> AbstractContextManager[bool]:
    return writer.turn(":memory:", 5, unneeded)


class Recorder:
    """An insert that answers each row with its own name, and can be held or refused."""

    def __init__(self, refuse: str | None = None) -> None:
        self.batches: list[list[str]] = []
        self.entered, self.release = threading.Event(), threading.Event()
        self.release.set()
        self.refuse = refuse

    def __call__(self, rows: list[str]) -> list[Any]:
        self.batches.append(list(rows))
        self.entered.set()
        self.release.wait(5)
        if self.refuse in rows:
            raise ValueError(f"refused {self.refuse}")
        return [f"stored {row}" for row in rows]


class Callers:
    """Each entry stored from a thread of its own; answers (or errors) by first row."""

    def __init__(self, group: GroupCommit[str], insert: Recorder, entries: list[list[str]]):
        self.answers: dict[str, Any] = {}
        self.threads = [
            threading.Thread(target=self._store, args=(group, insert, rows)) for rows in entries
        ]
        for thread in self.threads:
            thread.start()

    def _store(self, group: GroupCommit[str], insert: Recorder, rows: list[str]) -> None:
        try:
            self.answers[rows[0]] = group.store(rows, 1, turn, insert, 5)
        except Exception as exc:
            self.answers[rows[0]] = exc

    def join(self) -> dict[str, Any]:
        for thread in self.threads:
            thread.join(5)
        return self.answers


def queued(group: GroupCommit[str], count: int) -> None:
    """Wait until `count` entries wait for the turn (the leader holds it)."""
    deadline = time.monotonic() + 5
    while len(group._queue) < count:
        assert time.monotonic() < deadline, "the threads never queued"
        time.sleep(0.001)


@pytest.mark.parametrize("shared", [False, True], ids=["turn", "shared"])
def test_inserts_waiting_for_the_turn_are_stored_in_one_transaction(shared: bool) -> None:
    """store (SQLite's writer turn) and store_shared (PostgreSQL: no turn, the leader
    busy) alike: what queued while the first insert ran goes together next."""
    group: GroupCommit[str] = GroupCommit()
    insert = Recorder()
    insert.release.clear()  # the first insert holds the turn until released
    kind = SharedCallers if shared else Callers
    first = kind(group, insert, [["a"]])
    assert insert.entered.wait(5)
    rest = kind(group, insert, [["b"], ["c", "d"], ["e"]])  # an app batch: c and d
    queued(group, 3)
    released = time.monotonic()
    insert.release.set()
    answers = first.join() | rest.join()
    # Woken when the leader finishes, not when their 5 s timeout runs out.
    assert time.monotonic() - released < 1
    # The leader that found b, c+d and e queued stored them together, each got its own.
    assert insert.batches[0] == ["a"]
    assert sorted(insert.batches[1]) == ["b", "c", "d", "e"]
    assert len(insert.batches) == 2
    assert answers == {
        "a": ["stored a"],
        "b": ["stored b"],
        "c": ["stored c", "stored d"],
        "e": ["stored e"],
    }


def test_a_group_the_database_refuses_is_stored_entry_by_entry() -> None:
    group: GroupCommit[str] = GroupCommit()
    insert = Recorder(refuse="bad")
    insert.release.clear()
    first = Callers(group, insert, [["a"]])
    assert insert.entered.wait(5)
    rest = Callers(group, insert, [["b"], ["bad", "c"], ["d"]])
    queued(group, 3)
    insert.release.set()
    answers = first.join() | rest.join()
    # The refused entry (both its rows: a batch is all or nothing) fails alone.
    assert answers["b"] == ["stored b"]
    assert answers["d"] == ["stored d"]
    assert isinstance(answers["bad"], ValueError)
    assert sorted(map(sorted, insert.batches[2:])) == [["b"], ["bad", "c"], ["d"]]


def test_groups_are_bounded_and_a_leader_stays_until_its_own_rows_are_stored() -> None:
    group: GroupCommit[str] = GroupCommit(max_rows=2)
    insert = Recorder()
    insert.release.clear()
    first = Callers(group, insert, [["a"]])
    assert insert.entered.wait(5)
    rest = Callers(group, insert, [[name] for name in "bcdef"])
    queued(group, 5)
    insert.release.set()
    answers = first.join() | rest.join()
    assert all(len(batch) <= 2 for batch in insert.batches)
    assert sorted(row for batch in insert.batches for row in batch) == list("abcdef")
    assert answers == {name: [f"stored {name}"] for name in "abcdef"}


def test_rows_not_taken_when_the_turn_times_out_are_never_stored() -> None:
    group: GroupCommit[str] = GroupCommit()
    insert = Recorder()
    holding, done = threading.Event(), threading.Event()

    def hold() -> None:
        with writer.turn(":memory:", 5):
            holding.set()
            done.wait(5)

    holder = threading.Thread(target=hold)
    holder.start()
    holding.wait(5)

    def short(unneeded: Callable[[], bool]) -> AbstractContextManager[bool]:
        return writer.turn(":memory:", 0.1, unneeded)

    try:
        with pytest.raises(TimeoutError):
            group.store(["late"], 1, short, insert, 0.1)
    finally:
        done.set()
        holder.join()
    # Answered as not stored (a 503 the provider retries), so it must not be stored later.
    assert group.store(["next"], 1, turn, insert, 5) == ["stored next"]
    assert insert.batches == [["next"]]


# --- store_shared: several leaders, no turn (PostgreSQL) ------------------------------


class SharedCallers(Callers):
    """Callers of store_shared with `leaders` leaders and a `timeout`."""

    def __init__(
        self,
        group: GroupCommit[str],
        insert: Recorder,
        entries: list[list[str]],
        leaders: int = 1,
        timeout: float = 5,
    ) -> None:
        self.leaders, self.timeout = leaders, timeout
        super().__init__(group, insert, entries)

    def _store(self, group: GroupCommit[str], insert: Recorder, rows: list[str]) -> None:
        try:
            self.answers[rows[0]] = group.store_shared(rows, 1, insert, self.timeout, self.leaders)
        except Exception as exc:
            self.answers[rows[0]] = exc


def test_shared_never_runs_more_inserts_at_once_than_it_has_leaders() -> None:
    running = peak = 0
    lock = threading.Lock()

    class Overlapping(Recorder):
        def __call__(self, rows: list[str]) -> list[Any]:
            nonlocal running, peak
            with lock:
                running += 1
                peak = max(peak, running)
            time.sleep(0.01)  # long enough for the others to pile up
            with lock:
                running -= 1
            return super().__call__(rows)

    group: GroupCommit[str] = GroupCommit()
    insert = Overlapping()
    names = [f"r{n}" for n in range(30)]
    answers = SharedCallers(group, insert, [[name] for name in names], leaders=2).join()
    assert answers == {name: [f"stored {name}"] for name in names}
    assert peak == 2  # two at once, never three
    assert len(insert.batches) < len(names)  # and the waiting ones went together
    # A leader whose entry another took found nothing left: it waited, never ran an
    # empty insert.
    assert [] not in insert.batches


def test_shared_a_group_refused_for_every_entry_alike_is_not_retried_entry_by_entry() -> None:
    group: GroupCommit[str] = GroupCommit()
    insert = Recorder(refuse="bad")
    insert.release.clear()
    first = SharedCallers(group, insert, [["a"]])
    assert insert.entered.wait(5)

    def store(rows: list[str]) -> Any:
        try:
            return group.store_shared(rows, 1, insert, 5, 1, alone=lambda exc: False)
        except Exception as exc:
            return exc

    answers: dict[str, Any] = {}
    threads = [
        threading.Thread(target=lambda r=rows: answers.update({r[0]: store(r)}))
        for rows in (["b"], ["bad"], ["c"])
    ]
    for thread in threads:
        thread.start()
    queued(group, 3)
    insert.release.set()
    for thread in threads:
        thread.join(5)
    assert first.join() == {"a": ["stored a"]}
    # One refused group (the database gone, say): everyone's answer, no retries.
    assert len(insert.batches) == 2
    assert sorted(insert.batches[1]) == ["b", "bad", "c"]
    assert all(isinstance(answers[name], ValueError) for name in ("b", "bad", "c"))


def test_shared_rows_no_leader_took_in_time_are_never_stored() -> None:
    group: GroupCommit[str] = GroupCommit()
    insert = Recorder()
    insert.release.clear()  # the one leader stays busy
    first = SharedCallers(group, insert, [["a"]])
    assert insert.entered.wait(5)
    late = SharedCallers(group, insert, [["late"]], timeout=0.1).join()
    assert isinstance(late["late"], TimeoutError)
    insert.release.set()
    assert first.join() == {"a": ["stored a"]}
    assert insert.batches == [["a"]]  # "late" was taken out of the queue, not stored


def test_a_leader_finding_the_queue_empty_stores_nothing() -> None:
    """With several leaders, one may find its entry taken by another: nothing is left
    to take, and it must wait for it, not run an empty insert (a connection checked
    out of the pool for nothing, in a loop)."""
    group: GroupCommit[str] = GroupCommit()
    insert = Recorder()
    assert group._lead(insert) is False
    assert insert.batches == []


@pytest.mark.parametrize(("seconds_left", "batches"), [(5, 3), (-1, 1)])
def test_a_refused_group_is_tried_entry_by_entry_only_before_the_deadline(
    seconds_left: float, batches: int
) -> None:
    """Past the leader's deadline (its own request's timeout) the group's error is
    every entry's answer: no further statement per entry while others wait."""
    group: GroupCommit[str] = GroupCommit()
    entries = [_Entry(["b"], 1), _Entry(["bad"], 1)]
    group._queue.extend(entries)
    insert = Recorder(refuse="bad")
    assert group._lead(insert, deadline=time.monotonic() + seconds_left) is True
    assert len(insert.batches) == batches
    assert isinstance(entries[1].error, ValueError)
    if batches == 3:  # tried alone: "b" stored, only "bad" refused
        assert entries[0].result == ["stored b"]
    else:
        assert isinstance(entries[0].error, ValueError)
