"""Person state: newest report wins, facts aggregate, nothing depends on arrival order."""

from __future__ import annotations

import itertools
import random
from decimal import Decimal

from sqlalchemy.engine import Engine

from mappers.taxonomy import PersonAttributes
from webhooks.stage1.state import store
from webhooks.stage1.state.ledger import Ledger
from webhooks.stage1.state.person import (
    CANCELED,
    Fact,
    PersonRecord,
    Totals,
    attributes_of,
    subscription_status,
)


def test_each_attribute_keeps_its_newest_report() -> None:
    record = PersonRecord("p")
    record.report(PersonAttributes(email="new@example.test", first_name="Ann"), 200)
    record.report(PersonAttributes(email="old@example.test", last_name="Lee"), 100)
    assert attributes_of(record, []) == {
        "email": "new@example.test",
        "first_name": "Ann",
        "last_name": "Lee",
        "order_count": 0,
        "lifetime_value": 0,
    }
    assert record.watermark == 200


def test_reports_in_any_order_give_the_same_attributes() -> None:
    reports = [
        (PersonAttributes(email="a@example.test", email_consent=False), 100),
        (PersonAttributes(email="b@example.test"), 300),
        (PersonAttributes(email_consent=True, phone="+15550100"), 200),
        (PersonAttributes(phone="+15550199"), 200),  # a tie: the value decides, not arrival
    ]
    outcomes = set()
    for order in itertools.permutations(reports):
        record = PersonRecord("p")
        for attributes, at in order:
            record.report(attributes, at)
        outcomes.add(repr(sorted(record.attributes.items())))
    assert len(outcomes) == 1


def order(key: str, at: int, total: str, currency: str = "USD", seen_at: int | None = None) -> Fact:
    return Fact(f"order:{key}", "p", "order", at, seen_at or at, Decimal(total), currency)


def refund(key: str, of: str, at: int, amount: str, currency: str = "USD") -> Fact:
    return Fact(f"refund:{key}", "p", "refund", at, at, Decimal(amount), currency, parent=of)


def cancel(key: str, at: int, total: str | None = None) -> Fact:
    amount = Decimal(total) if total is not None else None
    return Fact(f"order:{key}", "p", "order", at, at, amount, "USD", status=CANCELED)


def test_lifetime_value_is_orders_minus_refunds_in_the_reporting_currency() -> None:
    facts = [
        order("1", 100, "40.50"),
        order("2", 300, "10"),
        order("3", 200, "99", currency="EUR"),  # left out: another currency
        refund("r1", "order:1", 400, "5.25"),
    ]
    derived = Totals.of(facts, "USD", {}).attributes()
    assert derived == {
        "order_count": 3,
        "lifetime_value": 45.25,
        "first_order_date": 100,
        "last_order_date": 300,
    }


def test_a_refund_of_an_order_never_seen_subtracts_nothing() -> None:
    # A purchase before go-live, or a payment the mappers ignore: the service cannot
    # account for it, so its refund must not drive the total below what it can.
    facts = [order("1", 100, "20"), refund("r1", "order:unknown", 200, "25")]
    assert Totals.of(facts, "USD", {}).attributes()["lifetime_value"] == 20
    assert Totals.of(facts[1:], "USD", {}).attributes()["lifetime_value"] == 0


def test_refunds_never_take_an_order_below_nothing() -> None:
    facts = [
        order("1", 100, "20"),
        order("2", 150, "30"),
        refund("r1", "order:1", 200, "15"),
        refund("r2", "order:1", 210, "15"),  # 30 refunded of 20: that order is worth 0
    ]
    assert Totals.of(facts, "USD", {}).attributes()["lifetime_value"] == 30


def test_a_refund_naming_the_orders_payment_counts_against_the_order() -> None:
    facts = [order("in_1", 100, "29"), refund("r1", "order:pi_1", 200, "9")]
    assert Totals.of(facts, "USD", {}).attributes()["lifetime_value"] == 29
    aliases = {"order:pi_1": "order:in_1"}
    assert Totals.of(facts, "USD", aliases).attributes()["lifetime_value"] == 20


def test_a_cancelled_order_counts_for_nothing_and_stays_cancelled() -> None:
    placed = order("1", 100, "40")
    cancelled = cancel("1", 200, "40")
    facts = [placed.combine(cancelled), order("2", 300, "10"), refund("r1", "order:1", 210, "40")]
    # Not counted, not in the dates, and its refund is not subtracted a second time.
    assert Totals.of(facts, "USD", {}).attributes() == {
        "order_count": 1,
        "lifetime_value": 10,
        "first_order_date": 300,
        "last_order_date": 300,
    }
    # A report of the order newer than its cancellation does not bring it back.
    paid_late = order("1", 400, "40")
    assert placed.combine(cancelled).combine(paid_late).status == CANCELED
    assert paid_late.combine(cancelled).combine(placed).status == CANCELED


def test_a_late_old_order_moves_first_order_date_back_and_last_never_back(
    engine: Engine,
) -> None:
    totals = Totals(currency="USD")
    totals.add(None, order("2", 300, "10"))
    assert totals.attributes()["first_order_date"] == 300
    totals.add(None, order("1", 100, "10"))
    derived = totals.attributes()
    assert (derived["first_order_date"], derived["last_order_date"]) == (100, 300)
    # Each order's place by date, as stage 1 numbers them (the late one asks the store).
    with engine.begin() as conn:
        ledger = Ledger(conn, "USD")
        later, latest = ledger.add_fact(order("2", 300, "10"))
        assert ledger.position(later, latest) == 1
        earlier, latest = ledger.add_fact(order("1", 100, "10"))
        assert ledger.position(earlier, latest) == 1
        assert ledger.position(later, None) == 2


def test_a_second_report_of_an_order_keeps_its_date_and_takes_the_newer_total() -> None:
    first = order("1", 200, "10")
    paid_later = order("1", 250, "12")
    created_late = order("1", 180, "10")
    combined = first.combine(paid_later).combine(created_late)
    assert (combined.first_at, combined.amount) == (180, Decimal("12"))
    assert created_late.combine(paid_later).combine(first) == combined


def subscription(key: str, status: str, at: int) -> Fact:
    return Fact(f"subscription:{key}", "p", "subscription", at, at, status=status)


def test_an_older_subscription_event_never_regresses_the_status() -> None:
    newest = subscription("s1", "canceled", 300)
    older = subscription("s1", "active", 200)
    assert newest.combine(older).status == "canceled"
    assert older.combine(newest).status == "canceled"


def test_one_live_subscription_makes_the_person_a_subscriber() -> None:
    facts = [subscription("s1", "canceled", 300), subscription("s2", "active", 100)]
    assert subscription_status(facts) == "active"
    assert subscription_status(facts[:1]) == "canceled"


def test_a_merged_profile_brings_its_newer_attributes() -> None:
    known = PersonRecord("u_1")
    known.report(PersonAttributes(email="k@example.test", first_name="Kim"), 100)
    guest = PersonRecord("shopify:tok")
    guest.report(PersonAttributes(first_name="Kimberly", phone="+15550100"), 150)
    known.absorb(guest)
    assert attributes_of(known, [])["first_name"] == "Kimberly"
    assert attributes_of(known, [])["phone"] == "+15550100"
    assert known.watermark == 150


def test_provider_spellings_of_a_status_are_one_status() -> None:
    from mappers.actions import Person, Track
    from mappers.taxonomy import EventName, SubscriptionCanceled
    from webhooks.stage1.state.person import fact_of

    shopify = Person(source="shopify", account="s", customer_id="1")
    track = Track(
        person=shopify,
        event=EventName.SUBSCRIPTION_CANCELED,
        properties=SubscriptionCanceled(source="shopify", subscription_id="c1", status="CANCELLED"),
        timestamp=10,
        semantic_key="subscription_canceled:shopify:s:c1",
    )
    fact = fact_of(track, "p")
    assert fact is not None
    assert fact.status == "canceled"


def test_totals_kept_fact_by_fact_equal_totals_counted_from_all_facts(engine: Engine) -> None:
    # Orders, a refund before or after its order, one naming the order's payment, one of
    # an order never seen, a cancellation and a repeat report with a new total: kept
    # one report at a time, in every arrival order, they give the totals counted from
    # every fact at once.
    first = order("1", 200, "10")
    reports = [
        first,
        order("2", 100, "20"),
        refund("r", "order:2", 300, "3"),
        refund("rp", "order:pi_2", 310, "4"),
        refund("ru", "order:unknown", 320, "50"),
        order("3", 150, "7", currency="EUR"),
        cancel("4", 260, "8"),
        order("4", 250, "8"),
        order("1", 250, "12"),
        # An order kept under a name that is also another order's alias (a PaymentIntent
        # reported on its own, then found to pay invoice 2): refunds naming it are 2's.
        order("pi_2", 120, "6"),
        # One refund reported twice, the newer report naming another order.
        refund("rx", "order:unknown", 330, "2"),
        refund("rx", "order:1", 340, "2"),
    ]
    aliases = {"order:pi_2": "order:2"}
    final: dict[str, Fact] = {}
    for fact in reports:
        known = final.get(fact.fact_key)
        final[fact.fact_key] = fact if known is None else known.combine(fact)
    expected = Totals.of(final.values(), "USD", aliases)
    # 1: 12 - 2; 2: 20 - 3 - 4; pi_2: 6; 3 in EUR; 4 cancelled.
    assert (expected.order_count, expected.value) == (4, Decimal("29"))
    outcomes = set()
    shuffler = random.Random(7)
    with engine.connect() as conn:
        for _ in range(400):
            arrival = shuffler.sample(reports, len(reports))
            # The alias (the invoice's payment) arrives somewhere among them too.
            where = shuffler.randrange(len(arrival) + 1)
            ledger = Ledger(conn, "USD")
            for fact in arrival[:where]:
                ledger.add_fact(fact)
            ledger.alias("order:pi_2", "order:2")
            for fact in arrival[where:]:
                ledger.add_fact(fact)
            totals = ledger.refresh(ledger.record("p"))
            outcomes.add(
                (totals.order_count, totals.value, totals.first_order_at, totals.last_order_at)
            )
    assert outcomes == {
        (expected.order_count, expected.value, expected.first_order_at, expected.last_order_at)
    }


def test_the_latest_order_moving_earlier_makes_the_totals_stale() -> None:
    paid = order("1", 300, "10")
    totals = Totals.of([order("2", 100, "5"), paid], "USD", {})
    created_earlier = order("1", 200, "10")
    totals.add(paid, paid.combine(created_earlier))
    assert totals.stale


def test_an_order_cancelled_in_this_batch_is_no_longer_counted_before_a_later_one(
    engine: Engine,
) -> None:
    # A and C are stored; one batch then cancels A and reports B, dated between them.
    with engine.begin() as conn:
        ledger = Ledger(conn, "USD")
        for fact in (order("A", 100, "10"), order("C", 300, "10")):
            ledger.add_fact(fact)
        records, facts, aliases = ledger.changed()
        store.save(conn, {}, records, facts, {}, [], aliases)
    with engine.begin() as conn:
        ledger = Ledger(conn, "USD")
        holders = ledger.load_named(["order:A", "order:B"], {"order:A", "order:B"})
        ledger.load_people({"p"} | holders)
        ledger.add_fact(cancel("A", 250))
        placed, latest = ledger.add_fact(order("B", 200, "10"))
        assert ledger.position(placed, latest) == 1  # A no longer counts; C is later
