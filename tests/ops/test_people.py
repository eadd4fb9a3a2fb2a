"""`webhooks export-person` and `webhooks data-requests`, on a real Shopify request."""

from __future__ import annotations

import json

from sqlalchemy.engine import Engine

from tests.ops.conftest import Run, as_json, post_signed, worker
from tests.pipeline import ScriptedCustomerIO, outbox_rows


def a_customer_with_a_request(engine: Engine, cio: ScriptedCustomerIO) -> str:
    post_signed(engine, "shopify", "order_create")
    worker(engine, cio).run_once()
    post_signed(engine, "shopify", "customers_data_request")
    worker(engine, cio).run_once()
    person = next(row.person_id for row in outbox_rows(engine) if row.kind == "identify")
    assert person
    return str(person)


def test_export_person_holds_everything_about_them(
    engine: Engine, cio: ScriptedCustomerIO, run: Run
) -> None:
    person = a_customer_with_a_request(engine, cio)
    found = json.loads(run("export-person", person).stdout)
    assert found["person_id"] == person
    assert found["totals"]["order_count"] == 1
    assert [fact["kind"] for fact in found["facts"]] == ["order"]
    assert {op["kind"] for op in found["operations"]} == {"identify", "event"}
    assert [d["type"] for d in found["deliveries"]] == ["orders/create"]
    # The raw webhook as received (until purged), with what it says about them.
    assert "email" in json.dumps(found["deliveries"][0]["body"])
    assert any(key["key"].startswith("email:") for key in found["identity_keys"])
    [request] = found["data_requests"]
    assert request["answered_at"] is None
    # A linked key finds the same person.
    email_key = next(k["key"] for k in found["identity_keys"] if k["key"].startswith("email:"))
    assert json.loads(run("export-person", email_key).stdout)["person_id"] == person


def test_a_data_request_is_listed_open_then_answered(
    engine: Engine, cio: ScriptedCustomerIO, run: Run
) -> None:
    person = a_customer_with_a_request(engine, cio)
    [request] = as_json(run("data-requests", "list", "--open", "--json"))
    assert (request["person_id"], request["request_id"]) == (person, "7300000001")
    assert "OPEN" in run("data-requests", "list").stdout
    answered = json.loads(run("data-requests", "export", request["key"], "--mark-answered").stdout)
    assert answered["person"]["person_id"] == person
    assert answered["request"]["answered_at"] is not None
    assert as_json(run("data-requests", "list", "--open", "--json")) == []
    assert len(as_json(run("data-requests", "list", "--json"))) == 1


def test_unknown_people_and_requests_are_clear_errors(engine: Engine, run: Run) -> None:
    result = run("export-person", "nobody:1")
    assert (result.exit_code, result.stderr.strip()) == (
        1,
        "Error: nothing is held about 'nobody:1' (a person id or a linked key)",
    )
    result = run("data-requests", "export", "shopify:nope")
    assert result.exit_code == 1
    assert "no data request 'shopify:nope'" in result.stderr
    assert run("data-requests", "list").stdout.strip() == "No data requests."
