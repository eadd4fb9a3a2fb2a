"""Refunds linked to their orders, and orders' other names (aliases).

Revision ID: 0005_order_refunds
Revises: 0004_data_requests
Create Date: 2026-11-30

Every person's totals are counted again from their facts at their next event (the
stored value would mix the old rule, all refunds subtracted, with the new one).
Refunds stored before this revision name no order, so from then on they subtract
nothing, like a refund of an order the service never saw.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_order_refunds"
down_revision = "0004_data_requests"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add person_facts.parent_key and the order_aliases table."""
    with op.batch_alter_table("person_facts") as batch:
        batch.add_column(sa.Column("parent_key", sa.String(512), nullable=True))
    op.create_index("ix_person_facts_parent", "person_facts", ["parent_key"])
    op.create_table(
        "order_aliases",
        sa.Column("alias_key", sa.String(512), primary_key=True),
        sa.Column("order_key", sa.String(512), nullable=False),
    )
    op.create_index("ix_order_aliases_order", "order_aliases", ["order_key"])
    # A currency no totals are kept in: Ledger.refresh counts them again when next used.
    op.execute("UPDATE person_state SET value_currency = NULL")


def downgrade() -> None:
    """Drop the order_aliases table and person_facts.parent_key."""
    op.drop_index("ix_order_aliases_order", table_name="order_aliases")
    op.drop_table("order_aliases")
    op.drop_index("ix_person_facts_parent", table_name="person_facts")
    with op.batch_alter_table("person_facts") as batch:
        batch.drop_column("parent_key")
