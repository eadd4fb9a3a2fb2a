"""Identity links, person state, journey guards and Stripe enrichment.

Revision ID: 0003_identity_state
Revises: 0002_outbox
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from webhooks.storage.schema import BigId, UTCDateTime

revision = "0003_identity_state"
down_revision = "0002_outbox"
branch_labels = None
depends_on = None

# Frozen here: a migration must not change when the code's state lists do.
INBOX_STATES = "state IN ('pending', 'done', 'failed', 'dead', 'waiting')"
OUTBOX_STATES = "state IN ('pending', 'delivered', 'dry_run', 'dead', 'suppressed')"


def upgrade() -> None:
    """Add the waiting and suppressed states, enrichment, and the state tables."""
    with op.batch_alter_table("inbox") as batch:
        batch.add_column(sa.Column("enrichment", sa.JSON(), nullable=True))
        batch.drop_constraint("ck_inbox_state", type_="check")
        batch.create_check_constraint("ck_inbox_state", sa.text(INBOX_STATES))
    with op.batch_alter_table("outbox") as batch:
        batch.add_column(sa.Column("subject", sa.String(512), nullable=True))
        batch.drop_constraint("ck_outbox_state", type_="check")
        batch.create_check_constraint("ck_outbox_state", sa.text(OUTBOX_STATES))
    op.create_index("ix_outbox_person", "outbox", ["person_id"])
    op.create_index("ix_outbox_subject", "outbox", ["subject"])
    op.create_table(
        "inbox_waits",
        sa.Column("key", sa.String(512), primary_key=True),
        sa.Column("inbox_id", BigId, primary_key=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
    )
    op.create_table(
        "identity_links",
        sa.Column("key", sa.String(512), primary_key=True),
        sa.Column("person_id", sa.String(255), nullable=False),
        sa.Column("rank", sa.SmallInteger(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_identity_links_person", "identity_links", ["person_id"])
    op.create_table(
        "person_state",
        sa.Column("person_id", sa.String(255), primary_key=True),
        sa.Column("attributes", sa.JSON(), nullable=False),
        sa.Column("watermark", sa.BigInteger(), nullable=False),
        sa.Column("sent_hash", sa.String(64), nullable=True),
        sa.Column("order_count", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("first_order_at", sa.BigInteger(), nullable=True),
        sa.Column("last_order_at", sa.BigInteger(), nullable=True),
        sa.Column("lifetime_value", sa.String(40), nullable=False, server_default="0"),
        sa.Column("value_currency", sa.String(3), nullable=True),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
    )
    op.create_table(
        "person_facts",
        sa.Column("fact_key", sa.String(512), primary_key=True),
        sa.Column("person_id", sa.String(255), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("amount", sa.String(40), nullable=True),
        sa.Column("currency", sa.String(3), nullable=True),
        sa.Column("status", sa.String(32), nullable=True),
        sa.Column("first_at", sa.BigInteger(), nullable=False),
        sa.Column("watermark", sa.BigInteger(), nullable=False),
        sa.CheckConstraint(
            "kind IN ('order', 'refund', 'subscription')", name="ck_person_facts_kind"
        ),
    )
    op.create_index("ix_person_facts_person", "person_facts", ["person_id"])
    op.create_table(
        "state_epoch",
        sa.Column("id", sa.SmallInteger(), primary_key=True, autoincrement=False),
        sa.Column("epoch", sa.BigInteger(), nullable=False),
    )
    op.create_table(
        "checkouts",
        sa.Column("checkout_key", sa.String(512), primary_key=True),
        sa.Column("started_hash", sa.String(64), nullable=True),
        sa.Column("completed_at", sa.BigInteger(), nullable=True),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
    )


def downgrade() -> None:
    """Drop the state tables and the new columns and states."""
    op.drop_table("checkouts")
    op.drop_table("state_epoch")
    op.drop_index("ix_person_facts_person", table_name="person_facts")
    op.drop_table("person_facts")
    op.drop_table("person_state")
    op.drop_index("ix_identity_links_person", table_name="identity_links")
    op.drop_table("identity_links")
    op.drop_table("inbox_waits")
    op.drop_index("ix_outbox_subject", table_name="outbox")
    op.drop_index("ix_outbox_person", table_name="outbox")
    with op.batch_alter_table("outbox") as batch:
        batch.drop_constraint("ck_outbox_state", type_="check")
        batch.create_check_constraint(
            "ck_outbox_state", sa.text("state IN ('pending', 'delivered', 'dry_run', 'dead')")
        )
        batch.drop_column("subject")
    with op.batch_alter_table("inbox") as batch:
        batch.drop_constraint("ck_inbox_state", type_="check")
        batch.create_check_constraint(
            "ck_inbox_state", sa.text("state IN ('pending', 'done', 'failed', 'dead')")
        )
        batch.drop_column("enrichment")
