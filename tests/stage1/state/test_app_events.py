"""The backend's own events meet the providers' webhooks: one person, one checkout."""

from __future__ import annotations

import copy
import json
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from tests.mappers.golden import FIXTURES
from tests.pipeline import ScriptedCustomerIO, ingest, outbox_rows
from tests.stage1.state.test_step import run, sent
from webhooks.stage1.state.guards import COMPLETED
from webhooks.storage.schema import identity_links

SESSION = "cs_test_a1B2c3D4e5"  # the Checkout Session of both fixtures below


def stripe_session(**changes: Any) -> dict[str, Any]:
    """The Stripe fixture's event with changes to its Checkout Session."""
    fixture = json.loads((FIXTURES / "stripe" / "checkout_session_completed_paid.json").read_text())
    event = copy.deepcopy(fixture["body"])
    event["data"]["object"].update(changes)
    return event


def events(cio: ScriptedCustomerIO) -> list[tuple[str, str, str | None]]:
    """(event name, who it was sent for, its cart_id), in the order sent: batched person
    events and anonymous events (Track API v1 /events)."""
    out = []
    for body in cio.bodies():
        if "anonymous_id" in body:
            who = json.dumps({"anonymous_id": body["anonymous_id"]})
            out.append((body["name"], who, body["data"].get("cart_id")))
        for item in body.get("batch", []):
            if item["action"] == "event":
                who = json.dumps(item["identifiers"])
                out.append((item["name"], who, item.get("attributes", {}).get("cart_id")))
    return out


def test_backend_checkout_then_stripes_order_are_one_person_and_one_checkout(
    engine: Engine, cio: ScriptedCustomerIO
) -> None:
    ingest(engine, "app", "checkout_started_stripe_session")
    run(engine, cio)
    ingest(engine, "stripe", "checkout_session_completed_paid")
    run(engine, cio)
    person = json.dumps({"id": "user_8842"})
    assert events(cio) == [
        ("checkout_started", person, SESSION),
        ("order_completed", person, SESSION),
    ]


def test_the_checkout_alone_finds_the_person_when_stripe_names_only_its_customer(
    engine: Engine, cio: ScriptedCustomerIO
) -> None:
    # No metadata and no client_reference_id on the session: Stripe's event names only
    # cus_TestAda01, and the backend's checkout_started linked the session to user_8842.
    ingest(engine, "app", "checkout_started_stripe_session")
    run(engine, cio)
    anonymous = stripe_session(metadata={}, client_reference_id=None)
    ingest(engine, "stripe", "checkout_session_completed_paid", **anonymous)
    run(engine, cio)
    person = json.dumps({"id": "user_8842"})
    assert events(cio) == [
        ("checkout_started", person, SESSION),
        ("order_completed", person, SESSION),
    ]
    with engine.connect() as conn:
        linked = conn.execute(
            sa.select(identity_links.c.person_id).where(
                identity_links.c.key == f"stripe:platform:checkout:{SESSION}"
            )
        ).scalar_one()
    assert linked == "user_8842"


def test_a_checkout_started_after_its_order_is_withheld_by_the_guard(
    engine: Engine, cio: ScriptedCustomerIO
) -> None:
    ingest(engine, "stripe", "checkout_session_completed_paid")
    run(engine, cio)
    ingest(engine, "app", "checkout_started_stripe_session")
    run(engine, cio)
    assert [name for name, _, _ in events(cio)] == ["order_completed"]
    [late] = [row for row in outbox_rows(engine) if row.payload.get("name") == "checkout_started"]
    assert (late.state, late.last_error) == ("suppressed", COMPLETED)


def test_an_anonymous_checkout_joins_the_buyer_once_stripe_names_them(
    engine: Engine, cio: ScriptedCustomerIO
) -> None:
    ingest(engine, "app", "checkout_started_anonymous_iso_time")
    run(engine, cio)
    order = stripe_session(id="cs_test_b2C3d4E5f6")
    ingest(engine, "stripe", "checkout_session_completed_paid", **order)
    run(engine, cio)
    assert events(cio) == [
        ("checkout_started", json.dumps({"anonymous_id": "app:anon_5d2f9c"}), "cs_test_b2C3d4E5f6"),
        ("order_completed", json.dumps({"id": "user_8842"}), "cs_test_b2C3d4E5f6"),
    ]
    # Customer.io merges the visitor's events into the person whose identify names them.
    # (Stripe's own session token is offered too, as for any Stripe guest checkout.)
    merged = {
        i["attributes"]["anonymous_id"]: i["identifiers"]
        for i in sent(cio, "identify")
        if "anonymous_id" in i.get("attributes", {})
    }
    assert merged["app:anon_5d2f9c"] == {"id": "user_8842"}


def test_a_visitor_who_logs_in_brings_their_anonymous_views_along(
    engine: Engine, cio: ScriptedCustomerIO
) -> None:
    visitor = {"customer_id": None, "email": None, "anonymous_id": "anon_77"}
    ingest(engine, "app", "product_viewed", id="evt_view_1", **visitor)
    run(engine, cio)
    # Logged in: the backend names both ids once.
    ingest(engine, "app", "product_viewed", id="evt_view_2", anonymous_id="anon_77")
    run(engine, cio)
    ingest(engine, "app", "product_viewed", id="evt_view_3", **visitor)
    run(engine, cio)
    person = json.dumps({"id": "user_8842"})
    assert [who for _, who, _ in events(cio)] == [
        json.dumps({"anonymous_id": "app:anon_77"}),
        person,
        person,  # the visitor id now leads to the person
    ]
    merged = [i for i in sent(cio, "identify") if i.get("attributes", {}).get("anonymous_id")]
    assert [(i["identifiers"], i["attributes"]["anonymous_id"]) for i in merged] == [
        ({"id": "user_8842"}, "app:anon_77")
    ]


def test_a_visitor_id_is_never_taken_for_a_user_id(engine: Engine, cio: ScriptedCustomerIO) -> None:
    # A visitor whose id happens to be a user's id: their views stay the visitor's, and
    # logging in as someone else merges the visitor, never user_8842's profile.
    ingest(engine, "app", "product_viewed", id="evt_user")  # user_8842's own view
    run(engine, cio)
    visitor = {"customer_id": None, "email": None, "anonymous_id": "user_8842"}
    ingest(engine, "app", "product_viewed", id="evt_visitor", **visitor)
    run(engine, cio)
    other = {"customer_id": "user_9001", "email": None, "anonymous_id": "user_8842"}
    ingest(engine, "app", "product_viewed", id="evt_login", **other)
    run(engine, cio)
    assert [who for _, who, _ in events(cio)] == [
        json.dumps({"id": "user_8842"}),
        json.dumps({"anonymous_id": "app:user_8842"}),
        json.dumps({"id": "user_9001"}),
    ]
    assert sent(cio, "merge") == []
