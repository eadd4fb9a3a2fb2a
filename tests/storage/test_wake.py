"""Wake-ups: a datagram (SQLite) or a NOTIFY (PostgreSQL) reaches an idle worker."""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from webhooks.storage.db import create_db_engine
from webhooks.storage.wake import MAX_SOCKET_PATH, SocketListener, Waker, socket_dir
from webhooks.storage.wake import listener as listener_for


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A directory whose sockets fit sockaddr_un (pytest's tmp_path nearly does not)."""
    path = Path(tempfile.mkdtemp(prefix="wk", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.mark.parametrize("depth", [0, 4], ids=["short-path", "path-too-long-for-a-socket"])
def test_a_stored_delivery_wakes_the_listening_worker(short_dir: Path, depth: int) -> None:
    folder = short_dir.joinpath(*["a-rather-long-directory-name"] * depth)
    folder.mkdir(parents=True, exist_ok=True)
    engine = create_db_engine(f"sqlite:///{folder / 'inbox.db'}")
    directory = socket_dir(engine)
    assert directory is not None
    listener = SocketListener(directory)
    try:
        assert (len(str(listener.path)) > MAX_SOCKET_PATH) is (depth > 0)
        assert listener.wait(0.05) is False  # nothing stored yet
        Waker(engine).wake()
        assert listener.wait(5) is True
        listener.interrupt()  # stop still ends a wait at once
        assert listener.wait(5) is True
    finally:
        listener.close()
        engine.dispose()
    assert list(directory.glob("*.sock")) == []  # a closed worker is no longer listed


def test_a_wake_up_sent_before_the_first_wait_is_not_lost(database_url: str) -> None:
    """The worker listens before its first look at the inbox: a delivery stored between
    that look and its first wait still wakes it, instead of waiting for the poll."""
    engine = create_db_engine(database_url)
    listener = listener_for(engine)
    assert listener is not None
    try:
        listener.listen()
        Waker(engine).wake()  # stored after the first (empty) look, before the wait
        started = time.monotonic()
        assert listener.wait(5) is True
        assert time.monotonic() - started < 1
    finally:
        listener.close()
        engine.dispose()


def test_the_inbox_and_outbox_topics_wake_only_their_own_listeners(database_url: str) -> None:
    """Web processes wake the mapping workers (inbox); a worker that only maps wakes the
    workers that only send (outbox): neither wakes the other's listeners."""
    from webhooks.storage.wake import INBOX, OUTBOX

    engine = create_db_engine(database_url)
    mappers, senders = listener_for(engine, INBOX), listener_for(engine, OUTBOX)
    assert mappers is not None
    assert senders is not None
    try:
        mappers.listen()
        senders.listen()
        Waker(engine, OUTBOX).wake()
        assert senders.wait(5) is True
        assert mappers.wait(0.3) is False
        Waker(engine, INBOX).wake()
        assert mappers.wait(5) is True
        assert senders.wait(0.3) is False
    finally:
        mappers.close()
        senders.close()
        engine.dispose()
