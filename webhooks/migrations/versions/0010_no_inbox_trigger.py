"""Drop the inbox NOTIFY trigger of 0009: the web processes wake the workers instead.

A transaction that NOTIFYs holds a cluster-wide lock from before its commit record is
flushed until it ends, so a trigger on every inbox insert made every ingest commit wait
for the others, one disk flush at a time. The web processes now send the NOTIFY
themselves, in a statement of its own and at most every 20 ms each
(webhooks/storage/wake.py).

Revision ID: 0010_no_inbox_trigger
Revises: 0009_inbox_notify
Create Date: 2026-11-30
"""

from __future__ import annotations

from alembic import op

revision = "0010_no_inbox_trigger"
down_revision = "0009_inbox_notify"
branch_labels = None
depends_on = None

# Frozen copies of 0009's statements: a migration must not change when another does.
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
    op.execute("DROP TRIGGER IF EXISTS inbox_notify ON inbox")
    op.execute("DROP FUNCTION IF EXISTS webhooks_inbox_notify()")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(FUNCTION)
    op.execute(TRIGGER)
