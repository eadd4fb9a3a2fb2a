"""Server-truth person attributes, computed the same whatever order webhooks arrive in.

Two kinds of state, both order-independent by construction:
- reported attributes (email, names, phone, consent, ...): each keeps the value of its
  newest report by event time (ties broken by value, so never by arrival);
- facts (orders, refunds, subscriptions), one row per business object: order count,
  first/last order date and lifetime value are aggregates over them, and a
  subscription's status comes from its newest report (a per-object watermark).
"""

from __future__ import annotations

import json
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


def _contribution(fact: Fact | None, currency: str) -> Decimal:
    """What a fact adds to lifetime value in `currency` (refunds subtract)."""
    if fact is None or fact.amount is None or fact.currency != currency:
        return Decimal(0)
    return fact.amount if fact.kind == "order" else -fact.amount


@dataclass
class Totals:
    """Order count, dates and lifetime value, kept up to date fact by fact.

    Each fact contributes once (a repeat report contributes only its difference), and
    sums, minimums and maximums do not care about order, so the totals are the same
    whatever order facts arrive in. The one move a maximum cannot undo (an order's date
    moving earlier when it was the latest) marks the totals stale, to be recomputed from
    every fact.
    """

    order_count: int = 0
    first_order_at: int | None = None
    last_order_at: int | None = None
    value: Decimal = Decimal(0)
    currency: str | None = None  # what `value` is counted in
    stale: bool = False

    @classmethod
    def of(cls, facts: list[Fact], currency: str) -> Totals:
        """The totals of a complete list of facts."""
        totals = cls(currency=currency)
        for fact in facts:
            totals.add(None, fact)
        return totals

    def add(self, old: Fact | None, new: Fact) -> None:
        """Account for a new fact, or for `new` replacing its earlier report `old`."""
        if new.kind == "order":
            if old is None:
                self.order_count += 1
            elif old.first_at > new.first_at and old.first_at == self.last_order_at:
                self.stale = True  # the latest order moved earlier: the max must be redone
            self.first_order_at = _min(self.first_order_at, new.first_at)
            self.last_order_at = max(self.last_order_at or new.first_at, new.first_at)
        currency = self.currency or ""
        self.value += _contribution(new, currency) - _contribution(old, currency)

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

    def combine(self, newer: Fact) -> Fact:
        """This fact with another report of it: earliest date, newest values."""
        first_at = min(self.first_at, newer.first_at)
        if _rank(newer) > _rank(self):
            return replace(newer, first_at=first_at, person_id=self.person_id)
        return replace(self, first_at=first_at)


def _rank(fact: Fact) -> tuple[int, int, str]:
    # Newest report wins; at the same second the later status in a lifecycle does
    # (canceled after active), then the value, so arrival order never decides.
    status = STATUS_PRIORITY[::-1].index(fact.status) if fact.status in STATUS_PRIORITY else -1
    return (fact.watermark, -status, f"{fact.amount}|{fact.currency}|{fact.status}")


# Events that report money moving: the fact's kind, and the properties naming its
# object and its amount.
MONEY_FACTS = {
    EventName.ORDER_COMPLETED: ("order", "order_id", "total"),
    EventName.REFUND_ISSUED: ("refund", "refund_id", "amount"),
}


def fact_of(track: Track, person_id: str) -> Fact | None:
    """The fact an event reports about its person, if it reports one."""
    props = track.properties
    at = track.timestamp
    if track.event in MONEY_FACTS:
        kind, object_id, amount = MONEY_FACTS[track.event]
        return Fact(
            _fact_key(kind, track.person, getattr(props, object_id)),
            person_id,
            kind,
            at,
            at,
            amount=getattr(props, amount),
            currency=props.currency,  # type: ignore[attr-defined]
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
