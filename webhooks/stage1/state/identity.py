"""Who a payload is about: one canonical person id per human, from hints and links.

Rules, strongest first (see docs/identity.md):
1. the merchant's internal id in the payload (Stripe metadata or client_reference_id,
   a configured Shopify metafield or note attribute) is the person id;
2. otherwise the provider customer id, through its configured format;
3. otherwise a link learned from an earlier event that showed one of this payload's
   identifiers (customer, checkout, cart, order, subscription, email) beside a person;
4. otherwise the guest policy: an anonymous id from the checkout or cart token, the
   email (for email-keyed workspaces), or nothing.
A link is only ever taken over by a stronger id; when a customer-id or email profile
is taken over by the internal id, the two Customer.io profiles are merged.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from mappers.actions import Person
from webhooks.core.identity import ANONYMOUS, CUSTOMER, EMAIL, INTERNAL, Identity, safe_id
from webhooks.errors import UnknownProvider
from webhooks.providers import registry
from webhooks.stage1.state.keys import email_key, names_a_fact

GuestPolicy = Literal["anonymous", "email", "skip"]


def _defaults() -> tuple[dict[str, str], dict[str, str]]:
    """Each registered provider's default person-id format, and own accounts."""
    specs = registry.specs()
    formats = {spec.name: spec.person_id_format for spec in specs}
    own = {spec.name: spec.own_account for spec in specs if spec.own_account is not None}
    return formats, own


@dataclass(frozen=True)
class IdentityPolicy:
    """The operator's identity choices (from settings and the provider registry)."""

    # Provider name -> template of a customer's person id ({customer_id}, {account}).
    person_id_formats: Mapping[str, str] = field(default_factory=lambda: _defaults()[0])
    # Provider name -> its own account, for providers whose other accounts are other
    # merchants (Stripe Connect): their ids and emails are kept apart.
    own_accounts: Mapping[str, str] = field(default_factory=lambda: _defaults()[1])
    guest_policy: GuestPolicy = "anonymous"

    def person_id_format(self, source: str) -> str:
        """The person-id template of `source`; an unknown provider is an error."""
        try:
            return self.person_id_formats[source]
        except KeyError:
            raise UnknownProvider(f"no person-id format for provider {source!r}") from None

    def isolated(self, person: Person) -> bool:
        """True when `person` belongs to another merchant's account (Stripe Connect)."""
        own = self.own_accounts.get(person.source)
        return own is not None and person.account != own


@dataclass(frozen=True)
class Resolution:
    """The outcome for one payload: a person, or why there is none yet."""

    identity: Identity | None = None
    wait_on: str | None = None  # a key that, once linked, will name the person
    skip: str | None = None  # the guest policy says: send nothing (reason)
    # Found only through an email anyone can type at a guest checkout, or through the
    # order or subscription a payload without a customer names: the events go to the
    # person, but what the payload says about them (name, phone, consent) does not.
    weak: bool = False


def direct_identity(person: Person, policy: IdentityPolicy) -> Identity | None:
    """The person id the payload itself gives (rules 1 and 2), if any."""
    internal = person.internal_id
    connected = policy.isolated(person)
    if internal:
        # Connected accounts are other merchants: their ids may collide with ours.
        return Identity(
            safe_id(f"{person.account}:{internal}" if connected else internal), INTERNAL
        )
    if person.customer_id:
        template = policy.person_id_format(person.source)
        if connected and "{account}" not in template:
            # stripe:{customer_id} becomes stripe:acct_1:{customer_id} for a connected
            # account: customer ids are unique per account, not across them.
            template = template.replace("{customer_id}", "{account}:{customer_id}")
        rendered = template.format(customer_id=person.customer_id, account=person.account)
        return Identity(safe_id(rendered), CUSTOMER)
    return None


def anonymous_id(person: Person) -> str | None:
    """The anonymous id of a guest, scoped to its source: the one the sender chose
    (`app:<id>`), else the checkout or cart token (`shopify:<token>`). Scoped, because
    a person id is one namespace: a sender's bare "42" must never be user 42."""
    token = person.anonymous_id or person.checkout_token or person.cart_token
    return safe_id(f"{person.source}:{token}") if token else None


def _strongest(
    keys: Iterable[str], links: Mapping[str, Identity]
) -> tuple[str, Identity] | tuple[None, None]:
    best: tuple[str, Identity] | tuple[None, None] = (None, None)
    for key in keys:  # strongest key kind first: the first of equal rank wins
        found = links.get(key)
        if found is not None and (best[1] is None or found.rank > best[1].rank):
            best = (key, found)
    return best


def resolve(
    person: Person,
    keys: list[str],
    links: Mapping[str, Identity],
    policy: IdentityPolicy,
) -> Resolution:
    """Resolve one payload's person from its hints (`keys`) and the links known so far."""
    direct = direct_identity(person, policy)
    if direct is not None:
        # A link may upgrade a customer id to the internal id an earlier event showed
        # beside it. Never through an email: two customers may share one address.
        email = email_key(person.email, person, policy.isolated(person)) if person.email else None
        _, linked = _strongest((key for key in keys if key != email), links)
        if linked is not None and linked.rank > direct.rank:
            return Resolution(linked)
        return Resolution(direct)
    key, linked = _strongest(keys, links)
    if linked is not None and (linked.rank > ANONYMOUS or policy.guest_policy == "anonymous"):
        # A payload naming no customer, found through an email anyone can type or
        # through an order or subscription alone (a guest's payment linked to the
        # person), is the person's event, not the person's details.
        weak = bool(key and (key.startswith("email:") or names_a_fact(key)))
        return Resolution(linked, weak=weak)
    if policy.guest_policy == "skip" and (person.email or anonymous_id(person)):
        return Resolution(skip="a guest, and GUEST_POLICY=skip")
    if policy.guest_policy == "email" and person.email:
        return Resolution(Identity(person.email.strip().lower(), EMAIL))
    anon = anonymous_id(person)
    if anon is not None and policy.guest_policy == "anonymous":
        return Resolution(Identity(anon, ANONYMOUS))
    waitable = [key for key in keys if names_a_fact(key)]
    if waitable:
        return Resolution(wait_on=waitable[0])
    if linked is not None:
        return Resolution(linked)
    return Resolution()


@dataclass
class Learned:
    """What one payload taught: new links, and profiles a stronger id takes over."""

    links: dict[str, Identity] = field(default_factory=dict)
    merges: list[tuple[Identity, Identity]] = field(default_factory=list)  # (old, new)
    conflicts: list[str] = field(default_factory=list)
    # Anonymous ids merged only through a typed email: their attributes are not the
    # person's (see Resolution.weak), their events and facts are.
    typed: set[str] = field(default_factory=set)


def learn(keys: list[str], identity: Identity, links: Mapping[str, Identity]) -> Learned:
    """Link every key to `identity` unless a stronger (or an equal, different) id has it.

    Two different ids of equal rank on one key (two customers sharing an email, one
    Stripe customer whose metadata names another internal id) are a conflict, never a
    merge: the smaller id keeps the link, so the outcome does not depend on which
    arrived first.
    """
    learned = Learned()
    for key in keys:
        old = links.get(key)
        if old == identity:
            continue
        if old is None or old.rank < identity.rank:
            learned.links[key] = identity
            # A shared object (customer, checkout, order, ...) proves two ids are one
            # human. A shared email does not prove two customers are one (family
            # accounts, a typo): that link moves without a merge. A guest's email does
            # lead to the person, as it would have had the person been known first:
            # the guest's anonymous events and orders follow, not what they typed.
            by_email = key.startswith("email:")
            proves = not by_email or (old is not None and old.rank in (ANONYMOUS, EMAIL))
            if proves and old is not None and old not in (m[0] for m in learned.merges):
                learned.merges.append((old, identity))
                if by_email and old.rank == ANONYMOUS:
                    learned.typed.add(old.person_id)
        elif old.rank == identity.rank and identity.person_id < old.person_id:
            learned.links[key] = identity
            learned.conflicts.append(key)
        elif old.rank == identity.rank:
            learned.conflicts.append(key)
    return learned
