"""A batch's view of people's records, facts and totals (webhooks.stage1.state.person).

Loaded once per batch, changed in memory as deliveries are applied, written back by
the step. Orders and refunds are summed into each person's totals as they arrive; only
an order arriving earlier than the person's latest asks the database for its place.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

from sqlalchemy.engine import Connection

from webhooks.stage1.state import store
from webhooks.stage1.state.person import Fact, PersonRecord, Totals


class Ledger:
    """People's records and facts for one batch, bound to stage 1's connection."""

    def __init__(self, conn: Connection, currency: str) -> None:
        self.conn = conn
        self.currency = currency  # REPORTING_CURRENCY
        self.records: dict[str, PersonRecord] = {}
        self.facts: dict[str, Fact] = {}
        self.by_person: dict[str, set[str]] = {}  # person id -> their fact keys loaded
        self.absorbed: dict[str, set[str]] = {}  # person id -> ids merged into them
        self.dirty_records: set[str] = set()
        self.dirty_facts: set[str] = set()

    def load(self, people: set[str], fact_keys: Iterable[str]) -> None:
        """These people's records and subscriptions, and these facts whoever holds them."""
        self.facts = store.load_facts(self.conn, people, fact_keys)
        for key, fact in self.facts.items():
            self.by_person.setdefault(fact.person_id, set()).add(key)
        # A reported fact may be held by someone else (an equal-rank conflict): its
        # holder's totals change, so their record is loaded too.
        self.records = store.load_records(self.conn, people | set(self.by_person))

    def changed(self) -> tuple[list[PersonRecord], list[Fact]]:
        """Records (totals brought up to date) and facts to write back."""
        records = [self.records[pid] for pid in self.dirty_records if pid in self.records]
        for record in records:
            self.refresh(record)
        return records, [self.facts[key] for key in self.dirty_facts]

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

    def _put(self, fact: Fact) -> None:
        known = self.facts.get(fact.fact_key)
        if known is not None:
            self.by_person.get(known.person_id, set()).discard(fact.fact_key)
        self.facts[fact.fact_key] = fact
        self.by_person.setdefault(fact.person_id, set()).add(fact.fact_key)
        self.dirty_facts.add(fact.fact_key)

    def add_fact(self, fact: Fact) -> tuple[Fact, int | None]:
        """Record one report of a fact and count it in its holder's totals, once.

        Returns the fact as now known, and the holder's latest order date before it.
        """
        known = self.facts.get(fact.fact_key)
        combined = fact if known is None else known.combine(fact)
        # Counted again first if a merge made them stale: `latest` must be the truth.
        totals = self.refresh(self.record(combined.person_id))
        latest = totals.last_order_at
        if combined != known:
            self._put(combined)
            totals.add(known, combined)
        return combined, latest

    def facts_of(self, person_id: str) -> list[Fact]:
        return [self.facts[key] for key in self.by_person.get(person_id, ())]

    def holders(self, person_id: str) -> list[str]:
        """The person and everyone merged into them in this batch (not yet saved)."""
        return [person_id, *sorted(self.absorbed.get(person_id, ()))]

    def refresh(self, record: PersonRecord) -> Totals:
        """The record's totals, counted again from every fact if they went stale."""
        wanted = self.currency
        if record.totals.stale or record.totals.currency != wanted:
            stored = store.load_facts(self.conn, self.holders(record.person_id), kinds=None)
            facts = {k: replace(f, person_id=record.person_id) for k, f in stored.items()}
            facts.update({f.fact_key: f for f in self.facts_of(record.person_id)})
            record.totals = Totals.of(list(facts.values()), wanted)
        return record.totals

    def position(self, order: Fact, latest: int | None) -> int:
        """An order's place among its holder's orders by date (1 = first).

        `latest`: the holder's latest order date before this report.
        """
        totals = self.refresh(self.record(order.person_id))
        if latest is None or order.first_at > latest:
            return totals.order_count  # later than every other: the common case
        # Earlier than the latest, or tied with it to the second (ties go by key).
        mine = [f for f in self.facts_of(order.person_id) if f.kind == "order"]
        before = store.orders_before(
            self.conn,
            self.holders(order.person_id),
            order.first_at,
            order.fact_key,
            skip={f.fact_key for f in mine},
        )
        return (
            1
            + before
            + sum((f.first_at, f.fact_key) < (order.first_at, order.fact_key) for f in mine)
        )
