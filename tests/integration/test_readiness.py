"""/readyz against the real server: what it reports after the database drops a connection."""

from __future__ import annotations

from pathlib import Path

import httpx
import sqlalchemy as sa

from tests.conftest import STRIPE_SECRET
from tests.integration.service import serve, service_env, upgrade
from webhooks.storage.db import create_db_engine


def test_readyz_rides_out_a_dropped_database_connection(postgres_url: str, tmp_path: Path) -> None:
    """PostgreSQL drops the service's pooled connection (a restart, a failover): the
    next probe reconnects and answers ready, as ingest does, instead of a 503."""
    env = service_env(postgres_url, STRIPE_WEBHOOK_SECRET=STRIPE_SECRET)
    upgrade(env)
    with serve(env, tmp_path, workers=1) as base:
        assert httpx.get(f"{base}/readyz", timeout=5).status_code == 200  # pools one
        admin = create_db_engine(postgres_url)
        try:
            with admin.connect() as conn:
                killed = conn.execute(
                    sa.text(
                        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                        " WHERE pid <> pg_backend_pid() AND datname = current_database()"
                        " AND state = 'idle' AND backend_type = 'client backend'"
                    )
                ).scalar_one()
        finally:
            admin.dispose()
        assert killed >= 1
        answer = httpx.get(f"{base}/readyz", timeout=5)
        assert (answer.status_code, answer.json()["status"]) == (200, "ok")
