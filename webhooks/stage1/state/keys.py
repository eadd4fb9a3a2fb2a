"""Identity keys: every identifier a payload shows, spelled so one table can link them.

A key names one identifier in one namespace: `stripe:acct_1:customer:cus_9`,
`shopify:shop.myshopify.com:order:42`, `email:ann@example.com`. Provider ids are scoped
to their account (ids of two shops may collide); emails are global, because one person
buying on two stores of one merchant is still one person.
"""

from __future__ import annotations

from mappers.actions import Person, Track
from mappers.taxonomy import EventName
from webhooks.core.hashing import bounded as bounded_to

MAX_KEY = 512  # the identity_links.key column


def _scoped(person_or_source: Person | tuple[str, str], kind: str, value: str) -> str:
    if isinstance(person_or_source, Person):
        source, account = person_or_source.source, person_or_source.account
    else:
        source, account = person_or_source
    return bounded(f"{source}:{account}:{kind}:{value}")


def bounded(key: str) -> str:
    """`key`, or its hash when it would not fit the column (never a refused batch)."""
    return bounded_to(key, MAX_KEY)


def email_key(email: str, person: Person | None = None, isolated: bool = False) -> str:
    """The key of an email address (case-insensitive, as mailboxes are in practice).

    Global, except on an `isolated` account (a Stripe connected account): that is another
    merchant, whose buyers must never resolve to the platform's or a third merchant's
    people.
    """
    address = email.strip().lower()
    if person is not None and isolated:
        return bounded(f"email:{person.account}:{address}")
    return bounded("email:" + address)


def customer_key(person: Person) -> str | None:
    """The key of the provider customer id, if the payload names one."""
    return _scoped(person, "customer", person.customer_id) if person.customer_id else None


def checkout_key(source: str, account: str, cart_id: str) -> str:
    """The key of a checkout (Shopify checkout token, Stripe Checkout Session id)."""
    return _scoped((source, account), "checkout", cart_id)


def person_keys(person: Person, isolated: bool = False) -> list[str]:
    """Every key a Person's hints give, strongest (most specific) first; email last.

    `isolated`: the person's account is another merchant's (see email_key).
    """
    keys = [customer_key(person)]
    if person.checkout_token:
        keys.append(checkout_key(*person.checkout_origin(), person.checkout_token))
    if person.cart_token:
        keys.append(_scoped(person, "cart", person.cart_token))
    if person.anonymous_id:
        keys.append(_scoped(person, "anonymous", person.anonymous_id))
    if person.order_id:
        keys.append(_scoped(person, "order", person.order_id))
    if person.subscription_id:
        keys.append(_scoped(person, "subscription", person.subscription_id))
    if person.email:
        keys.append(email_key(person.email, person, isolated))
    return [key for key in keys if key]


def track_keys(track: Track) -> list[str]:
    """Keys of the objects an event is about, which later events may name alone.

    An order event links its order (and Stripe PaymentIntent) id so a refund naming only
    the order finds the buyer; a subscription event links the subscription so an event
    naming only the contract does.
    """
    props = track.properties
    origin = (track.person.source, track.person.account)
    keys: list[str] = []
    for field, kind in (
        ("order_id", "order"),
        ("payment_id", "order"),
        ("subscription_id", "subscription"),
        ("invoice_id", "order"),
    ):
        value = getattr(props, field, None)
        if isinstance(value, str) and value:
            keys.append(_scoped(origin, kind, value))
    if track.event is EventName.ORDER_COMPLETED and getattr(props, "cart_id", None):
        keys.append(checkout_key(*origin, props.cart_id))  # type: ignore[attr-defined]
    return keys


def names_a_fact(key: str) -> bool:
    """True for the key of an order (payment, invoice) or a subscription: a business
    object of one person, which a later report may name alone."""
    return ":order:" in key or ":subscription:" in key


def order_link_key(person: Person, order_id: str) -> str:
    """The key of an order of the person's account, as order events link it."""
    return _scoped(person, "order", order_id)
