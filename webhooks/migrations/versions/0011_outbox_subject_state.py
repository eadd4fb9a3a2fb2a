"""Index the outbox by (subject, state), not subject alone.

Stage 1 withholds the queued cart events of every checkout a batch completed in one
`UPDATE outbox ... WHERE subject IN (...) AND state IN (...)`. With only (subject) to
go by, SQLite's planner took ix_outbox_due's leading state column instead and read
every pending operation on each batch: a cost that grew with the outbox backlog (a
Customer.io outage) and was 3.5 % of stage 1 with 10,000 operations queued. An index
on both terms is the one it chooses.

Revision ID: 0011_outbox_subject_state
Revises: 0010_no_inbox_trigger
Create Date: 2026-12-01
"""

from __future__ import annotations

from alembic import op

revision = "0011_outbox_subject_state"
down_revision = "0010_no_inbox_trigger"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_outbox_subject_state", "outbox", ["subject", "state"])
    op.drop_index("ix_outbox_subject", table_name="outbox")


def downgrade() -> None:
    op.create_index("ix_outbox_subject", "outbox", ["subject"])
    op.drop_index("ix_outbox_subject_state", table_name="outbox")
