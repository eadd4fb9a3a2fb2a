"""`webhooks trace`: the whole path of a delivery, an operation, an order or a person.

"Did this order reach the right person?" Given a delivery id (a Stripe event id, a
Shopify webhook id), an operation's key or id, a person id or linked key, or an order
id, it gathers what was received (when, with which secret, how often), what it was
mapped to and for whom (the identity keys linked to each person, merges), and each
Customer.io operation with its attempts and outcome.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from webhooks.core import jsontext
from webhooks.core.operations import OperationKind
from webhooks.errors import WebhooksError
from webhooks.ops.rows import delivery_ref
from webhooks.storage.schema import identity_links, inbox, outbox, person_facts, person_state

LIMIT = 200  # operations per person shown; a trace is for reading


class NothingToTrace(WebhooksError, LookupError):
    """No delivery, operation, person or order goes by that id."""


def trace(engine: Engine, ref: str) -> dict[str, Any]:
    """Everything connected to `ref`, as plain data (payloads unmasked)."""
    with engine.connect() as conn:
        deliveries, operations, persons, found_as = _start(conn, ref)
        if not (deliveries or operations or persons):
            raise NothingToTrace(
                f"nothing goes by {ref!r}: not a delivery id, operation key or id, "
                "person id or linked key, or order id"
            )
        for row in _operations(conn, outbox.c.person_id.in_(persons)) if persons else []:
            operations.setdefault(row.id, row)
        # Deliveries and the operations they produced, both ways, until nothing is new.
        for _ in range(2):
            sources = {row.inbox_id for row in operations.values() if row.inbox_id}
            new = sorted(sources - set(deliveries))
            if new:
                for row in conn.execute(sa.select(inbox).where(inbox.c.id.in_(new))):
                    deliveries[row.id] = row
            if deliveries:
                for row in _operations(conn, outbox.c.inbox_id.in_(sorted(deliveries))):
                    operations.setdefault(row.id, row)
        persons |= {row.person_id for row in operations.values() if row.person_id}
        links = _links(conn, persons)
    return {
        "ref": ref,
        "found_as": found_as,
        "received": [_delivery(row) for _, row in sorted(deliveries.items())],
        "persons": {
            person: [{"key": key, "rank": rank} for key, rank in links.get(person, [])]
            for person in sorted(persons)
        },
        "operations": [_operation(row) for _, row in sorted(operations.items())],
    }


def _start(
    conn: Connection, ref: str
) -> tuple[dict[int, Any], dict[int, Any], set[str], list[str]]:
    found_as: list[str] = []
    deliveries = {
        row.id: row
        for row in conn.execute(
            sa.select(inbox).where(sa.or_(inbox.c.delivery_id == ref, inbox.c.event_id == ref))
        )
    }
    if deliveries:
        found_as.append("delivery")
    operations = {
        row.id: row
        for row in _operations(conn, sa.or_(outbox.c.op_key == ref, outbox.c.op_id == ref))
    }
    if operations:
        found_as.append("operation")
    persons: set[str] = set()
    linked = conn.scalar(sa.select(identity_links.c.person_id).where(identity_links.c.key == ref))
    if linked:
        persons.add(linked)
        found_as.append("linked key")
    known = conn.scalar(
        sa.select(sa.literal(1)).where(
            sa.or_(
                sa.exists().where(person_state.c.person_id == ref),
                sa.exists().where(outbox.c.person_id == ref),
            )
        )
    )
    if known:
        persons.add(ref)
        found_as.append("person")
        # A profile folded into another: the merge names it in its key, and a guest's
        # anonymous id travels in the customer's identify. The payload search scans
        # the identifies (a trace is a rare, operator-run query).
        folded = sa.or_(
            sa.and_(outbox.c.kind == OperationKind.MERGE, _contains(outbox.c.op_key, ref)),
            sa.and_(
                outbox.c.kind == OperationKind.IDENTIFY,
                _contains(sa.cast(outbox.c.payload, sa.Text), jsontext.dumps(ref)),
            ),
        )
        for row in _operations(conn, folded):
            operations.setdefault(row.id, row)
    if not (deliveries or operations or persons):
        # An order id: the facts keyed by it, and the operations whose key names it.
        orders = conn.execute(
            sa.select(person_facts.c.person_id).where(
                person_facts.c.kind == "order", person_facts.c.fact_key.endswith(f":{ref}")
            )
        ).scalars()
        persons |= set(orders)
        for row in _operations(conn, _contains(outbox.c.op_key, f":{ref}")):
            operations.setdefault(row.id, row)
        if persons or operations:
            found_as.append("order")
    return deliveries, operations, persons, found_as


def _operations(conn: Connection, where: sa.ColumnElement[bool]) -> list[Any]:
    return list(conn.execute(sa.select(outbox).where(where).order_by(outbox.c.id).limit(LIMIT)))


def _contains(column: sa.ColumnElement[Any], text: str) -> sa.ColumnElement[bool]:
    return column.contains(text, autoescape=True)


def _links(conn: Connection, persons: set[str]) -> dict[str, list[tuple[str, int]]]:
    if not persons:
        return {}
    found: dict[str, list[tuple[str, int]]] = {}
    rows = conn.execute(
        sa.select(identity_links.c.person_id, identity_links.c.key, identity_links.c.rank)
        .where(identity_links.c.person_id.in_(sorted(persons)))
        .order_by(identity_links.c.key)
    )
    for person, key, rank in rows:
        found.setdefault(person, []).append((key, rank))
    return found


def _delivery(row: Any) -> dict[str, Any]:
    return delivery_ref(row) | {
        "secret_index": row.secret_index,
        "duplicates": row.duplicates,
        "lane": row.lane,
        "state": row.state,
        "attempts": row.attempts,
        "reason": row.last_error,
    }


def _operation(row: Any) -> dict[str, Any]:
    payload = row.payload if isinstance(row.payload, dict) else {}
    return {
        "ref": f"outbox:{row.id}",
        "source": f"inbox:{row.inbox_id}" if row.inbox_id else None,
        "op_key": row.op_key,
        "op_id": row.op_id,
        "kind": row.kind,
        "name": payload.get("name"),
        "person_id": row.person_id,
        "state": row.state,
        "attempts": row.attempts,
        "last_status": row.last_status,
        "reason": row.last_error,
        "occurred_at": row.occurred_at.isoformat(),
        "delivered_at": row.delivered_at.isoformat() if row.delivered_at else None,
        "payload": row.payload,
    }


def render(found: dict[str, Any]) -> str:
    """The trace for a terminal: received, persons, operations."""
    lines = [f"{found['ref']}: found as {', '.join(found['found_as'])}", "", "Received"]
    for item in found["received"] or [{"ref": "(no stored delivery)"}]:
        if "provider" not in item:
            lines.append(f"  {item['ref']}")
            continue
        secret = item["secret_index"]
        lines.append(
            f"  {item['ref']}  {item['received_at'][:19]}  {item['provider']} {item['type']}"
            f"  {item['delivery_id']}"
        )
        lines.append(
            f"      verified with secret #{secret if secret is not None else '?'}, delivered "
            f"{1 + item['duplicates']} time(s), {item['state']}"
            + (f" ({item['reason']})" if item["reason"] else "")
        )
    lines += ["", "Persons"]
    for person, keys in found["persons"].items() or [("(none)", [])]:
        lines.append(f"  {person}")
        lines += [f"      linked: {key['key']} (rank {key['rank']})" for key in keys]
    lines += ["", "Customer.io operations"]
    for op in found["operations"] or [{"ref": "(none)"}]:
        if "kind" not in op:
            lines.append(f"  {op['ref']}")
            continue
        what = f"{op['kind']} {op['name']}" if op["name"] else op["kind"]
        outcome = op["state"] + (f", last answer {op['last_status']}" if op["last_status"] else "")
        lines.append(f"  {op['ref']}  {what} for {op['person_id']}  from {op['source'] or '-'}")
        lines.append(
            f"      {outcome}, {op['attempts']} attempt(s)"
            + (f", delivered {op['delivered_at'][:19]}" if op["delivered_at"] else "")
            + (f": {op['reason']}" if op["reason"] else "")
        )
        lines.append(f"      payload {op['payload']}")
    return "\n".join(lines)
