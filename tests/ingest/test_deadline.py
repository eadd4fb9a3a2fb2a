"""The body deadline watchdog on real sockets: it cuts a stalled read, and only that."""

from __future__ import annotations

import socket
import time

import pytest

from webhooks.ingest import deadline
from webhooks.ingest.deadline import BodyDeadlines


def test_a_read_still_blocked_at_the_deadline_ends_and_is_marked_expired() -> None:
    deadlines = BodyDeadlines()
    server, client = socket.socketpair()
    with server, client:
        started = time.monotonic()
        with deadlines.watch(server, 0.2) as watch:
            data = server.recv(10)  # the client never sends: only the cut ends this
        assert data == b""
        assert watch.expired
        assert 0.15 < time.monotonic() - started < 2
        server.sendall(b"408")
        assert client.recv(10) == b"408"


def test_a_read_that_finishes_in_time_is_never_cut() -> None:
    deadlines = BodyDeadlines()
    server, client = socket.socketpair()
    with server, client:
        with deadlines.watch(server, 0.2) as watch:
            client.sendall(b"body")
            assert server.recv(10) == b"body"
        time.sleep(0.4)  # past the deadline: the finished entry must be skipped
        assert not watch.expired
        client.sendall(b"next request")
        assert server.recv(20) == b"next request"


def test_an_earlier_deadline_wakes_the_watchdog_sleeping_on_a_later_one() -> None:
    deadlines = BodyDeadlines()
    pairs = [socket.socketpair() for _ in range(2)]
    try:
        with deadlines.watch(pairs[0][0], 30) as late:
            with deadlines.watch(pairs[1][0], 0.2) as early:
                started = time.monotonic()
                assert pairs[1][0].recv(10) == b""
                assert time.monotonic() - started < 2
            assert early.expired
            assert not late.expired
    finally:
        for pair in pairs:
            for sock in pair:
                sock.close()


def test_requests_within_the_usual_timeout_never_wake_the_watchdog(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Deadlines later than the watchdog's next look (every LOOK_EVERY) need no wake-up:
    a thread switch per request was a fifth of a web process's time. Finished entries
    are cleared at the looks, so the heap does not grow without bound."""
    monkeypatch.setattr(deadline, "LOOK_EVERY", 0.1)
    deadlines = BodyDeadlines()
    woken = 0
    notify = deadlines._cond.notify

    def counting(n: int = 1) -> None:
        nonlocal woken
        woken += 1
        notify(n)

    monkeypatch.setattr(deadlines._cond, "notify", counting)
    server, client = socket.socketpair()
    with server, client:
        for _ in range(200):
            with deadlines.watch(server, 5.0):
                time.sleep(0.001)
        assert woken == 0
        time.sleep(0.3)  # a look or two later
        with deadlines._cond:
            assert deadlines._heap == []
        # A shorter deadline than the next look still wakes it, and is enforced.
        with deadlines.watch(server, 0.05) as watch:
            assert server.recv(10) == b""
        assert watch.expired
        assert woken == 1
