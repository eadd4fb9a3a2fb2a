"""A batch's view of people's records, facts and totals (webhooks.stage1.state.person).

Loaded once per batch, changed in memory as deliveries are applied, written back by
the step. Orders are counted into each person's totals as they arrive, and an order's
value (its total less its refunds) is redone whenever one of them changes: the batch
loads every order it reports, their aliases, and every refund naming them. Only an
order arriving earlier than the person's latest asks the database for its place.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import replace
from decimal import Decimal

from sqlalchemy.engine import Connection

from webhooks.stage1.state import store
from webhooks.stage1.state.person import (
    Fact,
    PersonRecord,
    Totals,
    counted,
    order_value,
)


class Ledger:
    """People's records and facts for one batch, bound to stage 1's connection."""

    def __init__(self, conn: Connection, currency: str) -> None:
        self.conn = conn
        self.currency = currency  # REPORTING_CURRENCY
        self.records: dict[str, PersonRecord] = {}
        self.facts: dict[str, Fact] = {}
        self.by_person: dict[str, set[str]] = {}  # person id -> their fact keys loaded
        self.absorbed: dict[str, set[str]] = {}  # person id -> ids merged into them
        self.aliases: dict[str, str] = {}  # another name of an order -> its key
        self.names: dict[str, set[str]] = {}  # an order's key -> its other names
        self.refunds: dict[str, set[str]] = {}  # order key or alias -> refunds naming it
        self.dirty_records: set[str] = set()
        self.dirty_facts: set[str] = set()
        self.dirty_aliases: set[str] = set()

    def load_named(self, fact_keys: Iterable[str], refs: Iterable[str] = ()) -> set[str]:
        """These facts whoever holds them, and the orders `refs` name; their holders.

        `refs`: the order keys and aliases the batch's orders and refunds name; their
        aliases, orders and refunds are loaded too, so an order's value can be redone.
        Reads afresh each time (the step reads again after locking the holders).
        """
        self.aliases = store.load_aliases(self.conn, refs)
        self.names = {}
        for alias, order in self.aliases.items():
            self.names.setdefault(order, set()).add(alias)
        names = set(refs) | set(self.aliases) | set(self.aliases.values())
        self.facts = store.load_orders(self.conn, names)
        # Orders among the reported facts were looked for above, found or not.
        others = set(fact_keys) - names
        self.facts.update(store.load_facts(self.conn, (), others))
        return {fact.person_id for fact in self.facts.values()}

    def load_people(self, people: set[str]) -> None:
        """These people's records and subscriptions (after `load_named`)."""
        self.facts.update(store.load_facts(self.conn, people))
        self.by_person, self.refunds = {}, {}
        for fact in self.facts.values():
            self._index(fact)
        # A reported fact may be held by someone else (an equal-rank conflict): its
        # holder's totals change, so their record is loaded too.
        self.records = store.load_records(self.conn, people | set(self.by_person))

    def changed(self) -> tuple[list[PersonRecord], list[Fact], dict[str, str]]:
        """Records (totals brought up to date), facts and aliases to write back."""
        records = [self.records[pid] for pid in self.dirty_records if pid in self.records]
        for record in records:
            self.refresh(record)
        facts = [self.facts[key] for key in self.dirty_facts]
        return records, facts, {alias: self.aliases[alias] for alias in self.dirty_aliases}

    def record(self, person_id: str) -> PersonRecord:
        record = self.records.get(person_id)
        if record is None:
            totals = Totals(currency=self.currency)
            record = self.records[person_id] = PersonRecord(person_id, totals=totals)
        self.dirty_records.add(person_id)
        return record

    def fold(self, old: str, new: str, typed: bool) -> None:
        """Move a merged person's attributes and facts to the person they became.

        `typed`: merged only through an email a guest typed: their words are dropped.
        """
        gone = self.records.pop(old, None)
        self.dirty_records.discard(old)
        record = self.record(new)
        if gone is not None and not typed:
            record.absorb(gone)
        elif gone is not None:
            record.touch(gone.watermark)  # their events are the person's, not their words
        # The old person's stored facts move to the new one when the batch is saved;
        # until then the new person's totals are counted again from both.
        record.totals.stale = True
        absorbed = self.absorbed.setdefault(new, set())
        absorbed |= {old} | self.absorbed.pop(old, set())
        for key in self.by_person.pop(old, set()):
            self._put(replace(self.facts[key], person_id=new))

    def _index(self, fact: Fact) -> None:
        self.by_person.setdefault(fact.person_id, set()).add(fact.fact_key)
        if fact.kind == "refund" and fact.parent:
            self.refunds.setdefault(fact.parent, set()).add(fact.fact_key)

    def _put(self, fact: Fact) -> None:
        known = self.facts.get(fact.fact_key)
        if known is not None:
            self.by_person.get(known.person_id, set()).discard(fact.fact_key)
            if known.parent:
                self.refunds.get(known.parent, set()).discard(fact.fact_key)
        self.facts[fact.fact_key] = fact
        self._index(fact)
        self.dirty_facts.add(fact.fact_key)

    def order_of(self, ref: str | None) -> str | None:
        """The key of the order `ref` names (itself unless it is an alias)."""
        return None if ref is None else self.aliases.get(ref, ref)

    def _value(self, order_key: str | None) -> tuple[str | None, Decimal]:
        """The holder of an order and what it adds to their lifetime value now."""
        order = self.facts.get(order_key) if order_key else None
        if order is None or order_key is None:
            return None, Decimal(0)
        names = {order_key} | self.names.get(order_key, set())
        refunds = [
            refund
            for name in names
            for key in self.refunds.get(name, ())
            # A name that is an alias belongs to the order it names, even when an order
            # of its own is kept under it (as refunds_by_order counts them).
            if self.order_of((refund := self.facts[key]).parent) == order_key
        ]
        return order.person_id, order_value(order, refunds, self.currency)

    def _revalue(self, order_keys: Iterable[str | None], change: Callable[[], None]) -> None:
        """Apply `change`, moving each order's value in its holder's totals by the difference."""
        keys = {key for key in order_keys if key}
        for key in keys:  # counted again first if stale, so the difference lands on truth
            holder = self.facts.get(key)
            if holder is not None:
                self.refresh(self.record(holder.person_id))
        before = {key: self._value(key) for key in keys}
        change()
        for key in keys:
            old_holder, old_value = before[key]
            new_holder, new_value = self._value(key)
            if old_holder is not None:
                self.record(old_holder).totals.value -= old_value
            if new_holder is not None:
                self.record(new_holder).totals.value += new_value

    def add_fact(self, fact: Fact) -> tuple[Fact, int | None]:
        """Record one report of a fact and count it in its holder's totals, once.

        Returns the fact as now known, and the holder's latest order date before it.
        """
        known = self.facts.get(fact.fact_key)
        combined = fact if known is None else known.combine(fact)
        # Counted again first if a merge made them stale: `latest` must be the truth.
        totals = self.refresh(self.record(combined.person_id))
        latest = totals.last_order_at
        if combined == known:
            return combined, latest
        if combined.kind == "subscription":
            self._put(combined)
            return combined, latest
        orders: list[str | None] = [combined.fact_key]
        if combined.kind == "refund":  # the order it named before (if that changed) and now
            before = known.parent if known is not None else None
            orders = [self.order_of(combined.parent), self.order_of(before)]

        def put() -> None:
            self._put(combined)
            totals.add(known, combined)

        self._revalue(orders, put)
        return combined, latest

    def alias(self, alias: str, order_key: str) -> None:
        """Learn another name of an order: refunds naming it now count against the order."""
        if alias == order_key or self.aliases.get(alias) == order_key:
            return

        def learn() -> None:
            before = self.aliases.get(alias)
            if before is not None:
                self.names.get(before, set()).discard(alias)
            self.aliases[alias] = order_key
            self.names.setdefault(order_key, set()).add(alias)
            self.dirty_aliases.add(alias)

        # The refunds naming the alias leave whatever it named before.
        self._revalue([self.order_of(alias), order_key], learn)

    def facts_of(self, person_id: str) -> list[Fact]:
        return [self.facts[key] for key in self.by_person.get(person_id, ())]

    def holders(self, person_id: str) -> list[str]:
        """The person and everyone merged into them in this batch (not yet saved)."""
        return [person_id, *sorted(self.absorbed.get(person_id, ()))]

    def refresh(self, record: PersonRecord) -> Totals:
        """The record's totals, counted again from every fact if they went stale."""
        wanted = self.currency
        if record.totals.stale or record.totals.currency != wanted:
            holders = self.holders(record.person_id)
            stored = store.load_facts(self.conn, holders, kinds=None)
            orders = {k for k, f in stored.items() if f.kind == "order"}
            orders |= {f.fact_key for f in self.facts_of(record.person_id) if f.kind == "order"}
            aliases = store.load_aliases(self.conn, orders)
            aliases.update(self.aliases)
            names = orders | {a for a, o in aliases.items() if o in orders}
            # Refunds of the person's orders, held by whoever: only their own orders count.
            stored.update(
                {k: f for k, f in store.load_orders(self.conn, names).items() if f.kind == "refund"}
            )
            facts = {k: replace(f, person_id=record.person_id) for k, f in stored.items()}
            facts.update({f.fact_key: f for f in self.facts_of(record.person_id)})
            facts.update({k: f for k, f in self.facts.items() if f.kind == "refund"})
            mine = [f for f in facts.values() if f.kind != "order" or f.fact_key in orders]
            record.totals = Totals.of(mine, wanted, aliases)
        return record.totals

    def position(self, order: Fact, latest: int | None) -> int:
        """An order's place among its holder's orders by date (1 = first).

        `latest`: the holder's latest order date before this report.
        """
        totals = self.refresh(self.record(order.person_id))
        if latest is None or order.first_at > latest:
            return totals.order_count  # later than every other: the common case
        # Earlier than the latest, or tied with it to the second (ties go by key).
        held = [f for f in self.facts_of(order.person_id) if f.kind == "order"]
        # The stored copy of an order this batch changed (cancelled, say) is out of date:
        # every order held here is counted from memory, the stored ones from the store.
        mine = [f for f in held if counted(f)]
        before = store.orders_before(
            self.conn,
            self.holders(order.person_id),
            order.first_at,
            order.fact_key,
            skip={f.fact_key for f in held},
        )
        return (
            1
            + before
            + sum((f.first_at, f.fact_key) < (order.first_at, order.fact_key) for f in mine)
        )
