"""Engines as the settings size them: each process's PostgreSQL pool (docs/scaling.md)."""

from __future__ import annotations

from pathlib import Path

import pytest

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


def test_a_worker_transaction_holds_the_writer_turn_from_its_first_write_to_its_end(
    tmp_path: Path,
) -> None:
    """SQLite: the worker's writes queue on the host's writer turn with the web
    processes' inserts (immediate hand-over, no busy-handler sleeps); its reads take no
    turn, so mapping computes while ingest writes."""
    import sqlalchemy as sa

    from webhooks.storage import migrate, writer
    from webhooks.storage.schema import state_epoch

    path = tmp_path / "inbox.db"
    engine = create_db_engine(f"sqlite:///{path}", timeout=0.3, write_turns=True)
    migrate.upgrade(engine)

    def free() -> bool:
        try:
            with writer.turn(str(path), 0.0):
                return True
        except TimeoutError:
            return False

    assert free()
    for end in ("commit", "rollback"):
        with engine.connect() as conn:
            conn.execute(sa.select(state_epoch)).all()
            assert free()  # a read takes no turn
            conn.execute(sa.insert(state_epoch).prefix_with("OR REPLACE"), {"id": 1, "epoch": 1})
            assert not free()  # held from the first write...
            getattr(conn, end)()
            assert free()  # ...to the end of the transaction
    # The turn held elsewhere past the timeout: the write fails as a busy database
    # does (a transient error every caller handles), never hangs.
    with (
        writer.turn(str(path), 1.0),
        engine.connect() as conn,
        pytest.raises(sa.exc.OperationalError, match="database is locked"),
    ):
        conn.execute(sa.update(state_epoch).values(epoch=2))
    engine.dispose()
