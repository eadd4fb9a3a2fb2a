"""Stage 1's stateful step: resolve people, update their state, guard journeys.

Runs inside stage 1's transaction, for a whole batch of mapped deliveries in arrival
order: (1) load the links of every identifier the batch shows (on PostgreSQL after
locking what the batch reads: webhooks.stage1.state.locks), (2) resolve each
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
from datetime import timedelta
from typing import Any

import structlog
from sqlalchemy.engine import Connection

from mappers.actions import (
    Action,
    ExportPersonData,
    Identify,
    OrderPayment,
    RedactPerson,
    RedactShop,
    SubscriptionState,
    Track,
)
from mappers.cart import material_digest
from mappers.taxonomy import EventName
from webhooks.core.hashing import bounded
from webhooks.core.identity import ANONYMOUS, CUSTOMER, Identity
from webhooks.core.operations import (
    Operation,
    OperationKind,
    at,
    delete_op,
    event_op,
    identify_op,
    merge_op,
    unsendable_op,
)
from webhooks.stage1.state import queued, store
from webhooks.stage1.state.erasure import REASON as ERASED
from webhooks.stage1.state.erasure import Erasures, person_ref
from webhooks.stage1.state.guards import CART_EVENTS, Checkout, verdict
from webhooks.stage1.state.identity import (
    IdentityPolicy,
    Resolution,
    anonymous_id,
    direct_identity,
)
from webhooks.stage1.state.keys import checkout_key, names_a_fact, order_link_key
from webhooks.stage1.state.ledger import Ledger
from webhooks.stage1.state.locks import StateLocks
from webhooks.stage1.state.person import (
    CANCELED,
    attributes_of,
    fact_of,
    order_alias,
    order_refs,
    payment_alias,
    status_fact,
)
from webhooks.stage1.state.resolver import Plan, Resolver, person_of

log = structlog.get_logger("webhooks.stage1.state")
MAX_LOCK_ROUNDS = 5  # reads of a batch's links while other workers move them


@dataclass(frozen=True)
class StateConfig:
    """The operator's choices the step needs (from settings)."""

    identity: IdentityPolicy = field(default_factory=IdentityPolicy)
    reporting_currency: str = "USD"
    cart_update_hold_seconds: float = 120.0
    merge_delay_seconds: float = 60.0
    redact_action: str = "delete"  # REDACT_ACTION: delete | suppress
    erasure_retention_days: int = 365  # ERASURE_RETENTION_DAYS
    backfill_live_window_seconds: float = 3600.0  # BACKFILL_LIVE_WINDOW_SECONDS


@dataclass(frozen=True)
class MappedDelivery:
    """One mapped delivery: its inbox key (operation keys derive from it), the provider
    it came from, and its actions."""

    key: str
    provider: str
    actions: list[Action]


@dataclass
class Outcome:
    """One delivery's operations, or the identity key it waits for."""

    ops: list[Operation] = field(default_factory=list)
    wait_on: str | None = None


class StateStep:
    """The step for one batch, bound to stage 1's connection (see the module doc)."""

    def __init__(
        self, conn: Connection, config: StateConfig, locks: StateLocks | None = None
    ) -> None:
        self.conn = conn
        self.config = config
        self.locks = locks or StateLocks(conn)
        self.resolver = Resolver(config.identity, {})
        self.ledger = Ledger(conn, config.reporting_currency)
        self.carts: dict[str, Checkout] = {}
        self.dirty_carts: set[str] = set()
        self.completed: set[str] = set()  # checkouts completed in this batch
        self.started: dict[str, str] = {}  # checkouts started in this batch: digest
        # People whose state is erased: when (the redaction's event time) and on which
        # provider account ("provider:account:") their orders are erased for good.
        self.redacted: dict[str, tuple[int, str]] = {}
        self.redacted_keys: set[str] = set()  # identifiers (emails, tokens) erased
        self.redacted_accounts: list[tuple[str, str, int]] = []  # (provider, account, time)
        self.erased_refs: dict[str, int] = {}  # identity key -> time it was erased
        retention = timedelta(days=config.erasure_retention_days)
        self.erasures = Erasures(conn, retention)
        self.data_requests: list[dict[str, Any]] = []  # rows of the data_requests table

    # -- the batch -------------------------------------------------------------------

    def run(self, deliveries: Sequence[MappedDelivery]) -> list[Outcome]:
        """Operations for each delivery (in order); see the module doc for the steps."""
        resolver = self.resolver
        keys = [[resolver.keys(action) for action in d.actions] for d in deliveries]
        identifiers = {k for row in keys for ks in row for k in ks}
        self.locks.names(identifiers | _named(deliveries))
        erased = self._erased(deliveries, keys)
        live = [d for d, gone in zip(deliveries, erased, strict=True) if not gone]
        tracks = [a for d in live for a in d.actions if isinstance(a, Track)]
        payments = [a for d in live for a in d.actions if isinstance(a, OrderPayment)]
        refs = {ref for t in tracks for ref in order_refs(t)}
        refs |= {key for p in payments for key in _payment_alias(p)}
        facts = {f.fact_key for t in tracks if (f := fact_of(t, ""))}
        holders = self._read_locked(identifiers, facts, refs)
        # An erased delivery resolves no one and teaches nothing.
        plans = [
            Plan() if gone else resolver.plan(d.actions, row)
            for d, row, gone in zip(deliveries, keys, erased, strict=True)
        ]
        people = {
            self.resolver.final(found.identity).person_id
            for plan in plans
            for found in plan.resolutions.values()
            if found.identity is not None
        } | {old.person_id for old, _ in self.resolver.merges}
        self.locks.people(people)  # people first met in this batch (no link led to them)
        self.ledger.load_people(people | holders)
        self.carts = store.load_checkouts(self.conn, {s for t in tracks if (s := _subject(t))})
        for old, new in self.resolver.merges:
            self.ledger.fold(
                old.person_id,
                self.resolver.final(new).person_id,
                old.person_id in self.resolver.typed,
            )
        return [
            Outcome(self._suppressed(delivery))
            if gone
            else Outcome(wait_on=plan.wait_on)
            if plan.wait_on
            else Outcome(self._operations(delivery, plan))
            for delivery, plan, gone in zip(deliveries, plans, erased, strict=True)
        ]

    def _read_locked(self, identifiers: set[str], facts: set[str], refs: set[str]) -> set[str]:
        """Read the links and the named facts while holding the people they lead to.

        Another worker's merge may move a link or a fact to someone else between the
        read and the lock, and an alias leads to an order the batch did not name: read
        again until nothing new turns up. Returns the people holding the named facts.
        """
        for _ in range(MAX_LOCK_ROUNDS):
            self.resolver.links = store.load_links(self.conn, identifiers)
            holders = self.ledger.load_named(facts, refs)
            found = {who.person_id for who in self.resolver.links.values()} | holders
            orders = set(self.ledger.aliases) | set(self.ledger.aliases.values())
            # Both sweeps, always: `or` would skip the people when an order was new.
            new = [self.locks.names(orders), self.locks.people(found)]
            if not any(new):
                return holders  # everything read was locked before this read
        raise store.StateChanged("other workers kept merging the batch's people")

    def _erased(
        self, deliveries: Sequence[MappedDelivery], keys: list[list[list[str]]]
    ) -> list[bool]:
        """Per delivery: is it about something a privacy redaction erased?

        An order or subscription erased is erased for good; an erased person or
        identifier only for events dated at or before the redaction (what follows it
        is new activity). Privacy requests themselves always go through.
        """
        if not self.erasures.any():
            return [False] * len(deliveries)  # nothing ever erased: the common case
        asked: list[list[tuple[Action, list[str]]]] = []
        for delivery, row in zip(deliveries, keys, strict=True):
            about: list[tuple[Action, list[str]]] = []
            for action, action_keys in zip(delivery.actions, row, strict=True):
                if isinstance(action, RedactPerson | RedactShop | ExportPersonData):
                    continue
                who = person_of(action)
                direct = direct_identity(who, self.config.identity) if who else None
                refs = list(action_keys)
                if direct is not None:
                    # A payload naming its own customer is about that customer, never
                    # about whoever else shares the email (as resolve() has it).
                    refs = [k for k in refs if not k.startswith("email:")]
                    refs.append(person_ref(direct.person_id))
                about.append((action, refs))
            asked.append(about)
        known = self.erasures.erased({ref for about in asked for _, refs in about for ref in refs})
        if not known:
            return [False] * len(deliveries)
        verdicts = []
        for delivery, about in zip(deliveries, asked, strict=True):
            gone = any(
                ref in known and (names_a_fact(ref) or _time(action) <= known[ref])
                for action, refs in about
                for ref in refs
            )
            if gone:
                log.info("erased_delivery_suppressed", provider=delivery.provider)
            verdicts.append(gone)
        return verdicts

    def _operations(self, delivery: MappedDelivery, plan: Plan) -> list[Operation]:
        delivery_key = delivery.key
        events: list[Operation] = []
        touched: dict[str, Identity] = {}
        tokens: dict[str, set[str]] = {}
        for index, action in enumerate(delivery.actions):
            if isinstance(action, RedactShop):
                events += self._redact_account(delivery.provider, action)
                continue
            found = plan.resolutions.get(index)
            if isinstance(action, RedactPerson):
                # Remembered whether or not anyone here is known by them.
                self._remember(action, plan.keys.get(index, []))
            if isinstance(action, ExportPersonData):
                self._data_request(delivery_key, action, found)
                continue
            if found is None:
                continue
            if found.identity is None:
                if isinstance(action, Track) and found.skip is None:
                    problem = "no person id, link or token to send it by"
                    events.append(unsendable_op(action, action.payload(), problem))
                continue
            who = self.resolver.final(found.identity)
            if isinstance(action, RedactPerson):
                if not who.anonymous:
                    events.append(delete_op(who, action.timestamp, self.config.redact_action))
                scope = f"{action.person.source}:{action.person.account}:"
                self._redact(who, plan.keys.get(index, []), action.timestamp, scope)
                continue
            if isinstance(action, SubscriptionState):
                self._status(action, who)
                touched[who.person_id] = who
                continue
            if isinstance(action, OrderPayment):
                # Nothing to send: refunds naming the payment now count against the
                # order (the person's totals may change, and their identify with them).
                self.ledger.alias(*_payment_alias(action))
                touched[who.person_id] = who
                continue
            if isinstance(action, Identify):
                typed = found.weak or found.identity.person_id in self.resolver.typed
                if typed and not who.anonymous:
                    # A typed email proves nothing about name, phone or consent: not
                    # when it found the person, nor when it merged the guest into them
                    # later in this batch (a later batch drops them in _fold).
                    continue
                self.ledger.record(who.person_id).report(action.attributes, action.timestamp)
            else:  # a Track: every other kind of action is handled above
                events.append(self._event(action, who))
            touched[who.person_id] = who
            anon = anonymous_id(action.person)
            if anon and not who.anonymous:
                tokens.setdefault(who.person_id, set()).add(anon)
        merges = self._merges(plan, touched, tokens)
        # The primary of a merge must exist first: it is identified even if unchanged.
        forced = {op.person_id for op in merges if op.person_id}
        identifies = [
            op
            for who in touched.values()
            if who.person_id not in self.redacted
            for op in self._identify(delivery_key, who, tokens.get(who.person_id, set()), forced)
        ]
        return identifies + merges + events

    def _merges(
        self, plan: Plan, touched: dict[str, Identity], tokens: dict[str, set[str]]
    ) -> list[Operation]:
        """What the delivery's merges send: anonymous ids on the identify, else a merge."""
        merges: list[Operation] = []
        for old, new in plan.merges:
            new = self.resolver.final(new)
            if new.anonymous:
                continue
            touched[new.person_id] = new
            if old.rank == ANONYMOUS:
                tokens.setdefault(new.person_id, set()).add(old.person_id)
                continue
            merge = merge_op(new, old, self.ledger.record(new.person_id).watermark)
            # Customer.io ignores a merge into a primary it does not have yet, and
            # answers 200: send it later than, and apart from, the identify.
            merges.append(replace(merge, hold_seconds=self.config.merge_delay_seconds))
        return merges

    def _identify(
        self, delivery_key: str, who: Identity, tokens: set[str], forced: set[str]
    ) -> list[Operation]:
        if who.anonymous:
            return []  # an anonymous id has no profile to set attributes on
        record = self.ledger.record(who.person_id)
        self.ledger.refresh(record)
        attributes = attributes_of(record, self.ledger.facts_of(who.person_id))
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
        self.ledger.record(who.person_id).touch(change.timestamp)
        self.ledger.add_fact(status_fact(change, who.person_id))

    def _event(self, track: Track, who: Identity) -> Operation:
        record = self.ledger.record(who.person_id)
        record.touch(track.timestamp)
        fact = fact_of(track, who.person_id)
        latest = None
        alias = order_alias(track)
        if alias is not None:
            self.ledger.alias(*alias)
        if fact is not None:
            fact, latest = self.ledger.add_fact(fact)
        data = track.payload()
        cancelled = None
        if track.event is EventName.ORDER_COMPLETED and fact is not None:
            if fact.status == CANCELED:
                # Cancelled before this report arrived: no post-purchase journey for it
                # (the checkout was still completed: its cart events stay suppressed).
                cancelled = "the order was cancelled before it was reported"
            position = self.ledger.position(fact, latest)
            # Welcome vs repeat journeys: the order's place among the person's orders
            # by date (a late-arriving earlier order is counted where it belongs). The
            # fields are OrderCompleted's own; set on the JSON to spare a model copy.
            data["is_first_order"] = position == 1
            data["order_count"] = position
        op = event_op(track, who, data)
        if cancelled:
            op = replace(op, suppressed=cancelled)
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
        digest = material_digest(data)
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

    def _data_request(
        self, delivery_key: str, action: ExportPersonData, found: Resolution | None
    ) -> None:
        """Keep a data request, open, with the person it names (if anyone is known)."""
        who = self.resolver.final(found.identity) if found and found.identity else None
        provider, account = action.person.source, action.person.account
        self.data_requests.append(
            {
                "request_key": bounded(delivery_key, 512),
                "provider": provider,
                "account": account,
                "request_id": action.request_id,
                "person_id": who.person_id if who and not who.anonymous else None,
                "order_ids": list(action.order_ids),
                "requested_at": at(action.timestamp),
                "answered_at": None,
            }
        )
        # Ids only, never the person's data; the merchant has 30 days to answer.
        log.warning(
            "data_request_recorded",
            provider=provider,
            request_id=action.request_id,
            person_known=bool(who and not who.anonymous),
        )

    def _redact_account(self, provider: str, action: RedactShop) -> list[Operation]:
        """Delete the account's customers at Customer.io, then forget the account here.

        The deletes are queued before the links that find these people are erased (in
        save()); people known by the merchant's own ids may buy elsewhere and stay.
        """
        people = store.account_people(self.conn, provider, action.account)
        if not people:
            log.info("account_redact_unknown", provider=provider, people=0)
        for person_id in people:
            self._erase_person(person_id, action.timestamp, f"{provider}:{action.account}:")
        self.redacted_accounts.append((provider, action.account, action.timestamp))
        erase = self.config.redact_action
        return [delete_op(Identity(pid, CUSTOMER), action.timestamp, erase) for pid in people]

    def _suppressed(self, delivery: MappedDelivery) -> list[Operation]:
        """What an erased delivery would have sent, recorded as suppressed: no person, no
        payload, and keyed by a digest (a fact's own key names its order or checkout, and
        would stand in the way of the fact once the erasure has expired)."""
        ops: list[Operation] = []
        for index, action in enumerate(delivery.actions):
            if isinstance(action, Track):
                key, kind = action.semantic_key, OperationKind.EVENT
            elif isinstance(action, Identify):
                key, kind = f"identify:{delivery.key}:{index}", OperationKind.IDENTIFY
            else:
                continue  # state changes: nothing would have been sent
            hidden = f"erased:{self.erasures.digest(key)}"
            ops.append(Operation(hidden, kind, None, {}, at(action.timestamp), suppressed=ERASED))
        return ops

    def _erase_person(self, person_id: str, when: int, scope: str) -> None:
        """Mark a person redacted as of `when` (the latest, if twice in one batch)."""
        earlier = self.redacted.get(person_id)
        if earlier is None or earlier[0] < when:
            self.redacted[person_id] = (when, scope)

    def _remember(self, action: RedactPerson, keys: list[str]) -> None:
        """What a customer redaction names is erased as of its time (see erasure.py)."""
        orders = [order_link_key(action.person, oid) for oid in action.order_ids]
        for ref in (*keys, *orders):
            self.erased_refs[ref] = max(self.erased_refs.get(ref, 0), action.timestamp)

    def _redact(self, who: Identity, keys: list[str], when: int, scope: str) -> None:
        """Erase the person, the guest profiles their identifiers lead to, and the keys.

        A guest checkout before the account existed left an anonymous profile (name,
        phone) and an email link; other known people sharing an identifier are not
        touched, only the shared key is.
        """
        self._erase_person(who.person_id, when, scope)
        for key in keys:
            linked = self.resolver.links.get(key)
            if linked is not None and linked.anonymous:
                self._erase_person(linked.person_id, when, scope)
        self.redacted_keys.update(keys)

    # -- after the outbox rows are written -------------------------------------------

    def save(self) -> None:
        """Write the state this batch changed, and apply it to rows already queued."""
        merged = [(old.person_id, self.resolver.final(new)) for old, new in self.resolver.merges]
        records, facts, aliases = self.ledger.changed()
        store.save(
            self.conn,
            {key: self.resolver.final(who) for key, who in self.resolver.new_links.items()},
            records,
            facts,
            {key: self.carts[key] for key in self.dirty_carts},
            merged,
            aliases,
        )
        for old, new in merged:
            queued.repoint(self.conn, old, new)
        queued.suppress_completed(self.conn, self.completed)
        queued.suppress_unchanged(self.conn, self.started)
        self._remember_erased()
        for person_id in self.redacted:
            store.forget(self.conn, person_id)
        store.forget_keys(self.conn, self.redacted_keys)
        for provider, account, _ in self.redacted_accounts:
            store.forget_account(self.conn, provider, account)
        store.record_requests(self.conn, self.data_requests)

    def _remember_erased(self) -> None:
        """Remember what this batch's redactions erase, before it is forgotten here."""
        refs = dict(self.erased_refs)

        def erase(ref: str, when: int) -> None:
            refs[ref] = max(refs.get(ref, 0), when)

        for person_id, (when, scope) in self.redacted.items():
            erase(person_ref(person_id), when)
            for key in store.person_link_keys(self.conn, person_id):
                # Orders and subscriptions are erased for good only where the redaction
                # applies: a Shopify redaction does not end the person's Stripe billing.
                if not names_a_fact(key) or key.startswith(scope):
                    erase(key, when)
        for provider, account, when in self.redacted_accounts:
            for key in store.account_link_keys(self.conn, provider, account):
                erase(key, when)
        if refs or self.redacted:
            self.erasures.remember(refs)

    def wake(self) -> int:
        """Waiting deliveries whose key this batch linked go back to pending; how many."""
        return queued.wake(self.conn, self.resolver.new_links)


def _time(action: Action) -> int:
    return int(getattr(action, "timestamp", 0))


def _payment_alias(payment: OrderPayment) -> tuple[str, str]:
    order = payment.person.order_id or ""  # required by OrderPayment's validator
    return payment_alias(payment.person, payment.payment_id, order)


def _named(deliveries: Sequence[MappedDelivery]) -> set[str]:
    """The orders, facts and checkouts a batch reads by name (locked before reading)."""
    names: set[str] = set()
    for delivery in deliveries:
        for action in delivery.actions:
            if isinstance(action, Track):
                names |= order_refs(action)
                fact = fact_of(action, "")
                subject = _subject(action)
                names |= {n for n in (fact and fact.fact_key, subject) if n}
            elif isinstance(action, OrderPayment):
                names.update(_payment_alias(action))
            elif isinstance(action, SubscriptionState):
                names.add(status_fact(action, "").fact_key)
    return names


def _subject(track: Track) -> str | None:
    """The checkout a cart or order event is about (journey guards), if any."""
    if track.event not in (*CART_EVENTS, EventName.ORDER_COMPLETED):
        return None
    cart_id = getattr(track.properties, "cart_id", None)
    if not cart_id:
        return None
    return checkout_key(*track.person.checkout_origin(), cart_id)
