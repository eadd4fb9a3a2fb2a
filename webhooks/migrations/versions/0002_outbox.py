"""Leases and lanes on the inbox; the outbox of Customer.io operations.

Revision ID: 0002_outbox
Revises: 0001_inbox
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from webhooks.storage.schema import BigId, UTCDateTime

revision = "0002_outbox"
down_revision = "0001_inbox"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add inbox leases and lanes; create the outbox."""
    with op.batch_alter_table("inbox") as batch:
        batch.add_column(sa.Column("lease_owner", sa.String(64), nullable=True))
        batch.add_column(sa.Column("lease_until", UTCDateTime(), nullable=True))
        batch.add_column(sa.Column("lane", sa.SmallInteger(), nullable=False, server_default="0"))
    # Claims order by lane, then id: an index in that order spares sorting the backlog.
    op.drop_index("ix_inbox_state_id", table_name="inbox")
    op.create_index("ix_inbox_state_lane_id", "inbox", ["state", "lane", "id"])
    op.create_table(
        "outbox",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("op_key", sa.String(512), nullable=False, unique=True),
        sa.Column("op_id", sa.String(26), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("person_id", sa.String(255), nullable=True),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("occurred_at", UTCDateTime(), nullable=False),
        sa.Column("lane", sa.SmallInteger(), nullable=False, server_default="0"),
        sa.Column("inbox_id", BigId, nullable=True),
        sa.Column("state", sa.String(16), nullable=False, server_default="pending"),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("next_attempt_at", UTCDateTime(), nullable=False),
        sa.Column("lease_owner", sa.String(64), nullable=True),
        sa.Column("lease_until", UTCDateTime(), nullable=True),
        sa.Column("solo", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("last_status", sa.Integer(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("delivered_at", UTCDateTime(), nullable=True),
        sa.CheckConstraint(
            "state IN ('pending', 'delivered', 'dry_run', 'dead')", name="ck_outbox_state"
        ),
    )
    op.create_index("ix_outbox_due", "outbox", ["state", "lane", "occurred_at", "id"])


def downgrade() -> None:
    """Drop the outbox and the inbox's lease columns."""
    op.drop_index("ix_outbox_due", table_name="outbox")
    op.drop_table("outbox")
    op.drop_index("ix_inbox_state_lane_id", table_name="inbox")
    op.create_index("ix_inbox_state_id", "inbox", ["state", "id"])
    with op.batch_alter_table("inbox") as batch:
        batch.drop_column("lane")
        batch.drop_column("lease_until")
        batch.drop_column("lease_owner")
