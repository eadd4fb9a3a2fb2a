"""Data requests: every customers/data_request kept until it is answered.

Revision ID: 0004_data_requests
Revises: 0003_identity_state
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from webhooks.storage.schema import UTCDateTime

revision = "0004_data_requests"
down_revision = "0003_identity_state"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add the data_requests table."""
    op.create_table(
        "data_requests",
        sa.Column("request_key", sa.String(512), primary_key=True),
        sa.Column("provider", sa.String(32), nullable=False),
        sa.Column("account", sa.String(255), nullable=False),
        sa.Column("request_id", sa.String(255), nullable=True),
        sa.Column("person_id", sa.String(255), nullable=True),
        sa.Column("order_ids", sa.JSON(), nullable=False),
        sa.Column("requested_at", UTCDateTime(), nullable=False),
        sa.Column("answered_at", UTCDateTime(), nullable=True),
    )


def downgrade() -> None:
    """Drop the data_requests table."""
    op.drop_table("data_requests")
