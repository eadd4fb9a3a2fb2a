"""How operator commands name a stored delivery: the same fields everywhere."""

from __future__ import annotations

from typing import Any


def delivery_ref(row: Any) -> dict[str, Any]:
    """An inbox row's reference and identity (no body): `inbox:ID`, provider, account,
    type, delivery id, when it was received."""
    return {
        "ref": f"inbox:{row.id}",
        "provider": row.provider,
        "account": row.account,
        "type": row.event_type,
        "delivery_id": row.delivery_id,
        "received_at": row.received_at.isoformat(),
    }
