"""`webhooks trace` on paths made by real deliveries through the real pipeline."""

from __future__ import annotations

import json

from sqlalchemy.engine import Engine

from tests.ops.conftest import Post, Run, as_json, post_signed, worker
from tests.pipeline import ScriptedCustomerIO, outbox_rows
from tests.stage1.state.test_step import _strip_metadata, body


def test_an_order_traced_by_its_event_id_shows_the_whole_path(
    engine: Engine, cio: ScriptedCustomerIO, run: Run, signed: Post
) -> None:
    signed("stripe", "checkout_session_completed_paid")
    signed("stripe", "checkout_session_completed_paid")  # Stripe retried it
    worker(engine, cio).run_once()
    [order] = [row for row in outbox_rows(engine) if row.kind == "event"]
    found = as_json(run("trace", order.op_id, "--json"))
    assert found["found_as"] == ["operation"]
    [received] = found["received"]
    assert (received["secret_index"], received["duplicates"], received["state"]) == (0, 1, "done")
    kinds = {(op["kind"], op["name"], op["state"]) for op in found["operations"]}
    assert kinds == {("identify", None, "delivered"), ("event", "order_completed", "delivered")}
    [person] = found["persons"]
    assert person == order.person_id
    assert any(key["key"].startswith("email:") for key in found["persons"][person])
    # The same path from the delivery id, and from the person.
    by_delivery = as_json(run("trace", received["delivery_id"], "--json"))
    assert by_delivery["found_as"] == ["delivery"]
    assert {op["op_id"] for op in by_delivery["operations"]} == {
        op["op_id"] for op in found["operations"]
    }
    assert as_json(run("trace", person, "--json"))["found_as"] == ["person"]


def test_trace_masks_personal_data_unless_asked(
    engine: Engine, cio: ScriptedCustomerIO, run: Run, signed: Post
) -> None:
    signed("stripe", "checkout_session_completed_paid")
    worker(engine, cio).run_once()
    [identify] = [row for row in outbox_rows(engine) if row.kind == "identify"]
    human = run("trace", identify.op_id).stdout
    assert "verified with secret #0, delivered 1 time(s), done" in human
    assert "@" not in human
    assert "@" in run("trace", identify.op_id, "--show-pii").stdout


def test_a_guest_merged_into_a_customer_shows_both_ids(
    engine: Engine, cio: ScriptedCustomerIO, run: Run
) -> None:
    # An invoice names only the Stripe customer; the customer object then shows the
    # merchant's own id for them: the Stripe-keyed profile is merged into it.
    invoice = body("stripe", "invoice_paid_subscription_create_basil")
    _strip_metadata(invoice)
    post_signed(engine, "stripe", "invoice_paid_subscription_create_basil", **invoice)
    worker(engine, cio).run_once()
    post_signed(engine, "stripe", "customer_created")
    worker(engine, cio).run_once()
    found = as_json(run("trace", "stripe:cus_TestAda01", "--json"))
    [merge] = [op for op in found["operations"] if op["kind"] == "merge"]
    assert merge["person_id"] == "user_8842"
    assert {"stripe:cus_TestAda01", "user_8842"} <= set(found["persons"])
    human = run("trace", "stripe:cus_TestAda01").stdout
    assert "merge for user_8842" in human
    assert "stripe:cus_TestAda01" in human


def test_an_order_id_finds_its_person_and_an_unknown_id_is_a_clear_error(
    engine: Engine, cio: ScriptedCustomerIO, run: Run, signed: Post
) -> None:
    signed("shopify", "order_create")
    worker(engine, cio).run_once()
    order_id = str(body("shopify", "order_create")["id"])
    found = as_json(run("trace", order_id, "--json"))
    assert found["found_as"] == ["order"]
    assert [op["name"] for op in found["operations"] if op["kind"] == "event"] == [
        "order_completed"
    ]
    result = run("trace", "evt_nobody_sent_this")
    assert result.exit_code == 1
    assert "nothing goes by 'evt_nobody_sent_this'" in result.stderr


def test_a_shopify_guest_who_then_orders_as_a_customer_shows_both_ids(
    engine: Engine, cio: ScriptedCustomerIO, run: Run
) -> None:
    # A guest checkout (anonymous, keyed by its token) with the email the customer's
    # order then carries: the guest's activity becomes the customer's.
    order = body("shopify", "order_create")
    guest = body("shopify", "checkout_create_guest")
    guest.update(token="tok-guest-trace", email=order["email"])
    post_signed(engine, "shopify", "checkout_create_guest", **guest)
    worker(engine, cio).run_once()
    [anonymous] = {row.person_id for row in outbox_rows(engine)}
    post_signed(engine, "shopify", "order_create")
    runner = worker(engine, cio)
    runner.run_once()
    customer = next(row.person_id for row in outbox_rows(engine) if row.kind == "identify")
    assert customer != anonymous
    found = as_json(run("trace", anonymous, "--json", "--show-pii"))
    assert {anonymous, customer} <= set(found["persons"]) | {
        op["person_id"] for op in found["operations"]
    }
    # The customer's identify carries the guest's anonymous id: Customer.io folds the
    # guest's activity into the customer's profile by it.
    identifies = [op for op in found["operations"] if op["kind"] == "identify"]
    assert {op["person_id"] for op in identifies} == {customer}
    assert any(anonymous in json.dumps(op["payload"]) for op in identifies)
