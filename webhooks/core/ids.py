"""Deterministic ULIDs: the same business fact gets the same Customer.io event id forever."""

from __future__ import annotations

import hashlib
from datetime import datetime

from ulid import ULID


def op_ulid(op_key: str, occurred_at: datetime) -> str:
    """A ULID whose time is the fact's event time and whose randomness is hash(op_key).

    Identical on every retry and replay, so Customer.io's own deduplication by `id`
    backs ours up. Distinct keys give distinct ids (80 bits of SHA-256), so two facts
    never share an id and silently drop one another.
    """
    millis = max(0, int(occurred_at.timestamp() * 1000)) & ((1 << 48) - 1)
    digest = hashlib.sha256(op_key.encode("utf-8")).digest()[:10]
    return str(ULID.from_bytes(millis.to_bytes(6, "big") + digest))
