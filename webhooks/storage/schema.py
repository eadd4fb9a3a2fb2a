"""Table definitions (SQLAlchemy Core), shared by the code and the Alembic migrations."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect

metadata = sa.MetaData()

# 64-bit ids on PostgreSQL; SQLite only auto-increments a column typed exactly INTEGER.
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


class UTCDateTime(sa.TypeDecorator[datetime]):
    """Aware UTC datetimes in and out, on SQLite (which has no time zones) and PostgreSQL."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class InboxState:
    """Processing states of an inbox row; "seen" is the row existing at all."""

    PENDING = "pending"
    DONE = "done"
    FAILED = "failed"
    DEAD = "dead"
    ALL = (PENDING, DONE, FAILED, DEAD)


inbox = sa.Table(
    "inbox",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("provider", sa.String(32), nullable=False),
    # Stripe: the connected account or "platform"; Shopify: the shop domain.
    sa.Column("account", sa.String(255), nullable=False),
    # Stripe event type or Shopify topic.
    sa.Column("event_type", sa.String(255), nullable=False),
    # Stripe event id; Shopify X-Shopify-Webhook-Id, else X-Shopify-Event-Id.
    sa.Column("delivery_id", sa.String(255), nullable=False),
    sa.Column("event_id", sa.String(255), nullable=True),
    sa.Column("api_version", sa.String(64), nullable=True),
    sa.Column("headers", sa.JSON(), nullable=False),
    # The body exactly as received: the signature covers these bytes, and mappers and
    # replays parse them again rather than trusting a re-serialised copy.
    sa.Column("body", sa.LargeBinary(), nullable=False),
    sa.Column("received_at", UTCDateTime(), nullable=False),
    sa.Column("occurred_at", UTCDateTime(), nullable=True),
    sa.Column("state", sa.String(16), nullable=False, server_default=InboxState.PENDING),
    sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
    sa.Column("last_error", sa.Text(), nullable=True),
    sa.Column("processed_at", UTCDateTime(), nullable=True),
    # The worker's claim: a lease, so rows of a worker that died are taken over.
    sa.Column("lease_owner", sa.String(64), nullable=True),
    sa.Column("lease_until", UTCDateTime(), nullable=True),
    # 0 = live webhook traffic, 1 = backfill and replay: live always goes first.
    sa.Column("lane", sa.SmallInteger(), nullable=False, server_default="0"),
    # The exact dedup key. Including event_type is equivalent to Stripe's
    # (provider, account, event.id), since an event id has one type, and is exactly
    # Shopify's (provider, shop, topic, webhook id).
    sa.UniqueConstraint(
        "provider", "account", "event_type", "delivery_id", name="uq_inbox_delivery"
    ),
    sa.CheckConstraint("state IN ('pending', 'done', 'failed', 'dead')", name="ck_inbox_state"),
)
# The worker claims pending rows by lane, then id. No index on received_at: every index is
# paid for on the ingest path, and ids grow with arrival time, so time ranges can be
# found through the primary key.
sa.Index("ix_inbox_state_lane_id", inbox.c.state, inbox.c.lane, inbox.c.id)


class OutboxState:
    """Delivery states of an outbox operation."""

    PENDING = "pending"
    DELIVERED = "delivered"
    DRY_RUN = "dry_run"  # recorded, not sent: no Customer.io credentials configured
    DEAD = "dead"
    ALL = (PENDING, DELIVERED, DRY_RUN, DEAD)


LANE_LIVE = 0
LANE_BACKFILL = 1

outbox = sa.Table(
    "outbox",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    # One row per business fact: the semantic key of a Track, or a derived key for
    # identify and privacy operations. Overlapping webhooks, retries and replays that
    # produce the same fact hit this unique key and add nothing.
    sa.Column("op_key", sa.String(512), nullable=False, unique=True),
    # Deterministic ULID from op_key: the `id` Customer.io deduplicates events by.
    sa.Column("op_id", sa.String(26), nullable=False),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("person_id", sa.String(255), nullable=True),
    # The request body item exactly as it will be sent.
    sa.Column("payload", sa.JSON(), nullable=False),
    sa.Column("occurred_at", UTCDateTime(), nullable=False),
    sa.Column("lane", sa.SmallInteger(), nullable=False, server_default="0"),
    sa.Column("inbox_id", BigId, nullable=True),
    sa.Column("state", sa.String(16), nullable=False, server_default=OutboxState.PENDING),
    sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
    sa.Column("next_attempt_at", UTCDateTime(), nullable=False),
    sa.Column("lease_owner", sa.String(64), nullable=True),
    sa.Column("lease_until", UTCDateTime(), nullable=True),
    # Send alone rather than in a batch (after a batch was refused as a whole).
    sa.Column("solo", sa.Boolean(), nullable=False, server_default=sa.false()),
    sa.Column("last_status", sa.Integer(), nullable=True),
    sa.Column("last_error", sa.Text(), nullable=True),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("delivered_at", UTCDateTime(), nullable=True),
    sa.CheckConstraint(
        "state IN (" + ", ".join(f"'{state}'" for state in OutboxState.ALL) + ")",
        name="ck_outbox_state",
    ),
)
# Claims scan due rows in delivery order (lane, event time, id).
sa.Index("ix_outbox_due", outbox.c.state, outbox.c.lane, outbox.c.occurred_at, outbox.c.id)
