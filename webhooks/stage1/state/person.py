"""Server-truth person attributes, computed the same whatever order webhooks arrive in.

Two kinds of state, both order-independent by construction:
- reported attributes (email, names, phone, consent, ...): each keeps the value of its
  newest report by event time (ties broken by value, so never by arrival);
- facts (orders, refunds, subscriptions), one row per business object: order count,
  first/last order date and lifetime value are aggregates over them, and a
  subscription's status comes from its newest report (a per-object watermark).

Lifetime value is counted per order: an order adds its total less the refunds that name
it (or one of its aliases: a Stripe invoice's PaymentIntent), never less than nothing;
a cancelled order adds nothing and is not counted; a refund naming an order the service
never saw subtracts nothing (it may be of a purchase before go-live, or of a payment the
mappers ignore: the total never goes below what the service can account for).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any

from mappers.actions import Person, SubscriptionState, Track
from mappers.money import json_number
from mappers.taxonomy import EventName, PersonAttributes

# The order in which a person's subscriptions decide `subscription_status`: one live
# subscription makes the person a subscriber, whatever happened to the others.
STATUS_PRIORITY = (
    "active",
    "trialing",
    "past_due",
    "unpaid",
    "paused",
    "incomplete",
    "canceled",
    "incomplete_expired",
    "expired",
)
# What a subscription event means when the payload carries no status.
EVENT_STATUS = {
    EventName.SUBSCRIPTION_CREATED: "active",
    EventName.SUBSCRIPTION_PAUSED: "paused",
    EventName.SUBSCRIPTION_RESUMED: "active",
    EventName.SUBSCRIPTION_CANCELED: "canceled",
    EventName.TRIAL_ENDING: "trialing",
}


def _order_key(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


CANCELED = "canceled"  # an order's status once cancelled or voided: it stays so


def counted(fact: Fact | None) -> bool:
    """True for an order that counts: in order_count, the order dates and the value."""
    return fact is not None and fact.kind == "order" and fact.status != CANCELED


def order_value(order: Fact | None, refunds: Iterable[Fact], currency: str) -> Decimal:
    """What one order adds to lifetime value in `currency`: its total less its refunds.

    Never below zero, whatever arrives (a cancellation refunded as well, refunds larger
    than the order): nothing is subtracted twice or beyond the order.
    """
    if not counted(order) or order is None or order.amount is None:
        return Decimal(0)
    if order.currency != currency:
        return Decimal(0)
    refunded = sum(
        (r.amount for r in refunds if r.amount is not None and r.currency == order.currency),
        Decimal(0),
    )
    return max(Decimal(0), order.amount - refunded)


@dataclass
class Totals:
    """Order count, dates and lifetime value, kept up to date fact by fact.

    Each order counts once (a repeat report changes only what differs), and counts,
    minimums and maximums do not care about order, so the totals are the same whatever
    order facts arrive in. The moves a minimum or maximum cannot undo (an order's date
    moving earlier when it was the latest, a first or last order cancelled) mark the
    totals stale, to be recomputed from every fact. `value` is kept by the caller, one
    order's refunds at a time (`order_value`).
    """

    order_count: int = 0
    first_order_at: int | None = None
    last_order_at: int | None = None
    value: Decimal = Decimal(0)
    currency: str | None = None  # what `value` is counted in
    stale: bool = False

    @classmethod
    def of(cls, facts: Iterable[Fact], currency: str, aliases: Mapping[str, str]) -> Totals:
        """The totals of a person's orders in `facts`, less the refunds in `facts` naming them.

        `facts` holds every order of the person and every refund of those orders (which
        may be held by someone else); `aliases` maps other names of orders to their keys.
        """
        facts = list(facts)
        totals = cls(currency=currency)
        refunds = refunds_by_order(facts, aliases)
        for fact in facts:
            if fact.kind == "order":
                totals.add(None, fact)
                totals.value += order_value(fact, refunds.get(fact.fact_key, ()), currency)
        return totals

    def add(self, old: Fact | None, new: Fact) -> None:
        """Count an order, or `new` replacing its earlier report `old`, once (not its value)."""
        was, now = counted(old), counted(new)
        if was and now and old is not None:
            if old.first_at > new.first_at and old.first_at == self.last_order_at:
                self.stale = True  # the latest order moved earlier: the max must be redone
        elif was and old is not None:
            self.order_count -= 1  # cancelled: it no longer counts
            if old.first_at in (self.first_order_at, self.last_order_at):
                self.stale = True  # it bounded the dates: they must be redone
            return
        elif now:
            self.order_count += 1
        else:
            return
        self.first_order_at = _min(self.first_order_at, new.first_at)
        self.last_order_at = max(self.last_order_at or new.first_at, new.first_at)

    def attributes(self) -> dict[str, Any]:
        """The attributes these totals give (dates as Unix seconds)."""
        attributes: dict[str, Any] = {
            "order_count": self.order_count,
            "lifetime_value": json_number(self.value),
        }
        if self.first_order_at is not None:
            attributes["first_order_date"] = self.first_order_at
        if self.last_order_at is not None:
            attributes["last_order_date"] = self.last_order_at
        return attributes


def _min(current: int | None, value: int) -> int:
    return value if current is None else min(current, value)


@dataclass
class PersonRecord:
    """One person's reported attributes ({name: [value, event time]}) and totals."""

    person_id: str
    attributes: dict[str, list[Any]] = field(default_factory=dict)
    watermark: int = 0  # newest event time known of the person: the identify timestamp
    sent_hash: str | None = None
    totals: Totals = field(default_factory=Totals)

    def report(self, attributes: PersonAttributes, timestamp: int) -> None:
        """Apply one report: each attribute keeps its newest value."""
        for name, value in attributes.model_dump(mode="json", exclude_none=True).items():
            self._offer(name, value, timestamp)
        self.touch(timestamp)

    def _offer(self, name: str, value: Any, timestamp: int) -> None:
        current = self.attributes.get(name)
        if (
            current is None
            or timestamp > current[1]
            or (timestamp == current[1] and _order_key(value) > _order_key(current[0]))
        ):
            self.attributes[name] = [value, timestamp]

    def touch(self, timestamp: int) -> None:
        """Something about the person happened at `timestamp`."""
        self.watermark = max(self.watermark, timestamp)

    def absorb(self, other: PersonRecord) -> None:
        """Fold another record of the same human (a merged profile) into this one."""
        for name, (value, timestamp) in other.attributes.items():
            self._offer(name, value, timestamp)
        self.touch(other.watermark)


@dataclass(frozen=True)
class Fact:
    """One business object of a person: an order, a refund or a subscription."""

    fact_key: str
    person_id: str
    kind: str  # order | refund | subscription
    first_at: int  # earliest event time reported (an order's date)
    watermark: int  # event time of the report amount/status came from
    amount: Decimal | None = None
    currency: str | None = None
    status: str | None = None
    # A refund: the key of the order it names (which may be an alias of the order).
    parent: str | None = None

    def combine(self, newer: Fact) -> Fact:
        """This fact with another report of it: earliest date, newest values.

        A cancelled order stays cancelled, whichever report is newer: Shopify cannot
        undo a cancellation, and a late orders/paid must not count it again.
        """
        first_at = min(self.first_at, newer.first_at)
        if _rank(newer) > _rank(self):
            combined = replace(newer, first_at=first_at, person_id=self.person_id)
        else:
            combined = replace(self, first_at=first_at)
        if combined.kind == "order" and CANCELED in (self.status, newer.status):
            combined = replace(combined, status=CANCELED)
        return combined


def _rank(fact: Fact) -> tuple[int, int, str]:
    # Newest report wins; at the same second the later status in a lifecycle does
    # (canceled after active), then the value, so arrival order never decides.
    status = STATUS_PRIORITY[::-1].index(fact.status) if fact.status in STATUS_PRIORITY else -1
    return (fact.watermark, -status, f"{fact.amount}|{fact.currency}|{fact.status}")


def refunds_by_order(facts: Iterable[Fact], aliases: Mapping[str, str]) -> dict[str, list[Fact]]:
    """The refunds among `facts`, by the key of the order they name (aliases followed)."""
    found: dict[str, list[Fact]] = {}
    for fact in facts:
        if fact.kind == "refund" and fact.parent:
            found.setdefault(aliases.get(fact.parent, fact.parent), []).append(fact)
    return found


# Events that report money moving: the fact's kind, the properties naming its object
# and its amount, and the status the report gives it.
MONEY_FACTS = {
    EventName.ORDER_COMPLETED: ("order", "order_id", "total", None),
    EventName.ORDER_CANCELED: ("order", "order_id", "total", CANCELED),
    EventName.REFUND_ISSUED: ("refund", "refund_id", "amount", None),
}


def fact_of(track: Track, person_id: str) -> Fact | None:
    """The fact an event reports about its person, if it reports one."""
    props = track.properties
    at = track.timestamp
    if track.event in MONEY_FACTS:
        kind, object_id, amount, status = MONEY_FACTS[track.event]
        order = getattr(props, "order_id", None) if kind == "refund" else None
        return Fact(
            _fact_key(kind, track.person, getattr(props, object_id)),
            person_id,
            kind,
            at,
            at,
            amount=getattr(props, amount),
            currency=props.currency,  # type: ignore[attr-defined]
            status=status,
            parent=order_key(track.person, order) if order else None,
        )
    if track.event in EVENT_STATUS:
        status = _status(getattr(props, "status", None)) or EVENT_STATUS[track.event]
        if track.event is EventName.SUBSCRIPTION_CANCELED and getattr(
            props, "cancel_at_period_end", False
        ):
            # A scheduled cancel: still a subscriber until the period ends.
            status = _status(getattr(props, "status", None)) or "active"
        subscription = props.subscription_id  # type: ignore[attr-defined]
        key = _fact_key("subscription", track.person, subscription)
        return Fact(key, person_id, "subscription", at, at, status=status)
    return None


def status_fact(change: SubscriptionState, person_id: str) -> Fact:
    """The subscription fact of a status change that has no event of its own."""
    at = change.timestamp
    key = _fact_key("subscription", change.person, change.subscription_id)
    return Fact(key, person_id, "subscription", at, at, status=_status(change.status))


def _fact_key(kind: str, person: Person, object_id: str) -> str:
    """`<kind>:<source>:<account>:<id>`: one business object, whichever event names it."""
    return f"{kind}:{person.source}:{person.account}:{object_id}"


def order_key(person: Person, order_id: str) -> str:
    """The fact key of an order (or of another name of it, an alias)."""
    return _fact_key("order", person, order_id)


def order_alias(track: Track) -> tuple[str, str] | None:
    """(alias, order key) when an order event names the order's payment under another id.

    A Stripe invoice's PaymentIntent: its refunds name the PaymentIntent, not the invoice.
    """
    if track.event is not EventName.ORDER_COMPLETED:
        return None
    props = track.properties
    payment = getattr(props, "payment_id", None)
    order = getattr(props, "order_id", None)
    if not payment or not order or payment == order:
        return None
    return payment_alias(track.person, payment, order)


def payment_alias(person: Person, payment_id: str, order_id: str) -> tuple[str, str]:
    """(alias, order key): the payment's name for an order of the person's account."""
    return order_key(person, payment_id), order_key(person, order_id)


def order_refs(track: Track) -> set[str]:
    """The order keys and aliases an event's facts need to be counted (see Ledger.load)."""
    fact = fact_of(track, "")
    refs: set[str] = set()
    if fact is not None and fact.kind == "order":
        refs.add(fact.fact_key)
    elif fact is not None and fact.parent:
        refs.add(fact.parent)
    alias = order_alias(track)
    if alias is not None:
        refs.update(alias)
    return refs


# Provider spellings of one status, so a segment on `canceled` finds every canceller.
SPELLINGS = {"cancelled": "canceled", "cancel": "canceled", "ended": "canceled"}


def _status(raw: str | None) -> str | None:
    if not raw:
        return None
    status = raw.strip().lower()
    return SPELLINGS.get(status, status)


def subscription_status(facts: list[Fact]) -> str | None:
    """The liveliest status among a person's subscriptions, if they have any."""
    statuses = [f.status for f in facts if f.kind == "subscription" and f.status]
    if not statuses:
        return None
    return min(
        statuses, key=lambda s: (STATUS_PRIORITY.index(s) if s in STATUS_PRIORITY else 99, s)
    )


def attributes_of(record: PersonRecord, subscriptions: list[Fact]) -> dict[str, Any]:
    """Every attribute to identify the person with: reported, then computed."""
    attributes = {name: value for name, (value, _) in sorted(record.attributes.items())}
    attributes.update(record.totals.attributes())
    status = subscription_status(subscriptions)
    if status is not None:
        attributes["subscription_status"] = status
    return attributes
