"""Erasure that lasts: what privacy redactions erased, remembered as keyed digests.

A redaction forgets a person here and deletes them at Customer.io. Without a memory of
it, a webhook arriving later would bring them back: an `orders/paid` of an erased
order, a `customers/update` dated before the redaction. So the identity keys and
person ids a redaction erased are kept as HMAC-SHA256 digests under a random key of
this database (`service_keys`), never in clear, for ERASURE_RETENTION_DAYS. A later
delivery naming an erased order or subscription, or naming an erased person or
identifier with an event dated at or before the redaction, is suppressed: nothing goes
to Customer.io, and what it would have sent is recorded as `suppressed` with REASON and
no payload. Activity dated after the redaction by an erased customer is new data.
"""

from __future__ import annotations

import hashlib
import hmac
import weakref
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from webhooks.stage1.state.store import chunks
from webhooks.storage.dialect import insert
from webhooks.storage.queue import utcnow
from webhooks.storage.schema import erasures, service_keys

REASON = "erased by a privacy redaction"
KEY_NAME = "erasure"

# Engine -> its database's erasure key, read once per process and engine.
_KEYS: weakref.WeakKeyDictionary[Engine, bytes] = weakref.WeakKeyDictionary()


def person_ref(person_id: str) -> str:
    """What a person id is remembered as (identity keys are remembered as themselves)."""
    return f"person:{person_id}"


def _key(conn: Connection) -> bytes:
    key = _KEYS.get(conn.engine)
    if key is None:
        query = sa.select(service_keys.c.value).where(service_keys.c.name == KEY_NAME)
        key = _KEYS[conn.engine] = bytes.fromhex(conn.execute(query).scalar_one())
    return key


class Erasures:
    """The erasures one batch checks and records, on stage 1's connection."""

    def __init__(self, conn: Connection, retention: timedelta) -> None:
        self.conn = conn
        self.retention = retention

    def digest(self, ref: str) -> str:
        """The keyed digest `ref` is remembered (or recorded) as."""
        return hmac.new(_key(self.conn), ref.encode("utf-8"), hashlib.sha256).hexdigest()

    def any(self, now: datetime | None = None) -> bool:
        """Whether anything is still remembered as erased (else nothing needs checking)."""
        live = sa.select(erasures.c.digest).where(erasures.c.expires_at > (now or utcnow()))
        return self.conn.execute(live.limit(1)).first() is not None

    def erased(self, refs: Iterable[str], now: datetime | None = None) -> dict[str, int]:
        """Of `refs`, those erased and still remembered, with the redaction's time."""
        by_digest = {self.digest(ref): ref for ref in set(refs)}
        live = erasures.c.expires_at > (now or utcnow())
        query = sa.select(erasures.c.digest, erasures.c.erased_at).where(live)
        found: dict[str, int] = {}
        for chunk in chunks(by_digest):
            for row in self.conn.execute(query.where(erasures.c.digest.in_(chunk))):
                found[by_digest[row.digest]] = row.erased_at
        return found

    def remember(self, refs: Mapping[str, int], now: datetime | None = None) -> None:
        """Remember `refs` as erased at their times; forget erasures past their retention."""
        now = now or utcnow()
        self.conn.execute(sa.delete(erasures).where(erasures.c.expires_at <= now))
        if not refs:
            return
        statement = insert(erasures, self.conn.dialect.name)
        upsert = statement.on_conflict_do_update(
            index_elements=["digest"],
            set_={
                "erased_at": statement.excluded.erased_at,
                "expires_at": statement.excluded.expires_at,
            },
            where=erasures.c.erased_at <= statement.excluded.erased_at,
        )
        expires = now + self.retention
        rows = [
            {"digest": self.digest(ref), "erased_at": at, "expires_at": expires}
            for ref, at in refs.items()
        ]
        self.conn.execute(upsert, rows)
