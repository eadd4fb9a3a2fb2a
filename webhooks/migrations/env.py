"""Alembic environment: runs on the URL or connection handed over by webhooks.storage.migrate."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context

from webhooks.storage.schema import metadata

config = context.config


def _run(connection: sa.Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        # SQLite cannot ALTER most things in place; batch mode copies the table.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    """Migrate over a given connection, or a short-lived engine on sqlalchemy.url."""
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    url = config.get_main_option("sqlalchemy.url")
    if url is None:
        raise RuntimeError(
            "alembic needs a connection or sqlalchemy.url (webhooks.storage.migrate)"
        )
    engine = sa.create_engine(url, poolclass=sa.NullPool)
    with engine.connect() as conn:
        _run(conn)
    engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline SQL generation is not supported; run `webhooks db upgrade`")
run_migrations_online()
