"""Operating it: workers' delivery state, discarded rows, failed and purged times,
which secret verified a delivery and how often it was delivered again.

Revision ID: 0008_operating
Revises: 0007_worker_heartbeats
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from webhooks.storage.schema import UTCDateTime

revision = "0008_operating"
down_revision = "0007_worker_heartbeats"
branch_labels = None
depends_on = None

# Frozen here: a migration must not change when the code's state lists do.
INBOX_BEFORE = "state IN ('pending', 'done', 'failed', 'dead', 'waiting')"
OUTBOX_BEFORE = "state IN ('pending', 'delivered', 'dry_run', 'dead', 'suppressed')"
INBOX_AFTER = "state IN ('pending', 'done', 'failed', 'dead', 'waiting', 'discarded')"
OUTBOX_AFTER = "state IN ('pending', 'delivered', 'dry_run', 'dead', 'suppressed', 'discarded')"


def _states(inbox: str, outbox: str, *, columns: bool) -> None:
    with op.batch_alter_table("inbox") as batch:
        if columns:
            batch.add_column(sa.Column("secret_index", sa.SmallInteger(), nullable=True))
            batch.add_column(
                sa.Column("duplicates", sa.Integer(), nullable=False, server_default="0")
            )
        else:
            batch.drop_column("duplicates")
            batch.drop_column("secret_index")
        batch.drop_constraint("ck_inbox_state", type_="check")
        batch.create_check_constraint("ck_inbox_state", sa.text(inbox))
    with op.batch_alter_table("outbox") as batch:
        batch.drop_constraint("ck_outbox_state", type_="check")
        batch.create_check_constraint("ck_outbox_state", sa.text(outbox))


def upgrade() -> None:
    """Add the discarded states, the heartbeat's delivery state, outbox.failed_at."""
    _states(INBOX_AFTER, OUTBOX_AFTER, columns=True)
    with op.batch_alter_table("outbox") as batch:
        batch.add_column(sa.Column("failed_at", UTCDateTime(), nullable=True))
        batch.add_column(sa.Column("purged_at", UTCDateTime(), nullable=True))
    with op.batch_alter_table("worker_heartbeats") as batch:
        batch.add_column(sa.Column("delivery", sa.String(32), nullable=True))


def downgrade() -> None:
    """Discarded rows become dead letters again; the delivery state goes."""
    op.execute("UPDATE inbox SET state = 'dead' WHERE state = 'discarded'")
    op.execute("UPDATE outbox SET state = 'dead' WHERE state = 'discarded'")
    _states(INBOX_BEFORE, OUTBOX_BEFORE, columns=False)
    with op.batch_alter_table("outbox") as batch:
        batch.drop_column("purged_at")
        batch.drop_column("failed_at")
    with op.batch_alter_table("worker_heartbeats") as batch:
        batch.drop_column("delivery")
