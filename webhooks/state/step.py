"""Stage 1's stateful step: resolve people, update their state, guard journeys.

Runs inside stage 1's transaction, for a whole batch of mapped deliveries in arrival
order: (1) load the links of every identifier the batch shows, (2) resolve each
delivery's people and learn new links, (3) load those people's state, (4) fold merged
profiles together, (5) apply each delivery's reports and facts and build its
Customer.io operations, (6) after the outbox rows are written, save the state and
carry out what the batch implies for rows already queued (suppress cart events of
completed checkouts, repoint a merged person's operations, wake waiting deliveries).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import sqlalchemy as sa
import structlog
from sqlalchemy.engine import Connection

from mappers.actions import (
    Action,
    ExportPersonData,
    Identify,
    Person,
    RedactPerson,
    RedactShop,
    SubscriptionState,
    Track,
)
from mappers.taxonomy import EventName
from webhooks.delivery.operations import (
    Operation,
    OperationKind,
    delete_op,
    event_op,
    identify_op,
    merge_op,
    unsendable_op,
)
from webhooks.state import store
from webhooks.state.guards import CART_EVENTS, Checkout, content_digest, verdict
from webhooks.state.identity import (
    ANONYMOUS,
    EMAIL,
    Identity,
    IdentityPolicy,
    Resolution,
    anonymous_id,
    learn,
    resolve,
)
from webhooks.state.keys import checkout_key, person_keys, track_keys
from webhooks.state.person import (
    Fact,
    PersonRecord,
    Totals,
    attributes_of,
    fact_of,
    status_fact,
)
from webhooks.storage.schema import InboxState, OutboxState, inbox, inbox_waits, outbox

log = structlog.get_logger("webhooks.state")
COMPLETED = "its checkout was already completed by an order"
QUEUED = (OutboxState.PENDING, OutboxState.DRY_RUN)


@dataclass(frozen=True)
class StateConfig:
    """The operator's choices the step needs (from settings)."""

    identity: IdentityPolicy = field(default_factory=IdentityPolicy)
    reporting_currency: str = "USD"
    cart_update_hold_seconds: float = 120.0
    merge_delay_seconds: float = 60.0


@dataclass
class Outcome:
    """One delivery's operations, or the identity key it waits for."""

    ops: list[Operation] = field(default_factory=list)
    wait_on: str | None = None


@dataclass
class _Plan:
    resolutions: dict[int, Resolution] = field(default_factory=dict)
    keys: dict[int, list[str]] = field(default_factory=dict)
    merges: list[tuple[Identity, Identity]] = field(default_factory=list)
    wait_on: str | None = None


def _person(action: Action) -> Person | None:
    return getattr(action, "person", None)


class StateStep:
    """The step for one batch, bound to stage 1's connection (see the module doc)."""

    def __init__(self, conn: Connection, config: StateConfig) -> None:
        self.conn = conn
        self.config = config
        self.links: dict[str, Identity] = {}
        self.new_links: dict[str, Identity] = {}
        self.parent: dict[str, Identity] = {}  # merged id -> the identity it became
        self.merges: list[tuple[Identity, Identity]] = []
        self.typed: set[str] = set()  # merged through a typed email: attributes dropped
        self.records: dict[str, PersonRecord] = {}
        self.facts: dict[str, Fact] = {}
        self.by_person: dict[str, set[str]] = {}  # person id -> their fact keys loaded
        self.absorbed: dict[str, set[str]] = {}  # person id -> ids merged into them
        self.carts: dict[str, Checkout] = {}
        self.dirty_records: set[str] = set()
        self.dirty_facts: set[str] = set()
        self.dirty_carts: set[str] = set()
        self.completed: set[str] = set()  # checkouts completed in this batch
        self.started: dict[str, str] = {}  # checkouts started in this batch: digest
        self.redacted: list[str] = []  # people whose state is erased
        self.redacted_keys: set[str] = set()  # identifiers (emails, tokens) erased
        self.redacted_shops: list[str] = []

    # -- identity ------------------------------------------------------------------

    def final(self, identity: Identity) -> Identity:
        """The identity after every merge of this batch."""
        while identity.person_id in self.parent:
            identity = self.parent[identity.person_id]
        return identity

    def _keys(self, action: Action) -> list[str]:
        who = _person(action)
        if who is None:
            return []
        keys = person_keys(who)
        if isinstance(action, Track):
            keys += [key for key in track_keys(action) if key not in keys]
        return keys

    def _plan(self, actions: list[Action], keys: list[list[str]]) -> _Plan:
        plan = _Plan()
        seen: dict[Person, Resolution] = {}  # an identify and its event share one Person
        for index, action in enumerate(actions):
            who = _person(action)
            if who is None:
                continue
            found = seen.get(who) or resolve(who, keys[index], self.links, self.config.identity)
            seen[who] = found
            if found.identity is not None:
                found = replace(found, identity=self.final(found.identity))
            if found.wait_on is not None:
                # Nothing of the delivery is applied until its person is known, so
                # waking it later applies everything exactly once.
                return _Plan(wait_on=found.wait_on)
            plan.resolutions[index] = found
            plan.keys[index] = keys[index]
        taught: set[tuple[Person, Identity]] = set()
        for index, found in plan.resolutions.items():
            if found.identity is None or isinstance(
                actions[index], RedactPerson | ExportPersonData
            ):
                continue  # a privacy request must not teach links to a person
            if found.by_email:
                continue  # nor a typed email: its checkout must not become the person's
            who = self.final(found.identity)
            if isinstance(actions[index], Track) or (actions[index].person, who) not in taught:
                taught.add((actions[index].person, who))  # type: ignore[union-attr]
                self._learn(plan, plan.keys[index], who)
        return plan

    def _learn(self, plan: _Plan, keys: list[str], identity: Identity) -> None:
        learned = learn(keys, identity, self.links)
        for key, who in learned.links.items():
            # Every change is saved: a new link, and one taken over by a stronger id or
            # won by the smaller id of a conflict.
            self.new_links[key] = who
            self.links[key] = who
        self.typed |= learned.typed
        for old, new in learned.merges:
            old, new = self.final(old), self.final(new)
            if old.person_id == new.person_id:
                continue
            self.parent[old.person_id] = new
            self.merges.append((old, new))
            plan.merges.append((old, new))
            for key, who in self.links.items():  # every loaded link of the old id
                if who.person_id == old.person_id:
                    self.links[key] = new
                    self.new_links.setdefault(key, new)
            log.info("identity_merged", old_rank=old.rank, new_rank=new.rank)
        if learned.conflicts:
            log.warning("identity_conflict", keys=len(learned.conflicts), rank=identity.rank)

    # -- person state ----------------------------------------------------------------

    def _record(self, person_id: str) -> PersonRecord:
        record = self.records.get(person_id)
        if record is None:
            totals = Totals(currency=self.config.reporting_currency)
            record = self.records[person_id] = PersonRecord(person_id, totals=totals)
        self.dirty_records.add(person_id)
        return record

    def _fold(self, old: Identity, new: Identity) -> None:
        """Move a merged person's attributes and facts to the person they became."""
        gone = self.records.pop(old.person_id, None)
        self.dirty_records.discard(old.person_id)
        record = self._record(new.person_id)
        if gone is not None and old.person_id not in self.typed:
            record.absorb(gone)
        elif gone is not None:
            record.touch(gone.watermark)  # their events are the person's, not their words
        # The old person's stored facts move to the new one when the batch is saved;
        # until then the new person's totals are counted again from both.
        record.totals.stale = True
        absorbed = self.absorbed.setdefault(new.person_id, set())
        absorbed |= {old.person_id} | self.absorbed.pop(old.person_id, set())
        for key in self.by_person.pop(old.person_id, set()):
            self._put(replace(self.facts[key], person_id=new.person_id))

    def _put(self, fact: Fact) -> None:
        known = self.facts.get(fact.fact_key)
        if known is not None:
            self.by_person.get(known.person_id, set()).discard(fact.fact_key)
        self.facts[fact.fact_key] = fact
        self.by_person.setdefault(fact.person_id, set()).add(fact.fact_key)
        self.dirty_facts.add(fact.fact_key)

    def _add_fact(self, fact: Fact) -> tuple[Fact, int | None]:
        """Record one report of a fact and count it in its holder's totals, once.

        Returns the fact as now known, and the holder's latest order date before it.
        """
        known = self.facts.get(fact.fact_key)
        combined = fact if known is None else known.combine(fact)
        # Counted again first if a merge made them stale: `latest` must be the truth.
        totals = self._refresh(self._record(combined.person_id))
        latest = totals.last_order_at
        if combined != known:
            self._put(combined)
            totals.add(known, combined)
        return combined, latest

    def _facts_of(self, person_id: str) -> list[Fact]:
        return [self.facts[key] for key in self.by_person.get(person_id, ())]

    def _holders(self, person_id: str) -> list[str]:
        """The person and everyone merged into them in this batch (not yet saved)."""
        return [person_id, *sorted(self.absorbed.get(person_id, ()))]

    def _refresh(self, record: PersonRecord) -> Totals:
        """The record's totals, counted again from every fact if they went stale."""
        wanted = self.config.reporting_currency
        if record.totals.stale or record.totals.currency != wanted:
            stored = store.load_facts(self.conn, self._holders(record.person_id), kinds=None)
            facts = {k: replace(f, person_id=record.person_id) for k, f in stored.items()}
            facts.update({f.fact_key: f for f in self._facts_of(record.person_id)})
            record.totals = Totals.of(list(facts.values()), wanted)
        return record.totals

    def _position(self, order: Fact, latest: int | None) -> int:
        """An order's place among its holder's orders by date (1 = first).

        `latest`: the holder's latest order date before this report.
        """
        totals = self._refresh(self._record(order.person_id))
        if latest is None or order.first_at > latest:
            return totals.order_count  # later than every other: the common case
        # Earlier than the latest, or tied with it to the second (ties go by key).
        mine = [f for f in self._facts_of(order.person_id) if f.kind == "order"]
        before = store.orders_before(
            self.conn,
            self._holders(order.person_id),
            order.first_at,
            order.fact_key,
            skip={f.fact_key for f in mine},
        )
        return (
            1
            + before
            + sum((f.first_at, f.fact_key) < (order.first_at, order.fact_key) for f in mine)
        )

    # -- the batch -------------------------------------------------------------------

    def run(self, deliveries: Sequence[tuple[str, list[Action]]]) -> list[Outcome]:
        """Operations for each delivery (in order); see the module doc for the steps."""
        keys = [[self._keys(action) for action in actions] for _, actions in deliveries]
        self.links = store.load_links(self.conn, {k for row in keys for ks in row for k in ks})
        plans = [
            self._plan(actions, row) for (_, actions), row in zip(deliveries, keys, strict=True)
        ]
        people = {
            self.final(found.identity).person_id
            for plan in plans
            for found in plan.resolutions.values()
            if found.identity is not None
        } | {old.person_id for old, _ in self.merges}
        tracks = [a for _, actions in deliveries for a in actions if isinstance(a, Track)]
        self.facts = store.load_facts(
            self.conn, people, {f.fact_key for t in tracks if (f := fact_of(t, ""))}
        )
        for key, fact in self.facts.items():
            self.by_person.setdefault(fact.person_id, set()).add(key)
        # A reported fact may be held by someone else (an equal-rank conflict): its
        # holder's totals change, so their record is loaded too.
        self.records = store.load_records(self.conn, people | set(self.by_person))
        self.carts = store.load_checkouts(self.conn, {s for t in tracks if (s := _subject(t))})
        for old, new in self.merges:
            self._fold(old, self.final(new))
        return [
            Outcome(wait_on=plan.wait_on)
            if plan.wait_on
            else Outcome(self._operations(key, actions, plan))
            for (key, actions), plan in zip(deliveries, plans, strict=True)
        ]

    def _operations(self, delivery_key: str, actions: list[Action], plan: _Plan) -> list[Operation]:
        events: list[Operation] = []
        touched: dict[str, Identity] = {}
        tokens: dict[str, set[str]] = {}
        for index, action in enumerate(actions):
            if isinstance(action, RedactShop):
                self.redacted_shops.append(action.account)
                continue
            found = plan.resolutions.get(index)
            if found is None:
                continue
            if found.identity is None:
                if isinstance(action, Track) and found.skip is None:
                    problem = "no person id, link or token to send it by"
                    events.append(unsendable_op(action, action.payload(), problem))
                continue
            who = self.final(found.identity)
            if isinstance(action, RedactPerson):
                if not who.anonymous:
                    events.append(delete_op(who, action.timestamp))
                self._redact(who, plan.keys.get(index, []))
                continue
            if isinstance(action, SubscriptionState):
                self._status(action, who)
                touched[who.person_id] = who
                continue
            if isinstance(action, Identify):
                typed = found.by_email or found.identity.person_id in self.typed
                if typed and not who.anonymous:
                    # A typed email proves nothing about name, phone or consent: not
                    # when it found the person, nor when it merged the guest into them
                    # later in this batch (a later batch drops them in _fold).
                    continue
                self._record(who.person_id).report(action.attributes, action.timestamp)
            elif isinstance(action, Track):
                events.append(self._event(action, who))
            else:
                continue
            touched[who.person_id] = who
            anon = anonymous_id(action.person)
            if anon and not who.anonymous:
                tokens.setdefault(who.person_id, set()).add(anon)
        forced: set[str] = set()
        merges: list[Operation] = []
        for old, new in plan.merges:
            new = self.final(new)
            if new.anonymous:
                continue
            touched[new.person_id] = new
            if old.rank == ANONYMOUS:
                tokens.setdefault(new.person_id, set()).add(old.person_id)
            elif old.rank >= EMAIL:
                forced.add(new.person_id)  # the primary must exist before the merge
                merge = merge_op(new, old, self._record(new.person_id).watermark)
                # Customer.io ignores a merge into a primary it does not have yet, and
                # answers 200: send it later than, and apart from, the identify.
                merges.append(replace(merge, hold_seconds=self.config.merge_delay_seconds))
        identifies = [
            op
            for who in touched.values()
            if who.person_id not in self.redacted
            for op in self._identify(delivery_key, who, tokens.get(who.person_id, set()), forced)
        ]
        return identifies + merges + events

    def _identify(
        self, delivery_key: str, who: Identity, tokens: set[str], forced: set[str]
    ) -> list[Operation]:
        if who.anonymous:
            return []  # an anonymous id has no profile to set attributes on
        record = self._record(who.person_id)
        self._refresh(record)
        attributes = attributes_of(record, self._facts_of(who.person_id))
        anonymous = sorted(tokens)
        if anonymous:
            # Customer.io merges a guest's anonymous events into the person whose
            # identify carries their anonymous_id.
            attributes["anonymous_id"] = anonymous[0]
        digest = hashlib.sha256(json.dumps(attributes, sort_keys=True).encode()).hexdigest()
        ops: list[Operation] = []
        if digest != record.sent_hash or who.person_id in forced:
            record.sent_hash = digest
            key = f"identify:{delivery_key}:{who.person_id}"
            # The person's newest event time, not this delivery's: the attributes are
            # the whole current truth, and an older timestamp would let Customer.io
            # discard them as stale when a late webhook corrects a count.
            ops.append(identify_op(key, who, attributes, record.watermark))
        for extra in anonymous[1:]:
            key = f"identify:{delivery_key}:{who.person_id}:{extra}"
            ops.append(identify_op(key, who, {"anonymous_id": extra}, record.watermark))
        return ops

    def _status(self, change: SubscriptionState, who: Identity) -> None:
        """A status change with no event: the subscription's fact, watermarked."""
        self._record(who.person_id).touch(change.timestamp)
        self._add_fact(status_fact(change, who.person_id))

    def _event(self, track: Track, who: Identity) -> Operation:
        record = self._record(who.person_id)
        record.touch(track.timestamp)
        fact = fact_of(track, who.person_id)
        latest = None
        if fact is not None:
            fact, latest = self._add_fact(fact)
        data = track.payload()
        if track.event is EventName.ORDER_COMPLETED and fact is not None:
            position = self._position(fact, latest)
            # Welcome vs repeat journeys: the order's place among the person's orders
            # by date (a late-arriving earlier order is counted where it belongs). The
            # fields are OrderCompleted's own; set on the JSON to spare a model copy.
            data["is_first_order"] = position == 1
            data["order_count"] = position
        op = event_op(track, who, data)
        subject = _subject(track)
        if subject is None:
            return op
        cart = self.carts.setdefault(subject, Checkout())
        if track.event is EventName.ORDER_COMPLETED:
            if cart.completed_at is None or track.timestamp < cart.completed_at:
                cart.completed_at = track.timestamp
                self.dirty_carts.add(subject)
            self.completed.add(subject)
            return op
        digest = content_digest(data)
        reason = verdict(track.event, cart, digest)
        if reason is None and track.event is EventName.CHECKOUT_STARTED and not cart.started_hash:
            cart.started_hash = digest
            self.started[subject] = digest
            self.dirty_carts.add(subject)
        hold = self.config.cart_update_hold_seconds
        return replace(
            op,
            subject=subject,
            suppressed=reason,
            hold_seconds=hold if track.event is EventName.CART_UPDATED else 0.0,
        )

    def _redact(self, who: Identity, keys: list[str]) -> None:
        """Erase the person, the guest profiles their identifiers lead to, and the keys.

        A guest checkout before the account existed left an anonymous profile (name,
        phone) and an email link; other known people sharing an identifier are not
        touched, only the shared key is.
        """
        self.redacted.append(who.person_id)
        for key in keys:
            linked = self.links.get(key)
            if linked is not None and linked.anonymous:
                self.redacted.append(linked.person_id)
        self.redacted_keys.update(keys)

    # -- after the outbox rows are written -------------------------------------------

    def save(self) -> None:
        """Write the state this batch changed, and apply it to rows already queued."""
        merged = [(old.person_id, self.final(new)) for old, new in self.merges]
        for person_id in self.dirty_records:
            if person_id in self.records:
                self._refresh(self.records[person_id])
        store.save(
            self.conn,
            {key: self.final(who) for key, who in self.new_links.items()},
            [self.records[pid] for pid in self.dirty_records if pid in self.records],
            [self.facts[key] for key in self.dirty_facts],
            {key: self.carts[key] for key in self.dirty_carts},
            merged,
        )
        for old, new in merged:
            self._repoint(old, new)
        self._suppress_completed()
        self._suppress_unchanged()
        for person_id in self.redacted:
            store.forget(self.conn, person_id)
        store.forget_keys(self.conn, self.redacted_keys)
        for shop in self.redacted_shops:
            store.forget_shop(self.conn, shop)

    def _repoint(self, old: str, new: Identity) -> None:
        """A merged person's queued operations go to the person they became."""
        kinds = (OperationKind.IDENTIFY, OperationKind.EVENT, OperationKind.MERGE)
        rows = self.conn.execute(
            sa.select(outbox.c.id, outbox.c.kind, outbox.c.payload).where(
                outbox.c.person_id == old,
                outbox.c.state.in_(QUEUED),
                outbox.c.kind.in_(kinds),
            )
        ).all()
        for row in rows:
            # A queued merge into the old id now merges into the new one.
            field = "primary" if row.kind == OperationKind.MERGE else "identifiers"
            payload = dict(row.payload, **{field: new.identifier})
            self.conn.execute(
                sa.update(outbox)
                .where(outbox.c.id == row.id)
                .values(person_id=new.person_id, payload=payload)
            )

    def _suppress_completed(self) -> None:
        if not self.completed:
            return
        self.conn.execute(
            sa.update(outbox)
            .where(outbox.c.subject.in_(sorted(self.completed)), outbox.c.state.in_(QUEUED))
            .values(state=OutboxState.SUPPRESSED, last_error=COMPLETED)
        )

    def _suppress_unchanged(self) -> None:
        """Cart updates queued before their checkout_started, and equal to it."""
        for subject, digest in self.started.items():
            rows = self.conn.execute(
                sa.select(outbox.c.id, outbox.c.payload).where(
                    outbox.c.subject == subject,
                    outbox.c.state.in_(QUEUED),
                    outbox.c.op_key.startswith(EventName.CART_UPDATED.value + ":"),
                )
            ).all()
            same = [
                row.id
                for row in rows
                if content_digest(row.payload.get("attributes", row.payload.get("data", {})))
                == digest
            ]
            if same:
                self.conn.execute(
                    sa.update(outbox)
                    .where(outbox.c.id.in_(same))
                    .values(
                        state=OutboxState.SUPPRESSED,
                        last_error="no material change since checkout_started",
                    )
                )

    def wake(self) -> int:
        """Waiting deliveries whose key this batch linked go back to pending; how many."""
        if not self.new_links:
            return 0
        if self.conn.execute(sa.select(inbox_waits.c.inbox_id).limit(1)).first() is None:
            return 0
        ids: set[int] = set()
        for chunk in store.chunks(self.new_links):
            query = sa.select(inbox_waits.c.inbox_id).where(inbox_waits.c.key.in_(chunk))
            ids.update(self.conn.execute(query).scalars())
        if ids:
            self.conn.execute(
                sa.update(inbox)
                .where(inbox.c.id.in_(sorted(ids)), inbox.c.state == InboxState.WAITING)
                .values(state=InboxState.PENDING, last_error=None)
            )
            self.conn.execute(sa.delete(inbox_waits).where(inbox_waits.c.inbox_id.in_(sorted(ids))))
        return len(ids)


def _subject(track: Track) -> str | None:
    """The checkout a cart or order event is about (journey guards), if any."""
    if track.event not in (*CART_EVENTS, EventName.ORDER_COMPLETED):
        return None
    cart_id = getattr(track.properties, "cart_id", None)
    if not cart_id:
        return None
    return checkout_key(track.person.source, track.person.account, cart_id)
