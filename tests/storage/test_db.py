"""Engines as the settings size them: each process's PostgreSQL pool (docs/scaling.md)."""

from __future__ import annotations

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
