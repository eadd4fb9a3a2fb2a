"""Resolving a batch's people: links loaded once, then each delivery in arrival order.

Pure rules live in webhooks.stage1.state.identity; this keeps the batch's links in memory,
learns from each delivery, and follows merges (an id merged into another within the
batch resolves to the survivor).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import structlog

from mappers.actions import Action, ExportPersonData, OrderPayment, Person, RedactPerson, Track
from webhooks.core.identity import Identity
from webhooks.stage1.state.identity import IdentityPolicy, Resolution, learn, resolve
from webhooks.stage1.state.keys import names_a_fact, order_link_key, person_keys, track_keys

log = structlog.get_logger("webhooks.stage1.state")


@dataclass
class Plan:
    """How one delivery resolves: per action, and the merges it caused."""

    resolutions: dict[int, Resolution] = field(default_factory=dict)
    keys: dict[int, list[str]] = field(default_factory=dict)
    merges: list[tuple[Identity, Identity]] = field(default_factory=list)
    wait_on: str | None = None


def person_of(action: Action) -> Person | None:
    """The Person an action is about, if any."""
    return getattr(action, "person", None)


class Resolver:
    """The batch's links and merges; `plan` resolves one delivery and learns from it."""

    def __init__(self, policy: IdentityPolicy, links: dict[str, Identity]) -> None:
        self.policy = policy
        self.links = links  # every link of the batch's identifiers, kept current
        self.new_links: dict[str, Identity] = {}  # to write back
        self.parent: dict[str, Identity] = {}  # merged id -> the identity it became
        self.merges: list[tuple[Identity, Identity]] = []
        self.typed: set[str] = set()  # merged through a typed email: attributes dropped

    def final(self, identity: Identity) -> Identity:
        """The identity after every merge of this batch."""
        while identity.person_id in self.parent:
            identity = self.parent[identity.person_id]
        return identity

    def keys(self, action: Action) -> list[str]:
        who = person_of(action)
        if who is None:
            return []
        keys = person_keys(who, self.policy.isolated(who))
        if isinstance(action, Track):
            keys += [key for key in track_keys(action) if key not in keys]
        if isinstance(action, OrderPayment):
            # A refund naming only the payment finds them.
            keys.append(order_link_key(action.person, action.payment_id))
        return keys

    def plan(self, actions: list[Action], keys: list[list[str]]) -> Plan:
        plan = Plan()
        seen: dict[Person, Resolution] = {}  # an identify and its event share one Person
        for index, action in enumerate(actions):
            who = person_of(action)
            if who is None:
                continue
            found = seen.get(who) or resolve(who, keys[index], self.links, self.policy)
            seen[who] = found
            if found.identity is not None and found.identity.person_id in self.parent:
                found = replace(found, identity=self.final(found.identity))
            if found.wait_on is not None:
                # Nothing of the delivery is applied until its person is known, so
                # waking it later applies everything exactly once.
                return Plan(wait_on=found.wait_on)
            plan.resolutions[index] = found
            plan.keys[index] = keys[index]
        taught: set[tuple[Person | None, Identity]] = set()
        for index, found in plan.resolutions.items():
            action = actions[index]
            if found.identity is None or isinstance(action, RedactPerson | ExportPersonData):
                continue  # a privacy request must not teach links to a person
            identity = self.final(found.identity)
            lessons = plan.keys[index]
            if found.weak:
                # Met through an email anyone can type: its checkout, cart and email must
                # not become the person's (they could move someone else's events). Its
                # orders and subscriptions are the person's facts, and later reports
                # naming only them (a refund) must find the person: linked if nobody
                # has them yet, never taken over from anyone.
                lessons = [k for k in lessons if names_a_fact(k) and k not in self.links]
            lesson = (person_of(action), identity)
            if isinstance(action, Track) or lesson not in taught:
                taught.add(lesson)
                self._learn(plan, lessons, identity)
        return plan

    def _learn(self, plan: Plan, keys: list[str], identity: Identity) -> None:
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
