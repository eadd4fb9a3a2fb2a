"""Create the inbox: one row per verified delivery, unique on the exact dedup key.

Revision ID: 0001_inbox
Revises:
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from webhooks.storage.schema import BigId, UTCDateTime

revision = "0001_inbox"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create the inbox table and its indexes."""
    op.create_table(
        "inbox",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("provider", sa.String(32), nullable=False),
        sa.Column("account", sa.String(255), nullable=False),
        sa.Column("event_type", sa.String(255), nullable=False),
        sa.Column("delivery_id", sa.String(255), nullable=False),
        sa.Column("event_id", sa.String(255), nullable=True),
        sa.Column("api_version", sa.String(64), nullable=True),
        sa.Column("headers", sa.JSON(), nullable=False),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        sa.Column("received_at", UTCDateTime(), nullable=False),
        sa.Column("occurred_at", UTCDateTime(), nullable=True),
        sa.Column("state", sa.String(16), nullable=False, server_default="pending"),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("processed_at", UTCDateTime(), nullable=True),
        sa.UniqueConstraint(
            "provider", "account", "event_type", "delivery_id", name="uq_inbox_delivery"
        ),
        sa.CheckConstraint("state IN ('pending', 'done', 'failed', 'dead')", name="ck_inbox_state"),
    )
    op.create_index("ix_inbox_state_id", "inbox", ["state", "id"])


def downgrade() -> None:
    """Drop the inbox."""
    op.drop_index("ix_inbox_state_id", table_name="inbox")
    op.drop_table("inbox")
