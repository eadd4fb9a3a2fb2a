"""Erasures remembered as keyed digests, and the key they are made with.

Revision ID: 0006_erasures
Revises: 0005_order_refunds
Create Date: 2026-11-30
"""

from __future__ import annotations

import secrets

import sqlalchemy as sa
from alembic import op

from webhooks.storage.schema import UTCDateTime

revision = "0006_erasures"
down_revision = "0005_order_refunds"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add the erasures and service_keys tables, and a random erasure key."""
    op.create_table(
        "erasures",
        sa.Column("digest", sa.String(64), primary_key=True),
        sa.Column("erased_at", sa.BigInteger(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_erasures_expires", "erasures", ["expires_at"])
    keys = op.create_table(
        "service_keys",
        sa.Column("name", sa.String(32), primary_key=True),
        sa.Column("value", sa.String(128), nullable=False),
    )
    # One per database: digests made with it mean nothing without it.
    op.bulk_insert(keys, [{"name": "erasure", "value": secrets.token_hex(32)}])


def downgrade() -> None:
    """Drop the erasures and service_keys tables."""
    op.drop_table("service_keys")
    op.drop_index("ix_erasures_expires", table_name="erasures")
    op.drop_table("erasures")
