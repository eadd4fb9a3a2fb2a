"""What the service holds about a person, for data requests (GDPR access, Shopify's
`customers/data_request`), as one JSON document.

A person is what identity resolution made of them: their person id, the keys linked
to it (provider customer ids, emails, orders), their attributes and totals, the facts
(orders, refunds, subscriptions), the operations queued or sent for them, and the
stored webhooks those came from (raw bodies, unless purged past retention).
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from webhooks.errors import WebhooksError
from webhooks.ops.rows import delivery_ref
from webhooks.storage.queue import utcnow
from webhooks.storage.schema import (
    data_requests,
    identity_links,
    inbox,
    outbox,
    person_facts,
    person_state,
)


class UnknownPerson(WebhooksError, LookupError):
    """Nothing is held under that person id or key."""


class UnknownRequest(WebhooksError, LookupError):
    """No data request is recorded under that key."""


def resolve(engine: Engine, ref: str) -> str:
    """A person id, or an identity key linked to one (`email:ann@example.com`, ...)."""
    with engine.connect() as conn:
        if conn.scalar(sa.select(person_state.c.person_id).where(person_state.c.person_id == ref)):
            return ref
        linked = conn.scalar(
            sa.select(identity_links.c.person_id).where(
                sa.or_(identity_links.c.key == ref, identity_links.c.person_id == ref)
            )
        )
        if linked:
            return str(linked)
        if conn.scalar(sa.select(outbox.c.person_id).where(outbox.c.person_id == ref).limit(1)):
            return ref
    raise UnknownPerson(f"nothing is held about {ref!r} (a person id or a linked key)")


def export(engine: Engine, person_id: str) -> dict[str, Any]:
    """Everything held about `person_id`."""
    with engine.connect() as conn:
        state = conn.execute(
            sa.select(person_state).where(person_state.c.person_id == person_id)
        ).first()
        links = conn.execute(
            sa.select(identity_links.c.key, identity_links.c.rank, identity_links.c.updated_at)
            .where(identity_links.c.person_id == person_id)
            .order_by(identity_links.c.key)
        ).all()
        facts = conn.execute(
            sa.select(person_facts)
            .where(person_facts.c.person_id == person_id)
            .order_by(person_facts.c.first_at)
        ).all()
        operations = conn.execute(
            sa.select(outbox).where(outbox.c.person_id == person_id).order_by(outbox.c.id)
        ).all()
        sources = sorted({row.inbox_id for row in operations if row.inbox_id is not None})
        deliveries = _deliveries(conn, sources)
        requests = conn.execute(
            sa.select(data_requests)
            .where(data_requests.c.person_id == person_id)
            .order_by(data_requests.c.requested_at)
        ).all()
    if state is None and not links and not operations:
        raise UnknownPerson(f"nothing is held about {person_id!r}")
    return {
        "person_id": person_id,
        "exported_at": utcnow().isoformat(),
        "attributes": {name: value for name, (value, _at) in (state.attributes or {}).items()}
        if state
        else {},
        "totals": {
            "order_count": state.order_count,
            "lifetime_value": state.lifetime_value,
            "currency": state.value_currency,
            "first_order_at": state.first_order_at,
            "last_order_at": state.last_order_at,
        }
        if state
        else None,
        "identity_keys": [
            {"key": row.key, "rank": row.rank, "updated_at": _iso(row.updated_at)} for row in links
        ],
        "facts": [
            {
                "key": row.fact_key,
                "kind": row.kind,
                "amount": row.amount,
                "currency": row.currency,
                "status": row.status,
                "first_at": row.first_at,
            }
            for row in facts
        ],
        "operations": [
            {
                "op_id": row.op_id,
                "kind": row.kind,
                "state": row.state,
                "occurred_at": _iso(row.occurred_at),
                "delivered_at": _iso(row.delivered_at),
                "payload": row.payload,
            }
            for row in operations
        ],
        "deliveries": deliveries,
        "data_requests": [_request(row) for row in requests],
    }


def _deliveries(conn: Connection, ids: list[int]) -> list[dict[str, Any]]:
    if not ids:
        return []
    rows = conn.execute(sa.select(inbox).where(inbox.c.id.in_(ids)).order_by(inbox.c.id))
    return [delivery_ref(row) | {"body": _body(row.body)} for row in rows]


def requests(engine: Engine, open_only: bool = False) -> list[dict[str, Any]]:
    """Recorded data requests, oldest first."""
    query = sa.select(data_requests).order_by(data_requests.c.requested_at)
    if open_only:
        query = query.where(data_requests.c.answered_at.is_(None))
    with engine.connect() as conn:
        return [_request(row) for row in conn.execute(query)]


def answer(engine: Engine, key: str, mark: bool) -> dict[str, Any]:
    """The export for data request `key`; with `mark`, record it as answered now."""
    with engine.connect() as conn:
        row = conn.execute(
            sa.select(data_requests).where(data_requests.c.request_key == key)
        ).first()
    if row is None:
        raise UnknownRequest(f"no data request {key!r} (see `webhooks data-requests list`)")
    found: dict[str, Any] = {"request": _request(row)}
    if row.person_id:
        try:
            found["person"] = export(engine, row.person_id)
        except UnknownPerson:
            found["person"] = None
    else:
        found["person"] = None  # nobody was known by what the request named
    if mark:
        with engine.begin() as conn:
            conn.execute(
                sa.update(data_requests)
                .where(data_requests.c.request_key == key)
                .values(answered_at=utcnow())
            )
        found["request"]["answered_at"] = utcnow().isoformat()
    return found


def _request(row: Any) -> dict[str, Any]:
    return {
        "key": row.request_key,
        "provider": row.provider,
        "account": row.account,
        "request_id": row.request_id,
        "person_id": row.person_id,
        "order_ids": row.order_ids,
        "requested_at": _iso(row.requested_at),
        "answered_at": _iso(row.answered_at),
    }


def _body(body: bytes) -> Any:
    if not body:
        return None  # purged past PAYLOAD_RETENTION_DAYS
    try:
        return json.loads(body)
    except ValueError:
        return body.decode("utf-8", "replace")


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None
