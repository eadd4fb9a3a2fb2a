"""Worker heartbeats: each delivery worker's last sign of life.

Revision ID: 0007_worker_heartbeats
Revises: 0006_erasures
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from webhooks.storage.schema import UTCDateTime

revision = "0007_worker_heartbeats"
down_revision = "0006_erasures"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add the worker_heartbeats table."""
    op.create_table(
        "worker_heartbeats",
        sa.Column("owner", sa.String(128), primary_key=True),
        sa.Column("started_at", UTCDateTime(), nullable=False),
        sa.Column("beat_at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_worker_heartbeats_beat", "worker_heartbeats", ["beat_at"])


def downgrade() -> None:
    """Drop the worker_heartbeats table."""
    op.drop_index("ix_worker_heartbeats_beat", table_name="worker_heartbeats")
    op.drop_table("worker_heartbeats")
