"""One way to fit an id or key into a bounded column or API field: hash it when too long."""

from __future__ import annotations

import hashlib


def bounded(value: str, limit: int, *, in_bytes: bool = False) -> str:
    """`value`, or `sha256:<hex>` of it when longer than `limit` characters (or UTF-8 bytes).

    The digest is stable, so the same over-long id is always the same key or person,
    and a long value is never refused with the batch it came in.
    """
    size = len(value.encode("utf-8")) if in_bytes else len(value)
    if size <= limit:
        return value
    return "sha256:" + hashlib.sha256(value.encode("utf-8")).hexdigest()
