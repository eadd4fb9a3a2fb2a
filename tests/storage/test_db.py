"""Engines as the settings size them: each process's PostgreSQL pool (docs/scaling.md)."""

from __future__ import annotations

import threading

import sqlalchemy as sa

from tests.conftest import make_settings
from webhooks.app import create_app
from webhooks.storage.db import create_db_engine


def test_pool_settings_size_every_process_engine(postgres_url: str) -> None:
    settings = make_settings(postgres_url, database_pool_size=3, database_max_overflow=1)
    assert settings.engine_options() == {"timeout": 2.0, "pool_size": 3, "max_overflow": 1}
    worker_engine = create_db_engine(settings.database_url, **settings.engine_options())
    app = create_app(settings)
    web_engine = app.extensions["webhooks.engine"]
    try:
        for engine in (worker_engine, web_engine):
            assert engine.pool.size() == 3
            assert engine.pool._max_overflow == 1  # type: ignore[attr-defined]
    finally:
        worker_engine.dispose()
        web_engine.dispose()


def test_a_steady_load_above_the_old_pool_opens_no_new_backends(postgres_url: str) -> None:
    """Eight threads storing at once, 40 times each: the default pool opens a connection
    per thread once and keeps it. (5 kept and 10 overflow opened a backend every few
    checkouts: each overflow connection closed when returned.)"""
    settings = make_settings(postgres_url)
    engine = create_db_engine(settings.database_url, **settings.engine_options())
    opened = 0
    lock = threading.Lock()

    @sa.event.listens_for(engine, "connect")
    def _count(*_: object) -> None:
        nonlocal opened
        with lock:
            opened += 1

    start = threading.Barrier(8)

    def store() -> None:
        start.wait()
        for _ in range(40):
            with engine.connect() as conn:
                conn.execute(sa.select(sa.func.pg_sleep(0.002)))

    try:
        threads = [threading.Thread(target=store) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert 1 <= opened <= 8
        assert engine.pool.checkedin() == opened  # type: ignore[attr-defined]
    finally:
        engine.dispose()
