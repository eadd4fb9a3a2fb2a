"""Both stages against a real database (SQLite and PostgreSQL) and a scripted Track API."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from tests.mappers.golden import REFUND_LISTED_ON_THE_2020_CHARGE, configs
from tests.pipeline import ScriptedCustomerIO, inbox_rows, ingest, outbox_rows
from webhooks.stage1.process import process_batch
from webhooks.stage2.customerio import CustomerIO
from webhooks.stage2.deliver import deliver_batch
from webhooks.storage import inbox as inbox_store
from webhooks.storage import outbox as outbox_store
from webhooks.storage.schema import Lane, outbox

CONFIG = configs(stripe_payment_intent_events=True)


def events(engine: Engine) -> list[Any]:
    return [r for r in outbox_rows(engine) if r.kind == "event"]


def run(engine: Engine, cio: ScriptedCustomerIO | None, owner: str = "w1") -> None:
    process_batch(engine, owner, CONFIG)
    deliver_batch(engine, owner, cio.client() if cio else None)


def test_overlapping_webhooks_make_one_operation_with_a_stable_id(
    engine: Engine, cio: ScriptedCustomerIO
) -> None:
    for _ in range(5):  # the same delivery five times: one inbox row
        ingest(engine, "stripe", "checkout_session_completed_paid")
    ingest(engine, "stripe", "payment_intent_succeeded_from_checkout")
    run(engine, cio)
    events = [r for r in outbox_rows(engine) if r.kind == "event"]
    assert [e.op_key for e in events] == ["order_completed:stripe:platform:pi_3TestPay01"]
    [batch] = cio.bodies()
    sent = [item for item in batch["batch"] if item["action"] == "event"]
    assert [item["id"] for item in sent] == [events[0].op_id]
    assert sent[0]["name"] == "order_completed"
    assert sent[0]["identifiers"] == {"id": "user_8842"}
    assert sent[0]["attributes"]["total"] == 49.5
    # Identify of the person goes before the event that introduced them.
    assert [item["action"] for item in batch["batch"]][:2] == ["identify", "event"]
    assert all(r.state == "delivered" for r in outbox_rows(engine))
    assert [r.state for r in inbox_rows(engine)] == ["done", "done"]


def test_dry_run_records_instead_of_sending(engine: Engine) -> None:
    ingest(engine, "shopify", "order_create")
    run(engine, None)
    rows = outbox_rows(engine)
    assert rows
    assert {r.state for r in rows} == {"dry_run"}


def test_207_dead_letters_only_the_refused_item(engine: Engine, cio: ScriptedCustomerIO) -> None:
    ingest(engine, "stripe", "checkout_session_completed_paid")
    cio.answers.append(
        httpx.Response(
            207,
            json={
                "errors": [
                    {"batch_index": 1, "reason": "invalid", "field": "name", "message": "bad"}
                ]
            },
        )
    )
    run(engine, cio)
    identify, event = outbox_rows(engine)
    assert (identify.state, event.state) == ("delivered", "dead")
    assert event.last_status == 207
    assert "invalid" in event.last_error


def test_retryable_failure_schedules_a_retry_with_the_same_id(
    engine: Engine, cio: ScriptedCustomerIO
) -> None:
    ingest(engine, "stripe", "payment_intent_succeeded_standalone")
    cio.answers.append(httpx.Response(429, headers={"Retry-After": "30"}))
    run(engine, cio)
    [row] = events(engine)
    assert (row.state, row.attempts, row.last_status) == ("pending", 1, 429)
    wait = row.next_attempt_at - datetime.now(UTC)
    assert timedelta(seconds=25) < wait <= timedelta(seconds=30)  # Retry-After honoured
    deliver_batch(engine, "w1", cio.client())
    assert len(cio.requests) == 1  # not due yet: no hot loop
    with engine.begin() as conn:
        conn.execute(sa.update(outbox).values(next_attempt_at=datetime.now(UTC)))
    deliver_batch(engine, "w1", cio.client())
    first, second = cio.bodies()
    assert first == second  # the same operations, the same ULID
    assert {r.state for r in outbox_rows(engine)} == {"delivered"}


def test_network_error_retries_and_old_operations_are_given_up(
    engine: Engine, cio: ScriptedCustomerIO
) -> None:
    ingest(engine, "stripe", "payment_intent_succeeded_standalone")
    cio.answers.append(httpx.ConnectError("refused"))
    run(engine, cio)
    assert events(engine)[0].state == "pending"
    with engine.begin() as conn:
        conn.execute(
            sa.update(outbox).values(
                next_attempt_at=datetime.now(UTC), created_at=datetime.now(UTC) - timedelta(days=4)
            )
        )
    cio.answers.append(httpx.Response(503))
    deliver_batch(engine, "w1", cio.client(), max_age=timedelta(hours=72))
    [row] = events(engine)
    assert (row.state, row.last_status) == ("dead", 503)


def test_400_on_a_batch_splits_it_then_dead_letters_the_culprit(
    engine: Engine, cio: ScriptedCustomerIO
) -> None:
    ingest(engine, "stripe", "checkout_session_completed_paid")
    cio.answers += [
        httpx.Response(400, text="malformed"),
        httpx.Response(200, json={}),
        httpx.Response(400, text="bad event"),
    ]
    run(engine, cio)
    assert {r.solo for r in outbox_rows(engine)} == {True}
    deliver_batch(engine, "w1", cio.client())
    identify, event = outbox_rows(engine)
    assert identify.state == "delivered"
    assert (event.state, event.last_status) == ("dead", 400)
    assert "bad event" in event.last_error
    assert [len(body["batch"]) for body in cio.bodies()] == [2, 1, 1]


def test_401_pauses_without_dropping_or_counting_attempts(
    engine: Engine, cio: ScriptedCustomerIO
) -> None:
    ingest(engine, "stripe", "payment_intent_succeeded_standalone")
    cio.answers.append(httpx.Response(401))
    process_batch(engine, "w1", CONFIG)
    outcome = deliver_batch(engine, "w1", cio.client())
    assert outcome.auth_failed
    [row] = events(engine)
    assert (row.state, row.attempts, row.lease_owner) == ("pending", 0, None)
    deliver_batch(engine, "w1", cio.client())
    assert events(engine)[0].state == "delivered"


def test_leases_let_another_worker_take_over_a_dead_workers_rows(
    engine: Engine, cio: ScriptedCustomerIO
) -> None:
    ingest(engine, "stripe", "payment_intent_succeeded_standalone")
    process_batch(engine, "w1", CONFIG)
    from webhooks.storage.queue import claim

    # w1 claims and dies before sending.
    claim(
        engine,
        outbox,
        "w1",
        10,
        timedelta(seconds=60),
        queues=[[outbox.c.state == "pending"]],
        order_by=[outbox.c.id],
    )
    assert deliver_batch(engine, "w2", cio.client()).claimed == 0  # leased to w1
    with engine.begin() as conn:  # the lease runs out
        conn.execute(sa.update(outbox).values(lease_until=datetime.now(UTC) - timedelta(1)))
    assert deliver_batch(engine, "w2", cio.client()).claimed == 2
    assert {r.state for r in outbox_rows(engine)} == {"delivered"}


def test_mapping_error_dead_letters_the_inbox_row_and_can_be_requeued(
    engine: Engine, cio: ScriptedCustomerIO
) -> None:
    ingest(engine, "stripe", "refund_created_partial", data={})
    run(engine, cio)
    [row] = inbox_rows(engine)
    assert row.state == "dead"
    assert "data.object" in row.last_error
    assert inbox_store.requeue_dead(engine) == 1
    assert inbox_rows(engine)[0].state == "pending"


def test_dead_operations_can_be_requeued_after_a_fix(
    engine: Engine, cio: ScriptedCustomerIO
) -> None:
    ingest(engine, "stripe", "payment_intent_succeeded_standalone")
    cio.answers += [httpx.Response(422, text="nope")] * 3  # the batch, then each alone
    run(engine, cio)
    deliver_batch(engine, "w1", cio.client())
    assert {r.state for r in outbox_rows(engine)} == {"dead"}
    assert outbox_store.requeue_dead(engine) == 2
    deliver_batch(engine, "w1", cio.client())
    assert {r.state for r in outbox_rows(engine)} == {"delivered"}


def test_live_lane_goes_before_backfill(engine: Engine, cio: ScriptedCustomerIO) -> None:
    ingest(engine, "stripe", "payment_intent_succeeded_standalone")
    ingest(engine, "stripe", "payment_intent_succeeded_connect_account")
    from webhooks.storage.schema import inbox

    with engine.begin() as conn:  # the first one is a replay
        conn.execute(sa.update(inbox).where(inbox.c.id == 1).values(lane=1))
    process_batch(engine, "w1", CONFIG)
    deliver_batch(engine, "w1", cio.client(), limit=2)
    [body] = cio.bodies()
    assert body["batch"][0]["identifiers"] == {"id": "stripe:acct_1TestMerchant:cus_TestConn"}


def test_a_fact_naming_no_one_waits_for_a_report_that_names_the_person(
    engine: Engine, cio: ScriptedCustomerIO
) -> None:
    # refund.created names no customer, only its charge; charge.refunded names both.
    ingest(
        engine,
        "stripe",
        "refund_created_partial",
        **REFUND_LISTED_ON_THE_2020_CHARGE,
    )
    run(engine, cio)
    assert events(engine) == []
    [waiting] = inbox_rows(engine)
    assert waiting.state == "waiting"
    assert "waits for an event naming the person" in waiting.last_error
    ingest(engine, "stripe", "charge_refunded_with_refund_list_2020")
    run(engine, cio)
    run(engine, cio)  # the woken refund.created maps to the same fact: nothing more
    assert {row.state for row in inbox_rows(engine)} == {"done"}
    [refund] = events(engine)
    assert (refund.state, refund.person_id) == ("delivered", "stripe:cus_TestAda01")
    sent = [i for body in cio.bodies() for i in body["batch"] if i["action"] == "event"]
    assert [i["name"] for i in sent] == ["refund_issued"]


def test_read_timeout_is_retried(engine: Engine, cio: ScriptedCustomerIO) -> None:
    ingest(engine, "stripe", "payment_intent_succeeded_standalone")
    cio.answers.append(httpx.ReadTimeout("slow"))
    run(engine, cio)
    [row] = events(engine)
    assert (row.state, row.attempts, row.last_status) == ("pending", 1, None)
    assert "ReadTimeout" in row.last_error


def test_a_worker_whose_lease_lapsed_writes_nothing(engine: Engine) -> None:
    import pytest

    from webhooks.stage1.process import LeaseLost, _Writer, map_row
    from webhooks.stage1.state.step import StateConfig
    from webhooks.storage.queue import claim
    from webhooks.storage.schema import inbox

    ingest(engine, "stripe", "checkout_session_completed_paid")
    [row] = claim(
        engine,
        inbox,
        "slow",
        10,
        timedelta(seconds=60),
        queues=[[inbox.c.state == "pending"]],
        order_by=[inbox.c.id],
    )
    actions = map_row(row, CONFIG)
    with engine.begin() as conn:  # the slow worker's lease runs out; another maps the row
        conn.execute(sa.update(inbox).values(lease_until=datetime.now(UTC) - timedelta(1)))
    assert process_batch(engine, "fast", CONFIG) == 1
    before = [(r.id, r.state) for r in outbox_rows(engine)]
    with pytest.raises(LeaseLost):
        _Writer(engine, "slow", False, StateConfig()).store([(row, actions)], [])
    assert [(r.id, r.state) for r in outbox_rows(engine)] == before
    assert inbox_rows(engine)[0].state == "done"


def test_an_overlong_id_is_sent_as_its_digest_without_holding_up_the_batch(
    engine: Engine, cio: ScriptedCustomerIO
) -> None:
    long_id = "u" * 300  # Stripe metadata allows 500 characters
    ingest(
        engine,
        "stripe",
        "customer_created",
        id="evt_long",
        data={
            "object": {
                "id": "cus_Long",
                "object": "customer",
                "email": "l@example.test",
                "metadata": {"customer_id": long_id},
            }
        },
    )
    ingest(engine, "stripe", "checkout_session_completed_paid")
    run(engine, cio)
    assert [r.state for r in inbox_rows(engine)] == ["done", "done"]
    # Over Customer.io's 150 bytes: sent under a stable digest of the id instead.
    long_op = next(r for r in outbox_rows(engine) if r.inbox_id == 1)
    expected = "sha256:" + hashlib.sha256(long_id.encode()).hexdigest()
    assert (long_op.state, long_op.person_id) == ("delivered", expected)
    assert {r.state for r in outbox_rows(engine) if r.inbox_id == 2} == {"delivered"}


def test_a_replay_after_a_fix_revives_a_dead_operation(
    engine: Engine, cio: ScriptedCustomerIO
) -> None:
    from webhooks.storage.schema import inbox

    ingest(engine, "stripe", "payment_intent_succeeded_standalone")
    cio.answers.append(
        httpx.Response(207, json={"errors": [{"batch_index": 1, "reason": "invalid"}]})
    )
    run(engine, cio)
    [event] = events(engine)
    assert event.state == "dead"
    with engine.begin() as conn:  # the replay: the stored delivery goes through again
        conn.execute(sa.update(inbox).values(state="pending", lane=1))
    run(engine, cio)
    [event] = events(engine)
    assert (event.state, event.attempts, event.lane) == ("delivered", 1, 1)


def test_stopping_hands_the_pass_back_unsent(engine: Engine, cio: ScriptedCustomerIO) -> None:
    import threading

    ingest(engine, "stripe", "checkout_session_completed_paid")
    process_batch(engine, "w1", CONFIG)
    stop = threading.Event()
    stop.set()  # SIGTERM arrived
    outcome = deliver_batch(engine, "w1", cio.client(), stop=stop)
    assert outcome.claimed == 2
    assert cio.requests == []
    assert {(r.state, r.lease_owner, r.attempts) for r in outbox_rows(engine)} == {
        ("pending", None, 0)
    }


def test_redaction_purges_the_persons_queued_operations(
    engine: Engine, cio: ScriptedCustomerIO
) -> None:
    ingest(engine, "shopify", "order_create")
    process_batch(engine, "w1", CONFIG)  # queued, not yet sent
    queued = {r.person_id for r in outbox_rows(engine)}
    ingest(engine, "shopify", "customers_redact")
    run(engine, cio)
    rows = outbox_rows(engine)
    deletes = [r for r in rows if r.kind == "delete"]
    assert [d.state for d in deletes] == ["delivered"]
    assert deletes[0].person_id in queued
    purged = [r for r in rows if r.person_id == deletes[0].person_id and r.kind != "delete"]
    assert purged
    assert {(r.state, r.last_error) for r in purged} == {
        ("dead", "person redacted before delivery")
    }
    assert all(r.payload == {} for r in purged)


def test_dry_run_records_operations_directly(engine: Engine) -> None:
    ingest(engine, "shopify", "order_create")
    process_batch(engine, "w1", CONFIG, dry_run=True)
    rows = outbox_rows(engine)
    assert rows
    assert {(r.state, r.lease_owner) for r in rows} == {("dry_run", None)}
    assert deliver_batch(engine, "w1", None).claimed == 0  # nothing left to claim


def test_the_biggest_order_keeps_its_purchase_event_within_customerios_limit(
    engine: Engine, cio: ScriptedCustomerIO
) -> None:
    # A Shopify order of 250 lines with ordinary names (a ~100 KB webhook) used to lose
    # its order_completed to "operation over 32000 bytes".
    import json

    from tests.mappers.golden import FIXTURES, parse
    from webhooks.core.operations import MAX_ITEM_BYTES
    from webhooks.storage.inbox import store_delivery

    fixture = json.loads((FIXTURES / "shopify" / "order_create.json").read_text())
    body = fixture["body"]
    template = body["line_items"][0]
    body["line_items"] = [
        {
            **template,
            "id": 16100000100000 + i,
            "name": f"Hand-thrown stoneware dinner plate, speckled glaze, 27 cm - set {i}",
            "title": f"Hand-thrown stoneware dinner plate, speckled glaze, 27 cm - set {i}",
            "variant_id": 44000000100000 + i,
            "sku": f"PLATE-SPK-{i:04}",
            "price": f"{10 + i % 50}.00",
        }
        for i in range(250)
    ]
    headers = {k.lower(): v for k, v in fixture["headers"].items()}
    raw = json.dumps(body).encode()
    assert len(raw) > 100_000
    store_delivery(engine, parse("shopify", raw, headers))
    run(engine, cio)
    [order] = [r for r in outbox_rows(engine) if r.op_key.startswith("order_completed:")]
    assert (order.state, order.last_error) == ("delivered", None)
    sent = next(
        item
        for batch in cio.bodies()
        for item in batch.get("batch", [])
        if item.get("name") == "order_completed"
    )
    assert len(json.dumps(sent, separators=(",", ":")).encode()) <= MAX_ITEM_BYTES
    data = sent["attributes"]
    assert data["items_complete"] is False
    assert data["item_count"] == 250
    assert 0 < len(data["items"]) <= 250
    assert all(len(item.get("name", "")) <= 60 for item in data["items"])
    assert data["total"] == float(body["total_price"])  # totals stay complete


def test_a_failed_group_is_recorded_in_one_statement(
    engine: Engine, cio: ScriptedCustomerIO
) -> None:
    # During an outage every failed group is written back; one UPDATE per operation
    # held SQLite's write lock long enough to slow webhook acknowledgements 5-10x.
    for case in ("checkout_session_completed_paid", "invoice_paid_kwd", "customer_created"):
        ingest(engine, "stripe", case)
    process_batch(engine, "w1", CONFIG)
    queued = len(outbox_rows(engine))
    cio.answers.append(httpx.Response(503))
    updates: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith("UPDATE"):
            updates.append(statement)

    sa.event.listen(engine, "before_cursor_execute", record)
    try:
        deliver_batch(engine, "w1", cio.client())
    finally:
        sa.event.remove(engine, "before_cursor_execute", record)
    rows = outbox_rows(engine)
    assert {(r.state, r.attempts, r.last_status) for r in rows} == {("pending", 1, 503)}
    assert queued >= 4
    # The claim, and the failure written back once (not once per operation).
    assert len(updates) <= 3, updates


class PriorityRecorder(CustomerIO):
    """The real client, noting whether each call gave way to live ones at the limit."""

    def __init__(self, http: httpx.Client) -> None:
        super().__init__(http, max_rps=1000)
        self.background: list[bool] = []

    def _call(
        self, method: str, path: str, body: Any = None, background: bool = False
    ) -> httpx.Response:
        self.background.append(background)
        return super()._call(method, path, body, background)


@pytest.mark.parametrize(
    ("lanes", "gives_way"),
    [((Lane.LIVE,), False), (None, False), ((Lane.REPLAY, Lane.BACKFILL, Lane.HISTORY), True)],
)
def test_background_lanes_give_way_to_live_calls_at_the_rate_limit(
    engine: Engine, cio: ScriptedCustomerIO, lanes: tuple[int, ...] | None, gives_way: bool
) -> None:
    ingest(engine, "stripe", "checkout_session_completed_paid")
    process_batch(engine, "w1", CONFIG)
    if gives_way:
        with engine.begin() as conn:
            conn.execute(sa.update(outbox).values(lane=Lane.BACKFILL))
    http = httpx.Client(
        base_url="https://track.example.test",
        transport=httpx.MockTransport(cio.handler),
        auth=("site", "key"),
    )
    client = PriorityRecorder(http)
    outcome = deliver_batch(engine, "w1", client, lanes=lanes)
    assert outcome.claimed >= 2  # an identify and the order, in one batch
    assert client.background == [gives_way]
    assert {r.state for r in outbox_rows(engine)} == {"delivered"}
