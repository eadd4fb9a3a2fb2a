"""Table definitions (SQLAlchemy Core), shared by the code and the Alembic migrations."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from enum import IntEnum, StrEnum
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
        value = value if value.tzinfo is UTC else value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)

    # On SQLite the text is written and read here in one step, in SQLite's DATETIME
    # format (what SQLAlchemy's own processors write: "2026-12-01 05:26:50.000000"). Its
    # processors format and parse in Python, a tenth of stage 1's statements' time: the
    # outbox alone binds three datetimes a row.
    def bind_processor(self, dialect: Dialect) -> Callable[[Any], Any] | None:
        if dialect.name != "sqlite":
            return super().bind_processor(dialect)

        def process(value: datetime | None) -> str | None:
            naive = self.process_bind_param(value, dialect)
            return None if naive is None else naive.isoformat(" ", "microseconds")

        return process

    def result_processor(self, dialect: Dialect, coltype: Any) -> Callable[[Any], Any] | None:
        if dialect.name != "sqlite":
            return super().result_processor(dialect, coltype)

        def process(value: str | None) -> datetime | None:
            parsed = None if value is None else datetime.fromisoformat(value)
            return self.process_result_value(parsed, dialect)

        return process


class Lane(IntEnum):
    """Which queue a delivery (and what it produced) waits in; lower goes first."""

    LIVE = 0  # webhooks as they arrive
    REPLAY = 1  # `webhooks replay`: stored webhooks mapped again after a fix
    BACKFILL = 2  # `webhooks backfill`: facts older than BACKFILL_LIVE_WINDOW are history
    HISTORY = 3  # `webhooks backfill --attributes-only`: person state only, no events


class InboxState(StrEnum):
    """Processing states of an inbox row; "seen" is the row existing at all."""

    PENDING = "pending"
    DONE = "done"
    FAILED = "failed"
    DEAD = "dead"
    # Names someone only by a key no event has linked to a person yet (a refund naming
    # only its order): woken when a later event links that key (see `inbox_waits`).
    WAITING = "waiting"
    # An operator gave up on a dead letter (`webhooks dead-letters discard`): kept,
    # so its delivery key still deduplicates a provider's retry.
    DISCARDED = "discarded"


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
    # Lane: live webhook traffic always goes first, then replays, then backfills.
    sa.Column("lane", sa.SmallInteger(), nullable=False, server_default="0"),
    # Data the worker fetched for this delivery (Stripe line items, customer metadata),
    # kept so a replay maps exactly the same data without calling the provider again.
    sa.Column("enrichment", sa.JSON(), nullable=True),
    # Which configured signing secret verified it (0: the first), for rotations.
    sa.Column("secret_index", sa.SmallInteger(), nullable=True),
    # How many more times the provider delivered it (retries, overlapping subscriptions).
    sa.Column("duplicates", sa.Integer(), nullable=False, server_default="0"),
    # The exact dedup key. Including event_type is equivalent to Stripe's
    # (provider, account, event.id), since an event id has one type, and is exactly
    # Shopify's (provider, shop, topic, webhook id).
    sa.UniqueConstraint(
        "provider", "account", "event_type", "delivery_id", name="uq_inbox_delivery"
    ),
    sa.CheckConstraint(
        "state IN (" + ", ".join(f"'{state}'" for state in InboxState) + ")",
        name="ck_inbox_state",
    ),
)
# The worker claims pending rows by lane, then id. No index on received_at: every index is
# paid for on the ingest path, and ids grow with arrival time, so time ranges can be
# found through the primary key.
sa.Index("ix_inbox_state_lane_id", inbox.c.state, inbox.c.lane, inbox.c.id)


class OutboxState(StrEnum):
    """Delivery states of an outbox operation."""

    PENDING = "pending"
    DELIVERED = "delivered"
    DRY_RUN = "dry_run"  # recorded, not sent: no Customer.io credentials configured
    DEAD = "dead"
    # Withheld on purpose by a journey guard (a cart update after the order); final.
    SUPPRESSED = "suppressed"
    # An operator gave up on a dead letter; kept, so the fact is not queued again.
    DISCARDED = "discarded"


# Longer operation keys are bounded to the column (core.hashing.bounded).
MAX_OP_KEY = 512

outbox = sa.Table(
    "outbox",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    # One row per business fact: the semantic key of a Track, or a derived key for
    # identify and privacy operations. Overlapping webhooks, retries and replays that
    # produce the same fact hit this unique key and add nothing.
    sa.Column("op_key", sa.String(MAX_OP_KEY), nullable=False, unique=True),
    # Deterministic ULID from op_key: the `id` Customer.io deduplicates events by.
    sa.Column("op_id", sa.String(26), nullable=False),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("person_id", sa.String(255), nullable=True),
    # The request body item exactly as it will be sent.
    sa.Column("payload", sa.JSON(), nullable=False),
    sa.Column("occurred_at", UTCDateTime(), nullable=False),
    sa.Column("lane", sa.SmallInteger(), nullable=False, server_default="0"),
    sa.Column("inbox_id", BigId, nullable=True),
    # The checkout a cart event is about, so the order completing it can suppress it.
    sa.Column("subject", sa.String(512), nullable=True),
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
    # When a send of it last failed (`webhooks status` counts the last hour's).
    sa.Column("failed_at", UTCDateTime(), nullable=True),
    # When `webhooks purge` replaced its payload (personal data) after the retention.
    sa.Column("purged_at", UTCDateTime(), nullable=True),
    sa.CheckConstraint(
        "state IN (" + ", ".join(f"'{state}'" for state in OutboxState) + ")",
        name="ck_outbox_state",
    ),
)
# Claims scan due rows in delivery order (lane, event time, id).
sa.Index("ix_outbox_due", outbox.c.state, outbox.c.lane, outbox.c.occurred_at, outbox.c.id)
# A merge repoints, and a redaction purges, one person's queued operations.
sa.Index("ix_outbox_person", outbox.c.person_id)
# Cart events of a checkout, still queued (webhooks.stage1.state.queued): both terms, or
# SQLite reads every pending operation through ix_outbox_due instead.
sa.Index("ix_outbox_subject_state", outbox.c.subject, outbox.c.state)

# -- identity and person state (written by the worker's stage 1 only) ----------------

inbox_waits = sa.Table(
    "inbox_waits",
    metadata,
    # An identity key (see webhooks.stage1.state.keys) that a waiting inbox row needs linked.
    sa.Column("key", sa.String(512), primary_key=True),
    sa.Column("inbox_id", BigId, primary_key=True),
    sa.Column("created_at", UTCDateTime(), nullable=False),
)

identity_links = sa.Table(
    "identity_links",
    metadata,
    # "stripe:acct_1:customer:cus_9", "email:ann@example.com", "shopify:shop:order:42", ...
    sa.Column("key", sa.String(512), primary_key=True),
    sa.Column("person_id", sa.String(255), nullable=False),
    # How strong person_id is: 0 anonymous id, 1 email (guest policy), 2 provider
    # customer id, 3 the merchant's internal id. A stronger id takes weaker links over.
    sa.Column("rank", sa.SmallInteger(), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
)
sa.Index("ix_identity_links_person", identity_links.c.person_id)

person_state = sa.Table(
    "person_state",
    metadata,
    sa.Column("person_id", sa.String(255), primary_key=True),
    # {name: [value, event time]}: each attribute keeps the value of its newest report.
    sa.Column("attributes", sa.JSON(), nullable=False),
    # Newest event time of anything known about the person: the identify timestamp.
    sa.Column("watermark", sa.BigInteger(), nullable=False),
    # Hash of the attributes last queued for Customer.io: unchanged ones are not resent.
    sa.Column("sent_hash", sa.String(64), nullable=True),
    # Totals over the person's facts, kept as each fact arrives, so an event never needs
    # all of a person's orders loaded (webhooks.stage1.state.person.Totals).
    sa.Column("order_count", sa.Integer(), nullable=False, server_default="0"),
    sa.Column("first_order_at", sa.BigInteger(), nullable=True),
    sa.Column("last_order_at", sa.BigInteger(), nullable=True),
    sa.Column("lifetime_value", sa.String(40), nullable=False, server_default="0"),
    sa.Column("value_currency", sa.String(3), nullable=True),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
)

person_facts = sa.Table(
    "person_facts",
    metadata,
    # "order:shopify:shop:42", "refund:stripe:acct:re_1", "subscription:stripe:acct:sub_1"
    sa.Column("fact_key", sa.String(512), primary_key=True),
    sa.Column("person_id", sa.String(255), nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),
    # Exact decimal as text (no binary floats, same on both backends).
    sa.Column("amount", sa.String(40), nullable=True),
    sa.Column("currency", sa.String(3), nullable=True),
    sa.Column("status", sa.String(32), nullable=True),
    # Earliest event time reported for the fact (an order's date).
    sa.Column("first_at", sa.BigInteger(), nullable=False),
    # Event time of the report the amount/status came from: an older one never wins.
    sa.Column("watermark", sa.BigInteger(), nullable=False),
    # A refund's order, as the refund names it ("order:stripe:acct:pi_1"): the key of
    # an order, or one of its aliases. An order's value is its total less its refunds.
    sa.Column("parent_key", sa.String(512), nullable=True),
    sa.CheckConstraint("kind IN ('order', 'refund', 'subscription')", name="ck_person_facts_kind"),
)
sa.Index("ix_person_facts_person", person_facts.c.person_id)
sa.Index("ix_person_facts_parent", person_facts.c.parent_key)

# Other names of an order that refunds may use: a Stripe invoice's PaymentIntent
# ("order:stripe:acct:pi_1" -> "order:stripe:acct:in_1"). Learned from the order's own
# report or from Stripe's invoice_payment.paid, in whichever order they arrive.
order_aliases = sa.Table(
    "order_aliases",
    metadata,
    sa.Column("alias_key", sa.String(512), primary_key=True),
    sa.Column("order_key", sa.String(512), nullable=False),
)
sa.Index("ix_order_aliases_order", order_aliases.c.order_key)

# One row, bumped by every stage-1 commit: a worker that read state while another
# committed sees the epoch moved and computes its batch again (SQLite, where the step
# reads without holding the write lock so ingest is not kept waiting).
state_epoch = sa.Table(
    "state_epoch",
    metadata,
    sa.Column("id", sa.SmallInteger(), primary_key=True, autoincrement=False),
    sa.Column("epoch", sa.BigInteger(), nullable=False),
)

checkouts = sa.Table(
    "checkouts",
    metadata,
    # "shopify:shop:token" or "stripe:acct:cs_..." (the cart_id journeys see).
    sa.Column("checkout_key", sa.String(512), primary_key=True),
    # Content hash of what checkout_started reported: an update equal to it is no change.
    sa.Column("started_hash", sa.String(64), nullable=True),
    # Event time of the order that completed the checkout; cart events after it are
    # suppressed.
    sa.Column("completed_at", sa.BigInteger(), nullable=True),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
)

# Data requests (Shopify customers/data_request): the merchant must answer each within
# 30 days, so each is kept, open until answered, with the person it resolved to.
data_requests = sa.Table(
    "data_requests",
    metadata,
    # The delivery that carried it (provider:account:type:delivery id): one row each.
    sa.Column("request_key", sa.String(512), primary_key=True),
    sa.Column("provider", sa.String(32), nullable=False),
    sa.Column("account", sa.String(255), nullable=False),
    sa.Column("request_id", sa.String(255), nullable=True),  # the provider's own id
    sa.Column("person_id", sa.String(255), nullable=True),  # null: nobody known by it
    sa.Column("order_ids", sa.JSON(), nullable=False),
    sa.Column("requested_at", UTCDateTime(), nullable=False),
    sa.Column("answered_at", UTCDateTime(), nullable=True),
)

# What privacy redactions erased, remembered as keyed digests (never in clear) for
# ERASURE_RETENTION_DAYS, so a webhook arriving later about an erased person or order
# is suppressed instead of recreating them (webhooks.stage1.state.erasure).
erasures = sa.Table(
    "erasures",
    metadata,
    # HMAC-SHA256 under the service's erasure key of an identity key or person id.
    sa.Column("digest", sa.String(64), primary_key=True),
    # Event time of the redaction, Unix seconds: what is dated before it was erased.
    sa.Column("erased_at", sa.BigInteger(), nullable=False),
    sa.Column("expires_at", UTCDateTime(), nullable=False),
)
sa.Index("ix_erasures_expires", erasures.c.expires_at)

# Secrets the service makes for itself, one row each (the erasure digest key).
service_keys = sa.Table(
    "service_keys",
    metadata,
    sa.Column("name", sa.String(32), primary_key=True),
    sa.Column("value", sa.String(128), nullable=False),
)

# One row per delivery worker, refreshed while it loops: a worker that died or stalled
# on any host shows as a stale beat (`/readyz`, `webhooks.storage.heartbeat`).
worker_heartbeats = sa.Table(
    "worker_heartbeats",
    metadata,
    sa.Column("owner", sa.String(128), primary_key=True),  # host:pid:random
    sa.Column("started_at", UTCDateTime(), nullable=False),
    sa.Column("beat_at", UTCDateTime(), nullable=False),
    # What its delivery is doing: heartbeat.DELIVERY_STATES (sending, dry_run, ...).
    sa.Column("delivery", sa.String(32), nullable=True),
)
sa.Index("ix_worker_heartbeats_beat", worker_heartbeats.c.beat_at)
