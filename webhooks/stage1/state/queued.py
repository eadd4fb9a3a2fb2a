"""What a batch of the stateful step implies for rows already queued.

Run in the step's transaction after its own outbox rows are written: a merged person's
queued operations follow them, cart events of a checkout an order completed (or equal
to its checkout_started) are suppressed, and deliveries that waited for a person whose
key this batch linked go back to pending.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from mappers.cart import material_digest
from mappers.taxonomy import EventName
from webhooks.core.identity import Identity
from webhooks.core.operations import OperationKind, event_data
from webhooks.stage1.state.guards import COMPLETED, UNCHANGED
from webhooks.stage1.state.store import select_in
from webhooks.storage.dialect import one_of
from webhooks.storage.schema import InboxState, OutboxState, inbox, inbox_waits, outbox

QUEUED = (OutboxState.PENDING, OutboxState.DRY_RUN)


def repoint(conn: Connection, old: str, new: Identity) -> None:
    """A merged person's queued operations go to the person they became."""
    kinds = (OperationKind.IDENTIFY, OperationKind.EVENT, OperationKind.MERGE)
    rows = conn.execute(
        sa.select(outbox.c.id, outbox.c.kind, outbox.c.payload).where(
            outbox.c.person_id == old, outbox.c.state.in_(QUEUED), outbox.c.kind.in_(kinds)
        )
    ).all()
    for row in rows:
        # A queued merge into the old id now merges into the new one.
        field = "primary" if row.kind == OperationKind.MERGE else "identifiers"
        payload = dict(row.payload, **{field: new.identifier})
        conn.execute(
            sa.update(outbox)
            .where(outbox.c.id == row.id)
            .values(person_id=new.person_id, payload=payload)
        )


def suppress_completed(conn: Connection, subjects: Collection[str]) -> None:
    """Queued cart events of checkouts an order completed are withheld."""
    if subjects:
        conn.execute(
            sa.update(outbox)
            .where(outbox.c.subject.in_(sorted(subjects)), outbox.c.state.in_(QUEUED))
            .values(state=OutboxState.SUPPRESSED, last_error=COMPLETED)
        )


def suppress_unchanged(conn: Connection, started: Mapping[str, str]) -> None:
    """Cart updates queued before their checkout_started, and equal to it, are withheld."""
    for subject, digest in started.items():
        rows = conn.execute(
            sa.select(outbox.c.id, outbox.c.payload).where(
                outbox.c.subject == subject,
                outbox.c.state.in_(QUEUED),
                outbox.c.op_key.startswith(EventName.CART_UPDATED.value + ":"),
            )
        ).all()
        same = [row.id for row in rows if material_digest(event_data(row.payload)) == digest]
        if same:
            conn.execute(
                sa.update(outbox)
                .where(outbox.c.id.in_(same))
                .values(state=OutboxState.SUPPRESSED, last_error=UNCHANGED)
            )


def wake(conn: Connection, linked: Collection[str]) -> int:
    """Waiting deliveries whose key was just linked go back to pending; how many."""
    if not linked:
        return 0
    if conn.execute(sa.select(inbox_waits.c.inbox_id).limit(1)).first() is None:
        return 0  # the usual case: nothing waits, one cheap query
    query = sa.select(inbox_waits.c.inbox_id)
    ids = {row.inbox_id for row in select_in(conn, query, inbox_waits.c.key, linked)}
    if ids:
        dialect = conn.dialect.name
        conn.execute(
            sa.update(inbox)
            .where(one_of(inbox.c.id, sorted(ids), dialect), inbox.c.state == InboxState.WAITING)
            .values(state=InboxState.PENDING, last_error=None)
        )
        waits = one_of(inbox_waits.c.inbox_id, sorted(ids), dialect)
        conn.execute(sa.delete(inbox_waits).where(waits))
    return len(ids)
