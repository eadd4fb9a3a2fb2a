"""Identity rules: ids from the payload, links learned, guests, merges and conflicts."""

from __future__ import annotations

import pytest

from mappers.actions import Person
from webhooks.stage1.state.identity import (
    ANONYMOUS,
    CUSTOMER,
    EMAIL,
    INTERNAL,
    Identity,
    IdentityPolicy,
    direct_identity,
    learn,
    resolve,
    safe_id,
)
from webhooks.stage1.state.keys import email_key, person_keys

POLICY = IdentityPolicy()
SHOP = "shop.myshopify.com"


def stripe(**hints: str) -> Person:
    return Person(source="stripe", account="platform", **hints)


def shopify(**hints: str) -> Person:
    return Person(source="shopify", account=SHOP, **hints)


@pytest.mark.parametrize(
    ("person", "policy", "expected"),
    [
        (stripe(customer_id="cus_1", internal_id="u_7"), POLICY, Identity("u_7", INTERNAL)),
        (stripe(customer_id="cus_1"), POLICY, Identity("stripe:cus_1", CUSTOMER)),
        # A client_reference_id alone is only a hint: the Stripe mapper makes it the
        # internal id when STRIPE_CLIENT_REFERENCE_ID says so (tests/mappers).
        (stripe(client_reference_id="u_8"), POLICY, None),
        (
            Person(source="stripe", account="acct_9", customer_id="cus_1"),
            POLICY,
            Identity("stripe:acct_9:cus_1", CUSTOMER),
        ),
        (
            Person(source="stripe", account="acct_9", internal_id="u_7"),
            POLICY,
            Identity("acct_9:u_7", INTERNAL),
        ),
        (shopify(customer_id="42"), POLICY, Identity(f"shopify:{SHOP}:42", CUSTOMER)),
        (
            shopify(customer_id="42"),
            IdentityPolicy(
                person_id_formats={"stripe": "stripe:{customer_id}", "shopify": "sh-{customer_id}"}
            ),
            Identity("sh-42", CUSTOMER),
        ),
        (stripe(internal_id="cio_abc"), POLICY, Identity("id:cio_abc", INTERNAL)),
        (shopify(email="a@example.test"), POLICY, None),
    ],
)
def test_the_payload_names_the_person_by_internal_then_customer_id(
    person: Person, policy: IdentityPolicy, expected: Identity | None
) -> None:
    assert direct_identity(person, policy) == expected


def test_ids_stay_within_customerio_limits() -> None:
    long = "u" * 200
    assert len(safe_id(long).encode()) <= 150
    assert safe_id(long) == safe_id(long)  # stable: one person, one digest
    assert not safe_id("CIO_x").lower().startswith("cio_")


def test_a_link_upgrades_a_customer_id_to_the_internal_id_seen_beside_it() -> None:
    # customer.created showed cus_1 beside user u_7; an invoice names only cus_1.
    links = {person_keys(stripe(customer_id="cus_1"))[0]: Identity("u_7", INTERNAL)}
    invoice = stripe(customer_id="cus_1")
    assert resolve(invoice, person_keys(invoice), links, POLICY).identity == Identity(
        "u_7", INTERNAL
    )


def test_an_email_never_moves_a_known_customer_to_another_person() -> None:
    # Two customers sharing a family address stay two people.
    links = {email_key("fam@example.test"): Identity("u_1", INTERNAL)}
    other = shopify(customer_id="77", email="FAM@example.test")
    found = resolve(other, person_keys(other), links, POLICY).identity
    assert found == Identity(f"shopify:{SHOP}:77", CUSTOMER)


def test_a_guest_whose_email_is_linked_resolves_to_that_person() -> None:
    links = {email_key("ann@example.test"): Identity("u_1", INTERNAL)}
    guest = shopify(email="Ann@Example.test", checkout_token="tok")
    assert resolve(guest, person_keys(guest), links, POLICY).identity == Identity("u_1", INTERNAL)


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        ("anonymous", Identity("shopify:tok", ANONYMOUS)),
        ("email", Identity("g@example.test", EMAIL)),
        ("skip", None),
    ],
)
def test_guest_policy_decides_for_unknown_guests(policy: str, expected: Identity | None) -> None:
    guest = shopify(email="G@example.test", checkout_token="tok")
    rules = IdentityPolicy(guest_policy=policy)  # type: ignore[arg-type]
    found = resolve(guest, person_keys(guest), {}, rules)
    assert found.identity == expected
    assert (found.skip is not None) == (policy == "skip")


def test_a_refund_naming_only_its_order_waits_for_the_order() -> None:
    refund = shopify(order_id="1001")
    found = resolve(refund, person_keys(refund), {}, POLICY)
    assert (found.identity, found.wait_on) == (None, f"shopify:{SHOP}:order:1001")
    links = {f"shopify:{SHOP}:order:1001": Identity(f"shopify:{SHOP}:42", CUSTOMER)}
    assert resolve(refund, person_keys(refund), links, POLICY).identity == Identity(
        f"shopify:{SHOP}:42", CUSTOMER
    )


def test_a_stronger_id_takes_over_an_object_link_and_merges_the_weaker_profile() -> None:
    key = f"shopify:{SHOP}:checkout:tok"
    old = Identity("g@example.test", EMAIL)
    learned = learn([key], Identity("u_1", INTERNAL), {key: old})
    assert learned.links == {key: Identity("u_1", INTERNAL)}
    assert learned.merges == [(old, Identity("u_1", INTERNAL))]


def test_an_email_link_moves_to_a_stronger_id_without_merging() -> None:
    key = email_key("a@example.test")
    learned = learn([key], Identity("u_1", INTERNAL), {key: Identity("stripe:cus_1", CUSTOMER)})
    assert learned.links == {key: Identity("u_1", INTERNAL)}
    assert learned.merges == []


def test_an_email_keyed_guest_profile_is_merged_into_the_customer_with_that_email() -> None:
    # GUEST_POLICY=email: the guest's profile is keyed by this very address.
    key = email_key("g@example.test")
    guest = Identity("g@example.test", EMAIL)
    learned = learn([key], Identity(f"shopify:{SHOP}:42", CUSTOMER), {key: guest})
    assert learned.merges == [(guest, Identity(f"shopify:{SHOP}:42", CUSTOMER))]


def test_a_guest_met_by_email_follows_the_person_without_their_typed_attributes() -> None:
    key = email_key("g@example.test")
    guest = Identity("shopify:tok", ANONYMOUS)
    learned = learn([key], Identity("u_1", INTERNAL), {key: guest})
    assert learned.merges == [(guest, Identity("u_1", INTERNAL))]
    assert learned.typed == {"shopify:tok"}


def test_connected_accounts_keep_their_buyers_emails_apart() -> None:
    platform = stripe(email="a@example.test")
    merchant = Person(source="stripe", account="acct_9", email="a@example.test")
    assert POLICY.isolated(merchant)
    assert not POLICY.isolated(platform)
    assert email_key("a@example.test", platform, POLICY.isolated(platform)) != email_key(
        "a@example.test", merchant, POLICY.isolated(merchant)
    )
    assert person_keys(merchant, POLICY.isolated(merchant))[-1] == "email:acct_9:a@example.test"


def test_a_provider_without_a_person_id_format_is_an_error_not_another_providers() -> None:
    from webhooks.errors import UnknownProvider

    paddle = Person(source="paddle", account="acct", customer_id="ctm_1")
    with pytest.raises(UnknownProvider, match="paddle"):
        direct_identity(paddle, POLICY)


def test_a_weaker_id_never_takes_a_link_over() -> None:
    key = f"shopify:{SHOP}:checkout:tok"
    learned = learn([key], Identity("shopify:tok", ANONYMOUS), {key: Identity("u_1", INTERNAL)})
    assert (learned.links, learned.merges) == ({}, [])


def test_equal_rank_conflicts_keep_the_smaller_id_whatever_came_first() -> None:
    key = "stripe:platform:customer:cus_1"
    a, b = Identity("u_a", INTERNAL), Identity("u_b", INTERNAL)
    assert learn([key], b, {key: a}).links == {}
    assert learn([key], a, {key: b}).links == {key: a}
    assert learn([key], a, {key: b}).conflicts == [key]
    assert learn([key], a, {key: b}).merges == []
