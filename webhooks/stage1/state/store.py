"""Reading and writing the identity and person-state tables, a batch at a time.

Every read is one query per table for the whole batch (chunked IN lists), and every
write one executemany upsert: stage 1 must keep up with a backlog of thousands of
webhooks a second, so nothing here runs a query per webhook.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from decimal import Decimal
from functools import cache
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from webhooks.core.identity import CUSTOMER, Identity
from webhooks.errors import TransientError
from webhooks.stage1.state.guards import Checkout
from webhooks.stage1.state.person import CANCELED, Fact, PersonRecord, Totals
from webhooks.storage import arrays
from webhooks.storage.dialect import insert, one_of
from webhooks.storage.queue import utcnow
from webhooks.storage.schema import (
    checkouts,
    data_requests,
    identity_links,
    order_aliases,
    person_facts,
    person_state,
    state_epoch,
)

CHUNK = 500  # bound parameters per IN list (SQLite allows 32,766; PostgreSQL 65,535)
# Above the request path's 2 s and below the default 60 s lease: a queue of workers on
# one person's locks is normal (webhooks.stage1.state.locks).
STATE_WAIT_SECONDS = 30


class StateChanged(TransientError):
    """Another worker saved state while this one was computing: compute again."""


def begin_state(conn: Connection) -> int | None:
    """Start a batch's state step; returns what `begin_writes` checks.

    PostgreSQL: the step's locks (webhooks.stage1.state.locks) keep batches about the
    same people apart; this transaction may wait for them longer than a request would.
    SQLite: no lock yet. Its single write lock would keep ingest waiting for the whole
    step; instead the step reads the state epoch now and `begin_writes` checks that no
    other worker committed state since (optimistic, and free with one worker).
    """
    if conn.dialect.name == "postgresql":
        # set_config(..., true) is SET LOCAL; both in one round trip.
        wait = f"{STATE_WAIT_SECONDS}s"
        conn.exec_driver_sql(
            f"SELECT set_config('lock_timeout', '{wait}', true), "
            f"set_config('statement_timeout', '{wait}', true)"
        )
        return None
    return conn.execute(sa.select(state_epoch.c.epoch).where(state_epoch.c.id == 1)).scalar()


def begin_writes(conn: Connection, seen: int | None) -> None:
    """Take the write lock (SQLite) and make sure the state read is still current."""
    if conn.dialect.name == "postgresql":
        return  # the step's locks have been held since it read
    conn.exec_driver_sql("BEGIN IMMEDIATE")
    if seen is None:
        statement = insert(state_epoch, "sqlite").on_conflict_do_nothing()
        changed = conn.execute(statement, {"id": 1, "epoch": 1}).rowcount
    else:
        changed = conn.execute(
            sa.update(state_epoch)
            .where(state_epoch.c.id == 1, state_epoch.c.epoch == seen)
            .values(epoch=seen + 1)
        ).rowcount
    if changed != 1:
        raise StateChanged("another worker saved person state meanwhile")


def chunks(values: Iterable[str]) -> Iterator[list[str]]:
    """The distinct `values`, sorted, in lists of at most CHUNK (one IN list each)."""
    unique = sorted(set(values))
    for start in range(0, len(unique), CHUNK):
        yield unique[start : start + CHUNK]


def select_in(
    conn: Connection, query: sa.Select[Any], column: sa.ColumnElement[Any], values: Iterable[str]
) -> Iterator[sa.Row[Any]]:
    """The rows of `query` whose `column` is one of `values`: one query per chunk."""
    for chunk in chunks(values):
        yield from conn.execute(query.where(one_of(column, chunk, conn.dialect.name)))


def load_links(conn: Connection, keys: Iterable[str]) -> dict[str, Identity]:
    """The person each of `keys` is linked to, for those linked."""
    table = identity_links
    query = sa.select(table.c.key, table.c.person_id, table.c.rank)
    rows = select_in(conn, query, table.c.key, keys)
    return {row.key: Identity(row.person_id, row.rank) for row in rows}


def load_records(conn: Connection, person_ids: Iterable[str]) -> dict[str, PersonRecord]:
    """The stored attribute records of these people."""
    found: dict[str, PersonRecord] = {}
    for row in select_in(conn, sa.select(person_state), person_state.c.person_id, person_ids):
        totals = Totals(
            row.order_count,
            row.first_order_at,
            row.last_order_at,
            Decimal(row.lifetime_value),
            row.value_currency,
        )
        found[row.person_id] = PersonRecord(
            row.person_id, dict(row.attributes), row.watermark, row.sent_hash, totals
        )
    return found


def _facts(rows: Iterable[sa.Row[Any]]) -> dict[str, Fact]:
    return {
        row.fact_key: Fact(
            row.fact_key,
            row.person_id,
            row.kind,
            row.first_at,
            row.watermark,
            Decimal(row.amount) if row.amount is not None else None,
            row.currency,
            row.status,
            row.parent_key,
        )
        for row in rows
    }


def load_facts(
    conn: Connection,
    person_ids: Iterable[str],
    fact_keys: Iterable[str] = (),
    kinds: Sequence[str] | None = ("subscription",),
) -> dict[str, Fact]:
    """These people's facts of `kinds` (None: all), and these facts whoever holds them.

    Orders and refunds are counted into each person's totals as they arrive, so a batch
    loads only the facts it reports, their orders' refunds and the people's
    subscriptions (a few each), never every order a person ever placed.
    """
    query = sa.select(person_facts)
    held = query if kinds is None else query.where(person_facts.c.kind.in_(kinds))
    found = _facts(select_in(conn, held, person_facts.c.person_id, person_ids))
    missing = [key for key in fact_keys if key not in found]
    found.update(_facts(select_in(conn, query, person_facts.c.fact_key, missing)))
    return found


def load_aliases(conn: Connection, refs: Iterable[str]) -> dict[str, str]:
    """Alias -> order key, for aliases among `refs` and aliases of orders among them."""
    refs = set(refs)
    table = order_aliases
    query = sa.select(table.c.alias_key, table.c.order_key)
    found: dict[str, str] = {}
    dialect = conn.dialect.name
    for chunk in chunks(refs):
        named = sa.or_(
            one_of(table.c.alias_key, chunk, dialect), one_of(table.c.order_key, chunk, dialect)
        )
        found.update((row.alias_key, row.order_key) for row in conn.execute(query.where(named)))
    # An alias in `refs` (a refund naming a PaymentIntent) leads to its order's other names.
    orders = set(found.values()) - refs
    found.update(
        (row.alias_key, row.order_key) for row in select_in(conn, query, table.c.order_key, orders)
    )
    return found


def load_orders(conn: Connection, refs: Iterable[str]) -> dict[str, Fact]:
    """The orders keyed by `refs`, and every refund naming one of `refs`, whoever holds them."""
    found: dict[str, Fact] = {}
    table = person_facts
    dialect = conn.dialect.name
    for chunk in chunks(refs):
        named = sa.or_(
            one_of(table.c.fact_key, chunk, dialect),
            sa.and_(table.c.kind == "refund", one_of(table.c.parent_key, chunk, dialect)),
        )
        found.update(_facts(conn.execute(sa.select(table).where(named))))
    return found


def orders_before(
    conn: Connection, person_ids: Sequence[str], first_at: int, fact_key: str, skip: set[str]
) -> int:
    """How many stored orders of these people come before (first_at, fact_key).

    `skip`: facts the caller holds newer copies of. Only for an order that arrives
    after a later one, the rare case its place cannot come from the totals.
    """
    table = person_facts
    earlier = sa.or_(
        table.c.first_at < first_at,
        sa.and_(table.c.first_at == first_at, table.c.fact_key < fact_key),
    )
    query = sa.select(table.c.fact_key).where(
        one_of(table.c.person_id, person_ids, conn.dialect.name),
        table.c.kind == "order",
        sa.or_(table.c.status.is_(None), table.c.status != CANCELED),
        earlier,
    )
    return sum(1 for key in conn.execute(query).scalars() if key not in skip)


def load_checkouts(conn: Connection, keys: Iterable[str]) -> dict[str, Checkout]:
    """What the guards remember of these checkouts."""
    rows = select_in(conn, sa.select(checkouts), checkouts.c.checkout_key, keys)
    return {row.checkout_key: Checkout(row.started_hash, row.completed_at) for row in rows}


@cache
def _upsert(dialect_name: str, table_name: str) -> sa.Insert:
    tables = (identity_links, person_state, person_facts, checkouts, order_aliases)
    table = {t.name: t for t in tables}[table_name]
    statement = insert(table, dialect_name)
    keys = {col.name for col in table.primary_key.columns}
    return statement.on_conflict_do_update(
        index_elements=sorted(keys),
        set_={
            col.name: getattr(statement.excluded, col.name)
            for col in table.columns
            if col.name not in keys
        },
        # A link is never taken over by a weaker id, whatever another worker wrote.
        where=table.c.rank <= statement.excluded.rank if table is identity_links else None,
    )


def _write(conn: Connection, table: sa.Table, rows: Sequence[dict[str, Any]]) -> None:
    if not rows:
        return
    # One statement whatever the number of rows: webhooks.storage.arrays.
    arrays.upsert(conn, _upsert(conn.dialect.name, table.name), rows)


def save(
    conn: Connection,
    links: dict[str, Identity],
    records: Iterable[PersonRecord],
    facts: Iterable[Fact],
    carts: dict[str, Checkout],
    merged: Sequence[tuple[str, Identity]],
    aliases: dict[str, str],
) -> None:
    """Write what a batch changed; fold merged people's rows into their new person."""
    now = utcnow()
    for old, new in merged:
        # Links and facts of the merged id that this batch did not load move too.
        conn.execute(
            sa.update(identity_links)
            .where(identity_links.c.person_id == old)
            .values(person_id=new.person_id, rank=new.rank, updated_at=now)
        )
        conn.execute(
            sa.update(person_facts)
            .where(person_facts.c.person_id == old)
            .values(person_id=new.person_id)
        )
        conn.execute(sa.delete(person_state).where(person_state.c.person_id == old))
    _write(
        conn,
        identity_links,
        [
            {"key": key, "person_id": who.person_id, "rank": who.rank, "updated_at": now}
            for key, who in links.items()
        ],
    )
    _write(
        conn,
        person_facts,
        [
            {
                "fact_key": fact.fact_key,
                "person_id": fact.person_id,
                "kind": fact.kind,
                "amount": str(fact.amount) if fact.amount is not None else None,
                "currency": fact.currency,
                "status": fact.status,
                "first_at": fact.first_at,
                "watermark": fact.watermark,
                "parent_key": fact.parent,
            }
            for fact in facts
        ],
    )
    _write(
        conn,
        order_aliases,
        [{"alias_key": alias, "order_key": order} for alias, order in aliases.items()],
    )
    _write(
        conn,
        person_state,
        [
            {
                "person_id": record.person_id,
                "attributes": record.attributes,
                "watermark": record.watermark,
                "sent_hash": record.sent_hash,
                "order_count": record.totals.order_count,
                "first_order_at": record.totals.first_order_at,
                "last_order_at": record.totals.last_order_at,
                "lifetime_value": str(record.totals.value),
                "value_currency": record.totals.currency,
                "updated_at": now,
            }
            for record in records
        ],
    )
    _write(
        conn,
        checkouts,
        [
            {
                "checkout_key": key,
                "started_hash": cart.started_hash,
                "completed_at": cart.completed_at,
                "updated_at": now,
            }
            for key, cart in carts.items()
        ],
    )


def forget(conn: Connection, person_id: str) -> None:
    """Erase everything kept about a person (a privacy redaction)."""
    conn.execute(sa.delete(identity_links).where(identity_links.c.person_id == person_id))
    orders = sa.select(person_facts.c.fact_key).where(person_facts.c.person_id == person_id)
    conn.execute(sa.delete(order_aliases).where(order_aliases.c.order_key.in_(orders)))
    conn.execute(sa.delete(person_facts).where(person_facts.c.person_id == person_id))
    conn.execute(sa.delete(person_state).where(person_state.c.person_id == person_id))


def person_link_keys(conn: Connection, person_id: str) -> list[str]:
    """Every identifier linked to a person (what a redaction of them erases)."""
    query = sa.select(identity_links.c.key).where(identity_links.c.person_id == person_id)
    return list(conn.execute(query).scalars())


def account_link_keys(conn: Connection, provider: str, account: str) -> list[str]:
    """Every identifier of one provider account (what a shop redaction erases)."""
    scoped = _like_escaped(f"{provider}:{account}:") + "%"
    query = sa.select(identity_links.c.key).where(identity_links.c.key.like(scoped, "\\"))
    return list(conn.execute(query).scalars())


def forget_keys(conn: Connection, keys: Iterable[str]) -> None:
    """Erase these identifiers (an email, a token) whoever they were linked to."""
    for chunk in chunks(keys):
        named = one_of(identity_links.c.key, chunk, conn.dialect.name)
        conn.execute(sa.delete(identity_links).where(named))


def forget_account(conn: Connection, provider: str, account: str) -> None:
    """Erase the links, facts and checkouts of one provider account (Shopify's shop/redact).

    They are scoped by provider and account in their keys. The people the account's
    customer ids made (account_people) are forgotten whole by the caller, like any
    redacted person; people known by your own ids may also buy elsewhere, so their
    attributes stay (their facts here do not).
    """
    scoped = _like_escaped(f"{provider}:{account}:") + "%"
    conn.execute(sa.delete(identity_links).where(identity_links.c.key.like(scoped, "\\")))
    conn.execute(sa.delete(person_facts).where(person_facts.c.fact_key.like("%:" + scoped, "\\")))
    aliases = order_aliases.c.alias_key
    conn.execute(sa.delete(order_aliases).where(aliases.like("%:" + scoped, "\\")))
    conn.execute(sa.delete(checkouts).where(checkouts.c.checkout_key.like(scoped, "\\")))


@cache
def _request_once(dialect_name: str) -> sa.Insert:
    return insert(data_requests, dialect_name).on_conflict_do_nothing()


def record_requests(conn: Connection, rows: Sequence[dict[str, Any]]) -> None:
    """Keep data requests (a redelivered one is kept once, by its request_key)."""
    if rows:
        conn.execute(_request_once(conn.dialect.name), list(rows))


def account_people(conn: Connection, provider: str, account: str) -> list[str]:
    """The people this account's customer ids made: customer-rank owners of its links."""
    customers = sa.select(identity_links.c.person_id).where(
        identity_links.c.key.like(_like_escaped(f"{provider}:{account}:customer:") + "%", "\\"),
        identity_links.c.rank == CUSTOMER,
    )
    return sorted(set(conn.execute(customers).scalars()))


def _like_escaped(text: str) -> str:
    """`text` as a literal inside a LIKE pattern whose escape character is a backslash."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
