"""Wake idle workers: a statement trigger on the inbox NOTIFYs them (PostgreSQL only).

Every insert into the inbox, by ingest, a backfill or a replay, notifies the channel
`webhooks_inbox:<schema>` once per statement; workers LISTEN on it
(webhooks/storage/wake.py) and map at once instead of waiting out their poll. SQLite
has no NOTIFY: its web processes send the wake-up themselves.

Revision ID: 0009_inbox_notify
Revises: 0008_operating
Create Date: 2026-11-30
"""

from __future__ import annotations

from alembic import op

revision = "0009_inbox_notify"
down_revision = "0008_operating"
branch_labels = None
depends_on = None

FUNCTION = """
CREATE OR REPLACE FUNCTION webhooks_inbox_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('webhooks_inbox:' || TG_TABLE_SCHEMA, '');
    RETURN NULL;
END
$$
"""
TRIGGER = """
CREATE TRIGGER inbox_notify AFTER INSERT ON inbox
FOR EACH STATEMENT EXECUTE FUNCTION webhooks_inbox_notify()
"""


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(FUNCTION)
    op.execute(TRIGGER)


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("DROP TRIGGER IF EXISTS inbox_notify ON inbox")
    op.execute("DROP FUNCTION IF EXISTS webhooks_inbox_notify()")
