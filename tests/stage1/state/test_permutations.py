"""Arrival order must not change who a person ends up as (Hypothesis over permutations).

Each stack is the webhooks of ONE buyer, derived from the golden fixtures with ids, event
times and amounts changed consistently. The webhooks arrive in a random order, a random
number at a time, into an empty database; between arrivals stage 1 runs in batches of a
random size until idle (so the sequence crosses batches, and waiting rows are woken by
later ones); then everything due is delivered to the in-process fake Customer.io.
Whatever the order:

- every inbox row is `done` and nothing is left pending, waiting or dead;
- the server-truth state (person_state attributes and watermark, person_facts, links)
  is the same as when the webhooks arrive in event-time order;
- the fake's people view has the same profiles with the same attributes (anonymous_id
  aside) and the same business facts (event name + semantic key) attached to each, and
  no anonymous event is left unattached;
- the id of every delivered event is the stable ULID of its fact.

What cannot hold by design, and what is asserted instead (see docs/identity.md):

- One fact reported by several webhooks (orders/create and orders/paid; Stripe's
  scheduled cancel and the deletion that carries out the same `canceled_at`) is one
  outbox row, written by whichever report is mapped first: the event's payload and the
  time half of its ULID come from that report. So delivered events are compared by
  (name, semantic key), and each id must be `op_ulid(key, t)` for the event time `t` of
  one of the fact's reports (for a fact reported once, that is one exact id).
- `order_completed.is_first_order` / `order_count` are the order's place among the orders
  known when it was processed. An earlier-dated order mapped after a later one cannot
  change what that event says (it is already queued or sent). Asserted instead: the
  count never exceeds the order's final place by date, `is_first_order` is
  `order_count == 1`, and the earliest order always says it is the first.
- An abandoned checkout reported several times: `checkout_started` is whichever of
  checkouts/create or the first contactable checkouts/update is mapped first (the
  mapper's rule), and `cart_updated` is judged against it, so which cart events go out
  depends on the order (A, B, C in order: started A, updated B, updated C; C first:
  started C, updated B). The stacks above give their abandoned checkout one report;
  `test_an_abandoned_checkout_...` asserts what does hold for several: one
  checkout_started, no content sent twice, and the newest cart always reaches the person.

At the end: what writing these found in webhooks/stage1/state and the mappers (owned elsewhere,
not changed here). Fixed meanwhile: regression tests; still open: strict xfails
(remove the marker to see them fail).
"""

from __future__ import annotations

import copy
import itertools
import json
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.engine import Engine

from tests.mappers.golden import configs
from tests.stage1.state.stacks import (
    ABANDONED,
    ADA,
    BEANS,
    GRACE,
    MUG,
    SHOP,
    TOKEN,
    Hook,
    fixture,
    grace_contact,
    guest_checkout,
    shopify,
    stripe,
    untagged,
    with_user,
)
from webhooks.core.ids import op_ulid
from webhooks.fakes.customerio import FakeCustomerIO
from webhooks.stage1.process import process_batch
from webhooks.stage1.state.step import StateConfig
from webhooks.stage2.customerio import CustomerIO
from webhooks.stage2.deliver import deliver_batch
from webhooks.storage.inbox import store_delivery
from webhooks.storage.schema import (
    InboxState,
    OutboxState,
    checkouts,
    identity_links,
    inbox,
    inbox_waits,
    order_aliases,
    outbox,
    person_facts,
    person_state,
)

CONFIG = configs(shopify_internal_id_metafield="app.user_id")
# No holds: everything is processed before anything is delivered, so a held cart update
# or merge would only make the final deliver pass wait (the guards still suppress, and a
# merge still goes alone, after its primary's identify: the same occurred_at, a later id).
STATE = StateConfig(cart_update_hold_seconds=0, merge_delay_seconds=0)
TABLES = (
    inbox_waits,
    inbox,
    outbox,
    identity_links,
    person_state,
    person_facts,
    order_aliases,
    checkouts,
)


def shopify_stack() -> list[Hook]:
    """A guest who abandons a checkout, comes back, orders, is refunded and subscribes.

    In event-time order. The checkout events name no customer (anonymous until the
    order names customer 8100000000001 beside the same checkout and cart tokens), the
    refund names only its order, and the contract only the customer id.
    """
    order = fixture("shopify", "order_create")
    return [
        guest_checkout(
            "abandoned", "checkouts/create", ABANDONED, "2026-05-03T10:00:00Z", [(MUG, 1)]
        ),
        guest_checkout("started", "checkouts/create", TOKEN, "2026-05-04T15:20:06Z", [(MUG, 2)]),
        guest_checkout(
            "update-items",
            "checkouts/update",
            TOKEN,
            "2026-05-04T15:22:00Z",
            [(MUG, 3), (BEANS, 1)],
            **grace_contact("Salem"),
        ),
        guest_checkout(
            "update-discount",
            "checkouts/update",
            TOKEN,
            "2026-05-04T15:24:00Z",
            [(MUG, 3), (BEANS, 1)],
            discount="5.00",
            **grace_contact("Eugene"),
        ),
        shopify("orders-create", "order_create", "2026-05-04T15:26:43Z"),
        shopify("orders-paid", "order_paid", "2026-05-04T15:26:44Z"),
        # The same order once more under another webhook id (a second subscription to
        # the topic): a new inbox row, the same business fact.
        shopify("orders-create-again", "order_create", "2026-05-04T15:26:45Z", "wh-again"),
        shopify("contract-create", "subscription_contract_create", "2026-05-04T15:27:00Z"),
        shopify(
            "refund",
            "refund_create_partial",
            "2026-05-08T14:00:01Z",
            order_id=order["body"]["id"],
        ),
        shopify("contract-pause", "subscription_contract_pause", "2026-06-01T10:00:00Z"),
        shopify("contract-activate", "subscription_contract_activate", "2026-07-01T10:00:00Z"),
    ]


def stripe_stack() -> list[Hook]:
    """A subscriber with the merchant's id in metadata, and events naming only cus_...

    In event-time order. Invoices and the charge name only the customer, the refund
    only its PaymentIntent; whichever of them arrives before an event showing cus_...
    beside user_8842 goes to stripe:cus_... first and is merged into user_8842 later.
    """
    return [
        stripe("customer-created", "customer_created"),
        stripe("checkout-completed", "checkout_session_completed_paid"),
        stripe("subscription-created", "subscription_created_basil"),
        untagged(
            stripe("invoice-first", "invoice_paid_subscription_create_basil", created=1764320100)
        ),
        stripe("customer-updated", "customer_updated"),
        stripe("charge-refunded", "charge_refunded_partial_acacia"),
        stripe("refund-created", "refund_created_partial"),
        stripe("subscription-scheduled-cancel", "subscription_updated_scheduled_cancel"),
        untagged(stripe("invoice-renewal", "invoice_paid_renewal_pre_basil", created=1766000000)),
        stripe("subscription-deleted", "subscription_deleted_after_scheduled_cancel"),
    ]


def app_stack() -> list[Hook]:
    """An app with its own ids on both providers: one human, orders on both.

    Stripe names user_8842 in metadata (the first invoice only `cus_...`). On Shopify the
    checkout was a guest's, the order names only customer 8100000000001 (the backend had
    not written the metafield yet), and a later customers/update carries the metafield
    app.user_id. In event-time order that is two merges in a row (the guest's anonymous
    id into shopify:..., that into user_8842); one profile, user_8842, must hold it all.
    """
    order = fixture("shopify", "order_create")
    return [
        stripe("customer-created", "customer_created"),
        stripe("subscription-created", "subscription_created_basil"),
        untagged(
            stripe("invoice-first", "invoice_paid_subscription_create_basil", created=1764320100)
        ),
        guest_checkout("started", "checkouts/create", TOKEN, "2026-05-04T15:20:06Z", [(MUG, 2)]),
        shopify("orders-create", "order_create", "2026-05-04T15:26:43Z"),
        shopify("orders-paid", "order_paid", "2026-05-04T15:26:44Z"),
        shopify(
            "refund", "refund_create_partial", "2026-05-08T14:00:01Z", order_id=order["body"]["id"]
        ),
        with_user(shopify("customer-update", "customers_update", "2026-05-11T13:30:00Z"), ADA),
    ]


# -- running a permutation ---------------------------------------------------------------


@dataclass
class Outcome:
    """What one arrival order ended up as, in comparable form."""

    state: dict[str, Any]  # person_id -> (attributes with their event times, watermark)
    facts: set[tuple[Any, ...]]
    links: dict[str, tuple[str, int]]
    profiles: dict[str, dict[str, Any]]  # identifier -> attributes (no anonymous_id)
    attached: dict[str, set[tuple[str, str]]]  # identifier -> {(event name, semantic key)}
    unattached: list[dict[str, Any]]  # anonymous events no profile took in
    inbox_states: set[str]
    stuck: list[tuple[str, str, str | None]]  # outbox rows neither delivered nor suppressed
    sent: list[dict[str, Any]] = field(default_factory=list)  # delivered event items
    keys_by_id: dict[str, str] = field(default_factory=dict)  # event id -> semantic key


def wipe(engine: Engine) -> None:
    """An empty database again (cheaper than migrating one per example)."""
    with engine.begin() as conn:
        for table in TABLES:
            conn.execute(sa.delete(table))


def arrive(engine: Engine, hooks: list[Hook], duplicate: Hook | None) -> None:
    """Ingest in this order; `duplicate` is redelivered at once (same delivery id)."""
    for hook in hooks:
        assert store_delivery(engine, hook.parsed())
        if hook is duplicate:
            # A provider retry of the very same delivery: the inbox's dedup drops it.
            assert not store_delivery(engine, hook.parsed())


def process(engine: Engine, batch: int) -> None:
    """Stage 1 until nothing is pending (rows woken by a later batch included)."""
    for _ in range(100):
        if not process_batch(engine, "w", CONFIG, limit=batch, state=STATE):
            break


def deliver(engine: Engine, cio: CustomerIO) -> None:
    """Stage 2 until nothing is due."""
    for _ in range(100):
        if not deliver_batch(engine, "w", cio).claimed:
            break


def outcome(engine: Engine, fake: FakeCustomerIO) -> Outcome:
    """The database's state and the fake's people view, in comparable form."""
    with engine.connect() as conn:
        states = {
            r.person_id: (r.attributes, r.watermark) for r in conn.execute(sa.select(person_state))
        }
        facts = {
            (
                r.fact_key,
                r.person_id,
                r.kind,
                r.amount,
                r.currency,
                r.status,
                r.first_at,
                r.watermark,
            )
            for r in conn.execute(sa.select(person_facts))
        }
        links = {r.key: (r.person_id, r.rank) for r in conn.execute(sa.select(identity_links))}
        inbox_states = set(conn.execute(sa.select(inbox.c.state)).scalars())
        rows = list(conn.execute(sa.select(outbox)))
    keys_by_id = {r.op_id: r.op_key for r in rows}
    view = fake.people()
    profiles: dict[str, dict[str, Any]] = {}
    attached: dict[str, set[tuple[str, str]]] = {}
    for person in view["people"]:
        who = json.dumps(person["identifier"], sort_keys=True)
        profiles[who] = {k: v for k, v in person["attributes"].items() if k != "anonymous_id"}
        attached[who] = {(e["name"], keys_by_id[e["id"]]) for e in person["events"]}
    sent = [
        op["operation"]
        for op in fake.operations()
        if op["operation"].get("action") == "event" or "anonymous_id" in op["operation"]
    ]
    stuck = [
        (r.op_key, r.state, r.last_error)
        for r in rows
        if r.state not in (OutboxState.DELIVERED, OutboxState.SUPPRESSED)
    ]
    return Outcome(
        states,
        facts,
        links,
        profiles,
        attached,
        view["anonymous_events"],
        inbox_states,
        stuck,
        sent,
        keys_by_id,
    )


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeCustomerIO]:
    """One in-process fake Customer.io for the module, reset before every example."""
    with FakeCustomerIO() as server:
        yield server


@pytest.fixture(scope="module")
def customerio(fake: FakeCustomerIO) -> Iterator[CustomerIO]:
    """A Track API client of the fake."""
    with httpx.Client(base_url=fake.url, auth=fake.auth, timeout=10) as http:
        yield CustomerIO(http, max_rps=10_000)


def run_order(
    engine: Engine,
    fake: FakeCustomerIO,
    customerio: CustomerIO,
    hooks: list[Hook],
    batch: int,
    duplicate: Hook | None = None,
    arrive_by: int | None = None,
) -> Outcome:
    """Everything from an empty database and an empty fake, for one arrival order.

    Webhooks arrive `arrive_by` at a time (all at once when None), stage 1 running in
    batches of `batch` until idle after each arrival; then everything is delivered.
    Arriving in groups crosses batches even where a claim takes more rows than its
    limit (PostgreSQL today: see tests/storage/test_claim_limit.py).
    """
    wipe(engine)
    fake.reset()
    step = arrive_by or len(hooks)
    for start in range(0, len(hooks), step):
        arrive(engine, hooks[start : start + step], duplicate)
        process(engine, batch)
    deliver(engine, customerio)
    return outcome(engine, fake)


# -- the properties ----------------------------------------------------------------------


def report_times(hooks: list[Hook]) -> dict[str, set[int]]:
    """Each fact's semantic key -> the event times of the webhooks reporting it."""
    times: dict[str, set[int]] = {}
    for hook in hooks:
        for track in hook.tracks(CONFIG):
            times.setdefault(track.semantic_key, set()).add(track.timestamp)
    return times


def check_ids(got: Outcome, times: dict[str, set[int]]) -> None:
    """Every delivered event's id is its fact's ULID at one of its reports' times."""
    for item in got.sent:
        key = got.keys_by_id[item["id"]]
        allowed = {op_ulid(key, datetime.fromtimestamp(t, UTC)) for t in times[key]}
        # A different id would be a second Customer.io event for one fact after a replay.
        assert item["id"] in allowed, key


def check_order_numbers(got: Outcome, person: str) -> None:
    """order_completed's place among the person's orders: never ahead of the final one."""
    orders = sorted(
        (first_at, key)
        for key, pid, kind, *_, first_at, _ in got.facts
        if kind == "order" and pid == person
    )
    place = {key.rsplit(":", 1)[-1]: index for index, (_, key) in enumerate(orders, start=1)}
    earliest = orders[0][1].rsplit(":", 1)[-1]
    for item in got.sent:
        if item.get("name") != "order_completed":
            continue
        data = item["attributes"]
        # A count past the final place would tell a first-time buyer they are a regular.
        assert 1 <= data["order_count"] <= place[data["order_id"]], data["order_id"]
        assert data["is_first_order"] is (data["order_count"] == 1)
        if data["order_id"] == earliest:
            assert data["is_first_order"] is True  # the welcome journey always starts


def check_settled(got: Outcome) -> None:
    """Nothing is left waiting, pending, dead or unattached."""
    # A waiting refund is a refund_issued the person never gets and a lifetime_value
    # that stays too high; a pending or dead row is an event that never went out.
    assert got.inbox_states == {InboxState.DONE}
    assert got.stuck == []
    # An anonymous event no profile took in is a guest's cart the person never shows.
    assert got.unattached == []


def check_same(got: Outcome, want: Outcome) -> None:
    """The order-independent part of two outcomes is equal."""
    # A difference here is a Customer.io profile whose attributes depend on which webhook
    # Shopify or Stripe happened to deliver first: wrong segments, wrong journeys.
    assert got.state == want.state
    assert got.facts == want.facts
    assert got.links == want.links
    assert got.profiles == want.profiles
    # The same business facts on the same profile: a missing one is a lost event, an
    # extra one (a cart event of a completed checkout) a recovery mail after a purchase.
    assert got.attached == want.attached


STACKS = {"shopify": shopify_stack(), "stripe": stripe_stack(), "app": app_stack()}
PEOPLE = {"shopify": GRACE, "stripe": ADA, "app": ADA}
REFERENCE: dict[tuple[str, str], Outcome] = {}


def reference(stack: str, engine: Engine, fake: FakeCustomerIO, customerio: CustomerIO) -> Outcome:
    """The outcome when the webhooks arrive in event-time order, each mapped alone."""
    key = (stack, engine.dialect.name)
    if key not in REFERENCE:
        REFERENCE[key] = run_order(engine, fake, customerio, STACKS[stack], 1, arrive_by=1)
    return REFERENCE[key]


def test_the_reference_orders_are_what_the_worked_examples_say(
    engine: Engine, fake: FakeCustomerIO, customerio: CustomerIO
) -> None:
    """Pin the in-order outcomes, so the permutations compare against a right answer."""
    shop = reference("shopify", engine, fake, customerio)
    check_settled(shop)
    [grace] = [who for who in shop.profiles if GRACE in who]
    assert len(shop.profiles) == 1  # one human, one profile: no stray guest profile
    attributes = shop.profiles[grace]
    assert attributes["order_count"] == 1
    assert attributes["lifetime_value"] == 38.54  # 56.04 less the 17.50 refund
    assert attributes["city"] == "Portland"  # the order's, the newest report
    assert attributes["subscription_status"] == "active"  # activated after the pause
    assert shop.attached[grace] == {
        ("checkout_started", f"checkout_started:shopify:{SHOP}:{ABANDONED}"),
        ("order_completed", f"order_completed:shopify:{SHOP}:6200000000001"),
        ("refund_issued", f"refund_issued:shopify:{SHOP}:9300000000001"),
        ("subscription_created", f"subscription_created:shopify:{SHOP}:29000000001"),
        ("subscription_paused", f"subscription_paused:shopify:{SHOP}:29000000001:41000000002"),
        ("subscription_resumed", f"subscription_resumed:shopify:{SHOP}:29000000001:41000000003"),
    }
    check_order_numbers(shop, GRACE)

    ada = reference("stripe", engine, fake, customerio)
    check_settled(ada)
    assert list(ada.profiles) == [json.dumps({"id": ADA})]  # stripe:cus_... merged away
    attributes = ada.profiles[json.dumps({"id": ADA})]
    assert attributes["order_count"] == 3
    assert attributes["lifetime_value"] == 49.5 + 29 + 29 - 15
    assert attributes["subscription_status"] == "canceled"
    assert {name for name, _ in ada.attached[json.dumps({"id": ADA})]} == {
        "order_completed",
        "refund_issued",
        "subscription_created",
        "subscription_canceled",
    }

    app = reference("app", engine, fake, customerio)
    check_settled(app)
    assert list(app.profiles) == [json.dumps({"id": ADA})]  # no shopify:, no stripe:cus_
    attributes = app.profiles[json.dumps({"id": ADA})]
    assert attributes["order_count"] == 2  # one per store
    assert attributes["lifetime_value"] == 67.54  # 29 + 56.04 - 17.50
    assert {name for name, _ in app.attached[json.dumps({"id": ADA})]} == {
        "order_completed",
        "refund_issued",
        "subscription_created",
    }


Arrival = tuple[list[Hook], int, int | None, Hook | None]


def permutation(stack: str) -> st.SearchStrategy[Arrival]:
    """An arrival order, a stage-1 batch size, how many arrive per worker pass, a repeat."""
    hooks = STACKS[stack]
    return st.tuples(
        st.permutations(hooks),
        st.sampled_from([1, 3, 100]),
        st.sampled_from([1, 2, 4, None]),
        st.none() | st.sampled_from(hooks),
    )


EXAMPLES = settings(
    max_examples=30,
    deadline=None,
    # The engine and the fake are shared on purpose: each example wipes them first.
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


@pytest.mark.parametrize("stack", sorted(STACKS))
@EXAMPLES
@given(data=st.data())
def test_any_arrival_order_ends_in_the_same_person(
    stack: str,
    engine: Engine,
    fake: FakeCustomerIO,
    customerio: CustomerIO,
    data: st.DataObject,
) -> None:
    """Whatever order the stack's webhooks arrive in, the person ends up the same."""
    want = reference(stack, engine, fake, customerio)
    hooks, batch, arrive_by, duplicate = data.draw(permutation(stack))
    got = run_order(engine, fake, customerio, hooks, batch, duplicate, arrive_by)
    check_settled(got)
    check_same(got, want)
    check_ids(got, report_times(STACKS[stack]))
    check_order_numbers(got, PEOPLE[stack])


@pytest.mark.parametrize("order", list(itertools.permutations(range(3))), ids=str)
def test_an_abandoned_checkout_reports_its_newest_cart_whatever_the_order(
    order: tuple[int, ...], engine: Engine, fake: FakeCustomerIO, customerio: CustomerIO
) -> None:
    """The strongest order-independent truth about a checkout reported three times."""
    reports = [
        guest_checkout("create", "checkouts/create", ABANDONED, "2026-05-03T10:00:00Z", [(MUG, 1)]),
        guest_checkout(
            "update-quantity",
            "checkouts/update",
            ABANDONED,
            "2026-05-03T10:02:00Z",
            [(MUG, 2)],
            **grace_contact("Salem"),
        ),
        guest_checkout(
            "update-items",
            "checkouts/update",
            ABANDONED,
            "2026-05-03T10:04:00Z",
            [(MUG, 2), (BEANS, 1)],
            **grace_contact("Salem"),
        ),
    ]
    got = run_order(engine, fake, customerio, [reports[i] for i in order], batch=1, arrive_by=1)
    check_settled_but_anonymous(got)
    carts = [(e["name"], e["data"]["total"]) for e in got.unattached]
    # One recovery journey per checkout, whichever report started it.
    assert [name for name, _ in carts].count("checkout_started") == 1
    # No cart content twice: a second mail about a cart the buyer already heard about.
    assert len({total for _, total in carts}) == len(carts)
    # Only contents the buyer really had; and the last one (68.50) always goes out, so
    # the recovery mail can show what is in the cart now.
    assert {total for _, total in carts} <= {18, 36, 68.5}
    assert 68.5 in {total for _, total in carts}
    # All under the guest's one anonymous id, so one profile takes them all in later.
    assert {e["anonymous_id"] for e in got.unattached} == {f"shopify:{ABANDONED}"}


def check_settled_but_anonymous(got: Outcome) -> None:
    """Like check_settled, for a guest nobody has identified: their events wait."""
    assert got.inbox_states == {InboxState.DONE}
    assert got.stuck == []
    assert got.profiles == {}  # an anonymous guest has no profile to set attributes on


# -- found while writing these: fixed meanwhile (regression tests) or open (xfails) ----


def returning_guest() -> Hook:
    """Grace, not logged in, the day after her order: a new cart, her email, Bend."""
    hook = guest_checkout(
        "returning-guest",
        "checkouts/update",
        "1234abcd1234abcd1234abcd1234abcd",
        "2026-05-05T09:00:00Z",
        [(MUG, 5)],
        **grace_contact("Bend"),
    )
    return Hook(hook.name, hook.provider, hook.headers, {**hook.body, "cart_token": "cart-2"})


def guest_order() -> Hook:
    """Grace's first order, a month before the other, as a guest (no customer object)."""
    hook = shopify("guest-order", "order_create", "2026-04-01T10:00:00Z", "wh-guest-order")
    body = {
        **hook.body,
        "id": 6200000000000,
        "name": "#1000",
        "checkout_token": "guest0checkout0token",
        "cart_token": "guest-cart",
    }
    del body["customer"]
    return Hook(hook.name, hook.provider, hook.headers, body)


@pytest.mark.parametrize("guest", [returning_guest, guest_order], ids=["checkout", "order"])
def test_a_guest_linked_only_by_email_ends_on_the_same_profile_in_either_order(
    guest: Any, engine: Engine, fake: FakeCustomerIO, customerio: CustomerIO
) -> None:
    """Guest then customer, or customer then guest: the same profile either way.

    Found failing while writing this file, fixed meanwhile in a68ad88 (an anonymous id
    whose email link a person takes over is merged; what the guest typed is not kept).
    Before: customer first, the guest's events resolved through the email link to Grace;
    guest first, they stayed anonymous events no profile took in, and the guest order
    was missing from order_count (1, not 2) and lifetime_value (56.04, not 112.08).
    """
    order = shopify("orders-create", "order_create", "2026-05-04T15:26:43Z")
    guest_first = run_order(engine, fake, customerio, [guest(), order], batch=1, arrive_by=1)
    order_first = run_order(engine, fake, customerio, [order, guest()], batch=1, arrive_by=1)
    check_settled(guest_first)
    check_settled(order_first)
    assert guest_first.attached == order_first.attached
    assert guest_first.profiles == order_first.profiles
    assert guest_first.facts == order_first.facts
    # The attributes kept: the order's, never what a guest typed (the city Bend).
    assert {pid: attrs for pid, (attrs, _) in guest_first.state.items()} == {
        pid: attrs for pid, (attrs, _) in order_first.state.items()
    }
    [grace] = guest_first.profiles.values()
    assert grace["city"] == "Portland"


def test_what_a_guest_typed_changes_no_one_whatever_the_batch(
    engine: Engine, fake: FakeCustomerIO, customerio: CustomerIO
) -> None:
    """The same two webhooks, in the same order: mapped one by one, or in one batch.

    A guest types Grace's email (and the city Bend) at a checkout, then Grace's order
    arrives. Mapped apart, the guest is merged as `typed` and Grace keeps Portland, as
    a68ad88 intends ("typed emails change no one"). Mapped in one batch (a backlog after
    an outage; any batch on PostgreSQL today, see tests/storage/test_claim_limit.py),
    the guest's Identify is reported to Grace and her city becomes Bend.
    """
    order = shopify("orders-create", "order_create", "2026-05-04T15:26:43Z")
    apart = run_order(engine, fake, customerio, [returning_guest(), order], 1, arrive_by=1)
    together = run_order(engine, fake, customerio, [returning_guest(), order], 100)
    [grace_apart] = apart.profiles.values()
    [grace_together] = together.profiles.values()
    assert grace_apart["city"] == "Portland"
    # Bend today: anyone typing her email at a guest checkout rewrites her address.
    assert grace_together["city"] == "Portland"


def test_a_guest_merged_through_its_email_moves_the_persons_watermark_either_way(
    engine: Engine, fake: FakeCustomerIO, customerio: CustomerIO
) -> None:
    """The newest event time known of Grace includes the guest checkout that is now hers.

    Order first: the guest's checkout_started resolves through the email link to Grace,
    and _event() touches her record: watermark 1777971600 (May 5). Guest first: the
    anonymous record is merged as `typed`, absorb() is skipped, and her watermark stays
    at her order (1777908403). Her next identify carries that older timestamp, so the
    same webhooks send different identify timestamps depending on arrival order.
    """
    order = shopify("orders-create", "order_create", "2026-05-04T15:26:43Z")
    guest_first = run_order(
        engine, fake, customerio, [returning_guest(), order], batch=1, arrive_by=1
    )
    order_first = run_order(
        engine, fake, customerio, [order, returning_guest()], batch=1, arrive_by=1
    )
    watermarks = [
        {pid: mark for pid, (_, mark) in got.state.items()} for got in (guest_first, order_first)
    ]
    assert watermarks[0] == watermarks[1] == {GRACE: 1777971600}


def test_a_cancelled_shopify_contract_reads_canceled_as_a_stripe_one_does(
    engine: Engine, fake: FakeCustomerIO, customerio: CustomerIO
) -> None:
    """A Customer.io segment `subscription_status = canceled` must find Shopify's too.

    Found failing while writing this file ("cancelled" passed through), fixed meanwhile
    in a68ad88 (provider spellings of a status are one).
    """
    hooks = [
        shopify("contract-create", "subscription_contract_create", "2026-05-04T15:27:00Z"),
        shopify("contract-cancel", "subscription_contract_cancel", "2026-08-15T10:00:00Z"),
    ]
    got = run_order(engine, fake, customerio, hooks, batch=1, arrive_by=1)
    [grace] = got.profiles.values()
    # "cancelled" would be missed by every win-back segment written for Stripe, and
    # STATUS_PRIORITY would rank it below every known status, even "expired".
    assert grace["subscription_status"] == "canceled"


def status_change(name: str, event_id: str, at: int, status: str, before: str) -> Hook:
    """customer.subscription.updated: only the status of sub_1TestBox changed."""
    hook = stripe(
        name, "subscription_created_basil", id=event_id, type="customer.subscription.updated"
    )
    body = {**hook.body, "created": at}
    body["data"] = {
        "object": {**body["data"]["object"], "status": status},
        "previous_attributes": {"status": before},
    }
    return Hook(name, "stripe", {}, body)


def test_subscription_status_follows_a_trial_that_converts_then_falls_past_due(
    engine: Engine, fake: FakeCustomerIO, customerio: CustomerIO
) -> None:
    """docs/identity.md: each subscription's status from its newest event."""
    hooks = [
        stripe("subscription-created", "subscription_created_basil"),  # trialing
        status_change("trial-converted", "evt_1TestSubActive", 1765529600, "active", "trialing"),
        status_change("payment-late", "evt_1TestSubPastDue", 1768000000, "past_due", "active"),
    ]
    got = run_order(engine, fake, customerio, hooks, batch=1, arrive_by=1)
    [ada] = got.profiles.values()
    # Today: "trialing". A dunning journey on past_due never starts, and a trial-nurture
    # segment keeps mailing a customer who has paid for two months.
    assert ada["subscription_status"] == "past_due"


def test_a_cancelled_and_refunded_order_leaves_the_same_totals_in_any_order(
    engine: Engine, fake: FakeCustomerIO, customerio: CustomerIO
) -> None:
    """orders/create, its cancellation, the cancellation's refund and a second order.

    In every order: the cancelled order counts for nothing (its refund is not taken off
    a second time), the second order is the person's one order, and the person's state
    and profile are the same. The cancelled order's order_completed goes out only when
    it arrived before its cancellation (asserted in test_step).
    """
    order = fixture("shopify", "order_create")
    second = {
        "id": 6200000000002,
        "checkout_token": None,
        "cart_token": None,
        "created_at": "2026-06-01T10:00:00-04:00",
    }
    hooks = [
        shopify("orders-create", "order_create", "2026-05-04T15:26:43Z"),
        shopify("orders-cancelled", "order_cancelled", "2026-05-05T12:00:02Z"),
        shopify(
            "refund", "refund_create_partial", "2026-05-05T12:00:03Z", order_id=order["body"]["id"]
        ),
        shopify("orders-create-2", "order_create", "2026-06-01T14:00:00Z", "wh-2", **second),
    ]
    want = run_order(engine, fake, customerio, hooks, 100)
    check_settled(want)
    [profile] = want.profiles.values()
    assert (profile["order_count"], profile["lifetime_value"]) == (1, 56.04)
    for arrival in itertools.permutations(hooks):
        got = run_order(engine, fake, customerio, list(arrival), 1)
        check_settled(got)
        assert (got.state, got.profiles, got.facts) == (want.state, want.profiles, want.facts)


def test_a_refund_of_a_basil_invoice_payment_finds_the_invoice_in_any_order(
    engine: Engine, fake: FakeCustomerIO, customerio: CustomerIO
) -> None:
    """API 2025-03-31+: the invoice names no PaymentIntent, the refund only that.

    invoice_payment.paid says which PaymentIntent paid the invoice. Whatever the order
    the three arrive in, the refund reaches the invoice's buyer and counts against the
    invoice's order: one order of 29.00 less 9.00.
    """
    hooks = [
        stripe("invoice", "invoice_paid_subscription_create_basil"),
        stripe("invoice-payment", "invoice_payment_paid_clover"),
        stripe("refund", "refund_created_invoice_payment_basil"),
    ]
    want = run_order(engine, fake, customerio, hooks, 100)
    check_settled(want)
    [who] = want.profiles
    assert json.loads(who) == {"id": ADA}
    assert (want.profiles[who]["order_count"], want.profiles[who]["lifetime_value"]) == (1, 20)
    assert {name for name, _ in want.attached[who]} == {"order_completed", "refund_issued"}
    for arrival in itertools.permutations(hooks):
        for batch in (1, 100):
            got = run_order(engine, fake, customerio, list(arrival), batch, arrive_by=1)
            check_settled(got)
            assert (got.profiles, got.attached) == (want.profiles, want.attached)


def test_redact_action_suppress_bars_the_profile_from_coming_back(
    engine: Engine, fake: FakeCustomerIO, customerio: CustomerIO
) -> None:
    """REDACT_ACTION=suppress: Customer.io refuses the id after the redaction.

    A late orders/paid for the redacted customer's order would otherwise recreate the
    profile with an identify (delete alone does not bar the id).
    """
    wipe(engine)
    fake.reset()
    state = replace(STATE, redact_action="suppress")
    hooks = [
        shopify("orders-create", "order_create", "2026-05-04T15:26:43Z"),
        shopify("redact", "customers_redact", "2026-06-01T10:00:00Z"),
        shopify("orders-paid", "order_paid", "2026-05-04T15:26:44Z"),  # delivered late
    ]
    for hook in hooks:
        arrive(engine, [hook], None)
        while process_batch(engine, "w", CONFIG, state=state):
            pass
        deliver(engine, customerio)
    erased = [op["operation"] for op in fake.operations() if op["operation"]["action"] != "event"]
    assert {"type": "person", "identifiers": {"id": GRACE}, "action": "suppress"} in erased
    assert [p["identifier"] for p in fake.people()["people"]] == []


def shopify_repeat_guest() -> list[Hook]:
    """Grace orders as a customer, then again as a guest; the guest order is refunded.

    The refund names only the guest order, which was matched to Grace by its email.
    """
    guest = guest_order()
    return [
        shopify("orders-create", "order_create", "2026-05-04T15:26:43Z"),
        guest,
        shopify(
            "guest-refund",
            "refund_create_partial",
            "2026-05-08T14:00:01Z",
            "wh-guest-refund",
            order_id=guest.body["id"],
        ),
    ]


def stripe_repeat_guest() -> list[Hook]:
    """Ada is a customer; she pays a Payment Link as a guest; that payment is refunded.

    The guest session names no customer, only her email; the refund only its
    PaymentIntent.
    """
    session = fixture("stripe", "checkout_session_completed_paid")["body"]
    guest = copy.deepcopy(session["data"]["object"])
    guest.update(
        id="cs_test_GuestLink01",
        customer=None,
        metadata={},
        client_reference_id=None,
        payment_intent="pi_3TestGuest01",
    )
    refund = fixture("stripe", "refund_created_partial")["body"]
    refunded = {**refund["data"]["object"], "id": "re_3TestGuest01", "charge": "ch_3TestGuest01"}
    refunded["payment_intent"] = "pi_3TestGuest01"
    return [
        stripe("customer-created", "customer_created"),
        stripe(
            "guest-session",
            "checkout_session_completed_paid",
            id="evt_1TestGuestLink01",
            created=1764320500,
            data={"object": guest},
        ),
        stripe(
            "guest-refund",
            "refund_created_partial",
            id="evt_3TestGuestRefund01",
            created=1764327500,
            data={"object": refunded},
        ),
    ]


REPEAT_GUESTS = {
    "shopify": (shopify_repeat_guest, GRACE, 2, round(56.04 * 2 - 17.50, 2)),
    "stripe": (stripe_repeat_guest, ADA, 1, 49.5 - 15),
}


@pytest.mark.parametrize("provider", sorted(REPEAT_GUESTS))
@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(data=st.data())
def test_a_refund_of_a_guest_order_matched_by_email_reaches_the_person_in_any_order(
    provider: str,
    engine: Engine,
    fake: FakeCustomerIO,
    customerio: CustomerIO,
    data: st.DataObject,
) -> None:
    """A known buyer buys again as a guest with their email; the refund names only the
    guest order (Shopify) or its PaymentIntent (Stripe). In every arrival order the
    refund is sent to the person and taken off their lifetime value."""
    make, person, orders, value = REPEAT_GUESTS[provider]
    hooks = make()
    want = run_order(engine, fake, customerio, hooks, 1, arrive_by=1)
    check_settled(want)
    profile = want.profiles[json.dumps({"id": person})]
    assert (profile["order_count"], profile["lifetime_value"]) == (orders, value)
    assert "refund_issued" in {name for name, _ in want.attached[json.dumps({"id": person})]}
    arrival = data.draw(st.permutations(hooks))
    batch = data.draw(st.sampled_from([1, 100]))
    arrive_by = data.draw(st.sampled_from([1, None]))
    got = run_order(engine, fake, customerio, list(arrival), batch, arrive_by=arrive_by)
    check_settled(got)
    assert got.profiles == want.profiles
    assert got.attached == want.attached
    assert got.facts == want.facts


def event_ids(got: Outcome) -> dict[str, tuple[str, int]]:
    """Each delivered event's fact key -> (its id, its timestamp)."""
    return {
        got.keys_by_id[item["id"]]: (item["id"], item["timestamp"])
        for item in got.sent
        if item.get("action") == "event" or "name" in item
    }


@pytest.mark.parametrize("stack", sorted(STACKS))
@pytest.mark.parametrize("batch", [1, 100])
def test_a_fresh_database_fed_the_history_backwards_sends_the_same_ids_and_times(
    stack: str, batch: int, engine: Engine, fake: FakeCustomerIO, customerio: CustomerIO
) -> None:
    """A restore, a migration or a backfill into a fresh database, in reverse order.

    Every fact's event carries the same id and timestamp: the fact's own time where the
    payload states it (an order's creation, a cancel's request), else the earliest of
    its reports (a queued event moved back when an earlier-dated report arrives).
    Customer.io's own dedup by id then backs ours up across databases.
    """
    hooks = STACKS[stack]
    forwards = run_order(engine, fake, customerio, hooks, batch, arrive_by=1)
    backwards = run_order(engine, fake, customerio, hooks[::-1], batch, arrive_by=1)
    check_settled(forwards)
    check_settled(backwards)
    assert event_ids(backwards) == event_ids(forwards)


def test_what_a_guest_typed_never_reaches_the_person_through_the_guest_order(
    engine: Engine, fake: FakeCustomerIO, customerio: CustomerIO
) -> None:
    """Someone pays a Payment Link as a guest with Ada's email and their own name; the
    charge's refund (no customer) names the payment, now linked to Ada. The payment and
    its refund are Ada's; the name and phone typed on it are not."""
    customer, session, _ = stripe_repeat_guest()
    typed = {"email": "ada@example.test", "name": "Mallory Guest", "phone": "+15555550666"}
    guest_object = {**session.body["data"]["object"], "customer_details": typed}
    guest = Hook(session.name, "stripe", {}, {**session.body, "data": {"object": guest_object}})
    charge = fixture("stripe", "charge_refunded_second_partial_2023")["body"]
    refunded = {
        **charge["data"]["object"],
        "id": "ch_3TestGuest01",
        "customer": None,
        "payment_intent": "pi_3TestGuest01",
        "billing_details": {**charge["data"]["object"]["billing_details"], **typed},
    }
    refund = Hook(
        "guest-charge-refunded",
        "stripe",
        {},
        {**charge, "id": "evt_3TestGuestCharge01", "data": {**charge["data"], "object": refunded}},
    )
    for arrival in ([customer, guest, refund], [guest, customer, refund]):
        got = run_order(engine, fake, customerio, arrival, 1, arrive_by=1)
        check_settled(got)
        profile = got.profiles[json.dumps({"id": ADA})]
        assert (profile["first_name"], profile["phone"]) == ("Ada", "+15555550101")  # hers
        assert profile["lifetime_value"] == 49.5 - 10  # the guest payment, less its refund


def test_a_shopify_redaction_does_not_end_the_persons_stripe_billing(
    engine: Engine, fake: FakeCustomerIO, customerio: CustomerIO
) -> None:
    """One person on both providers (the merchant's own id) is redacted on Shopify.

    A Stripe renewal after the redaction is new activity of a live subscription: it is
    sent (under the Stripe customer, since the links to the merchant's id were erased),
    not suppressed as if the Shopify redaction had erased the Stripe subscription.
    """
    redact = shopify("redact", "customers_redact", "2026-09-01T00:00:00Z")
    renewal = untagged(
        stripe("invoice-after", "invoice_paid_renewal_pre_basil", created=1790000000)
    )
    got = run_order(engine, fake, customerio, [*app_stack(), redact, renewal], 1, arrive_by=1)
    invoice = renewal.body["data"]["object"]["id"]
    delivered = {got.keys_by_id[item["id"]] for item in got.sent if "id" in item}
    assert f"order_completed:stripe:platform:{invoice}" in delivered
