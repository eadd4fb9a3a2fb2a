"""The fake Customer.io over real HTTP: auth, validation, recording, dedup, faults, subprocess."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from webhooks.fakes.customerio import FakeCustomerIO, FakeCustomerIOClient
from webhooks.fakes.customerio.validation import MAX_REQUEST_BYTES

SITE_ID = "site-1"
API_KEY = "key-1"
_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_URL_LINE = re.compile(
    r"fake Customer\.io listening on (http://127\.0\.0\.1:(\d+)) \(site id (\S+),"
)


def new_ulid() -> str:
    """A random ULID: 128 bits in 26 Crockford characters (so the first is at most 7)."""
    value = int.from_bytes(os.urandom(16), "big")
    return "".join(_CROCKFORD[(value >> (5 * i)) & 31] for i in reversed(range(26)))


def identify(person: str = "stripe:cus_1", **attributes: Any) -> dict[str, Any]:
    return {
        "type": "person",
        "identifiers": {"id": person},
        "action": "identify",
        "attributes": attributes or {"plan": "pro"},
        "timestamp": 1_700_000_000,
    }


def event(person: str = "stripe:cus_1", name: str = "Order Completed", **kw: Any) -> dict[str, Any]:
    op = {
        "type": "person",
        "identifiers": {"id": person},
        "action": "event",
        "name": name,
        "id": new_ulid(),
        "timestamp": 1_700_000_001,
        "attributes": {"total": 12.5},
    }
    op.update(kw)
    return op


@pytest.fixture
def fake() -> Iterator[FakeCustomerIO]:
    with FakeCustomerIO(site_id=SITE_ID, api_key=API_KEY, hold_seconds=10.0) as server:
        yield server


@pytest.fixture
def api(fake: FakeCustomerIO) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=fake.url, auth=fake.auth, timeout=5.0) as client:
        yield client


@pytest.fixture
def control(fake: FakeCustomerIO) -> Iterator[FakeCustomerIOClient]:
    with FakeCustomerIOClient(fake.url) as client:
        yield client


# --- auth and region ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Basic " + "c2l0ZS0xOndyb25n"},  # site-1:wrong
        {"Authorization": "Basic " + "b3RoZXI6a2V5LTE="},  # other:key-1
        {"Authorization": "Basic not-base64!"},
        {"Authorization": "Bearer key-1"},
    ],
    ids=["missing", "wrong-key", "wrong-site", "garbled", "bearer"],
)
def test_bad_credentials_are_401(fake: FakeCustomerIO, headers: dict[str, str]) -> None:
    with httpx.Client(base_url=fake.url) as client:
        region = client.get("/api/v1/accounts/region", headers=headers)
        batch = client.post("/api/v2/batch", json={"batch": [identify()]}, headers=headers)
    assert region.status_code == batch.status_code == 401
    assert batch.json() == {"meta": {"error": "Unauthorized request"}}
    assert fake.operations() == []
    assert [r["status"] for r in fake.requests()] == [401, 401]


def test_region_with_the_right_credentials(fake: FakeCustomerIO, api: httpx.Client) -> None:
    response = api.get("/api/v1/accounts/region")
    assert response.status_code == 200
    assert response.json() == {"url": fake.url, "region": "us", "environment_id": 1}


def test_unknown_path_is_404(api: httpx.Client) -> None:
    assert api.get("/api/v1/nothing").status_code == 404
    assert api.get("/api/v2/batch").status_code == 404  # POST only


# --- v2 batch ----------------------------------------------------------------------------------


def test_valid_batch_is_accepted_and_recorded(fake: FakeCustomerIO, api: httpx.Client) -> None:
    batch = [
        identify(email="a@example.com"),
        event(),
        {"type": "person", "identifiers": {"email": "b@example.com"}, "action": "delete"},
        {"type": "person", "identifiers": {"cio_id": "a3000001"}, "action": "suppress"},
        {"type": "person", "identifiers": {"id": "stripe:cus_2"}, "action": "unsuppress"},
    ]
    before = time.time()
    response = api.post("/api/v2/batch", json={"batch": batch})
    assert response.status_code == 200
    assert response.json() == {}
    ops = fake.operations()
    assert [op["operation"] for op in ops] == batch
    assert [op["batch_index"] for op in ops] == [0, 1, 2, 3, 4]
    assert {op["endpoint"] for op in ops} == {"POST /api/v2/batch"}
    assert all(before <= op["received_at"] <= time.time() for op in ops)


@pytest.mark.parametrize(
    ("bad", "field"),
    [
        (event(id="01ARZ3NDEKTSV4RRFFQ69G5FAU"), "id"),  # U is not Crockford
        (event(id="81ARZ3NDEKTSV4RRFFQ69G5FAV"), "id"),  # first char over 7: more than 128 bits
        (event(id="01ARZ3NDEKTSV4RRFFQ69G5FA"), "id"),  # 25 characters
        ({k: v for k, v in event().items() if k != "id"}, "id"),
        ({k: v for k, v in event().items() if k != "name"}, "name"),
        (event(name="n" * 101), "name"),
        (event(timestamp=1_700_000_001.5), "timestamp"),
        (event(timestamp=1_700_000_001_000), "timestamp"),  # milliseconds
        (event(attributes={"blob": "x" * 100_001}), ""),  # over the 32 KB item limit first
        (identify(person="cio_abc"), "identifiers.id"),
        (identify(person="p" * 151), "identifiers.id"),
        (identify(big="x" * 1001), "attributes.big"),
        (identify(**{"n" * 151: 1}), "attributes." + "n" * 40),
        (identify(**{f"a{i}": i for i in range(301)}), "attributes"),
        ({**identify(), "identifiers": {"id": "x", "email": "x@example.com"}}, "identifiers"),
        ({**identify(), "identifiers": {"phone": "+15555550100"}}, "identifiers.phone"),
        ({**identify(), "action": "add_device"}, "action"),
        ({**identify(), "type": "object"}, "type"),
        ("not an object", ""),
    ],
    ids=[
        "ulid-alphabet",
        "ulid-overflow",
        "ulid-length",
        "missing-id",
        "missing-name",
        "long-name",
        "float-timestamp",
        "ms-timestamp",
        "oversize-item",
        "cio-prefixed-id",
        "long-id",
        "oversize-attribute",
        "long-attribute-name",
        "too-many-attributes",
        "two-identifiers",
        "phone-identifier",
        "unsupported-action",
        "object-type",
        "not-an-object",
    ],
)
def test_one_invalid_item_is_207_and_the_others_are_recorded(
    fake: FakeCustomerIO, api: httpx.Client, bad: Any, field: str
) -> None:
    good_before, good_after = identify(), event()
    response = api.post("/api/v2/batch", json={"batch": [good_before, bad, good_after]})
    assert response.status_code == 207
    errors = response.json()["errors"]
    assert errors
    assert {e["batch_index"] for e in errors} == {1}
    assert field in {e["field"] for e in errors}
    assert all(e["reason"] and e["message"] for e in errors)
    ops = fake.operations()
    assert [op["operation"] for op in ops] == [good_before, good_after]
    assert [op["batch_index"] for op in ops] == [0, 2]


def test_lowercase_ulid_and_limits_at_the_edge_are_accepted(
    fake: FakeCustomerIO, api: httpx.Client
) -> None:
    batch = [
        event(id=new_ulid().lower(), name="n" * 100, timestamp=10**11),
        identify(person="p" * 150, edge="é" * 500),  # 1000 bytes of UTF-8
        identify(**{f"a{i}": i for i in range(300)}),
    ]
    response = api.post("/api/v2/batch", json={"batch": batch})
    assert (response.status_code, response.json()) == (200, {})
    assert len(fake.operations()) == 3


@pytest.mark.parametrize(
    "body",
    [b"not json", b'{"batch": {}}', b"[]", b'{"batch": [NaN]}', b"\xff\xfe"],
    ids=["text", "batch-not-list", "array", "nan", "not-utf8"],
)
def test_malformed_batch_is_400(fake: FakeCustomerIO, api: httpx.Client, body: bytes) -> None:
    response = api.post("/api/v2/batch", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    assert response.json()["meta"]["error"]
    assert fake.operations() == []


def test_oversized_request_is_413(fake: FakeCustomerIO, api: httpx.Client) -> None:
    # Many small valid items, so only the total size is wrong.
    item = identify(note="x" * 900)
    count = MAX_REQUEST_BYTES // len(httpx.Request("POST", "/", json=item).content) + 10
    response = api.post("/api/v2/batch", json={"batch": [item] * count})
    assert response.status_code == 413
    assert fake.operations() == []
    # The connection is still usable afterwards: the body was read, not left in the socket.
    assert api.post("/api/v2/batch", json={"batch": [item]}).status_code == 200
    assert [r["status"] for r in fake.requests()] == [413, 200]


def test_duplicate_event_id_is_acknowledged_and_recorded_once(
    fake: FakeCustomerIO, api: httpx.Client, control: FakeCustomerIOClient
) -> None:
    first = event()
    again = event(name="Something Else", id=first["id"].lower())  # ULIDs are case-insensitive
    assert api.post("/api/v2/batch", json={"batch": [first]}).status_code == 200
    assert api.post("/api/v2/batch", json={"batch": [again, first]}).status_code == 200
    v1 = {"name": "Order Completed", "id": first["id"], "timestamp": 1_700_000_001}
    assert api.post("/api/v1/customers/stripe%3Acus_1/events", json=v1).status_code == 200
    assert [op["operation"] for op in fake.operations()] == [first]
    stats = control.stats()
    assert stats["duplicates_ignored"] == 3
    assert stats["operations"] == 1
    assert stats["requests"] == 3
    assert stats["by_status"] == {"200": 3}


def test_concurrent_duplicates_are_recorded_once(fake: FakeCustomerIO) -> None:
    op = event()

    def send() -> int:
        with httpx.Client(base_url=fake.url, auth=fake.auth) as client:
            return client.post("/api/v2/batch", json={"batch": [op]}).status_code

    results: list[int] = []
    threads = [threading.Thread(target=lambda: results.append(send())) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [200] * 8
    assert len(fake.operations()) == 1
    assert fake.stats()["duplicates_ignored"] == 7


# --- v1 endpoints ------------------------------------------------------------------------------


def test_anonymous_event(fake: FakeCustomerIO, api: httpx.Client) -> None:
    body = {
        "name": "Checkout Started",
        "anonymous_id": "anon-1",
        "id": new_ulid(),
        "timestamp": 1_700_000_000,
        "data": {"cart": 3},
    }
    response = api.post("/api/v1/events", json=body)
    assert (response.status_code, response.json()) == (200, {})
    bad = api.post("/api/v1/events", json={**body, "id": "not-a-ulid"})
    assert bad.status_code == 400
    assert bad.json()["errors"][0]["field"] == "id"
    too_much = api.post(
        "/api/v1/events", json={**body, "id": new_ulid(), "data": {"x": "y" * 100_000}}
    )
    assert too_much.status_code == 400
    assert too_much.json()["errors"][0]["reason"] == "too_large"
    [op] = fake.operations()
    assert op["endpoint"] == "POST /api/v1/events"
    assert op["operation"] == body


def test_v1_person_endpoints_decode_the_identifier(fake: FakeCustomerIO, api: httpx.Client) -> None:
    encoded = "a%2Bb%40example.com"  # a+b@example.com, encoded as quote(x, safe="") does
    ev = {"name": "Refund Issued", "id": new_ulid(), "timestamp": 1_700_000_000, "data": {}}
    attributes = {"plan": "pro", "_timestamp": 1_700_000_000}
    assert api.put(f"/api/v1/customers/{encoded}", json=attributes).status_code == 200
    assert api.post(f"/api/v1/customers/{encoded}/events", json=ev).status_code == 200
    assert api.post("/api/v1/customers/shop%2F1/suppress").status_code == 200
    assert api.delete("/api/v1/customers/cio_a3000001").status_code == 200
    assert [(op["endpoint"], op["identifier"], op["operation"]) for op in fake.operations()] == [
        ("PUT /api/v1/customers/{identifier}", "a+b@example.com", attributes),
        ("POST /api/v1/customers/{identifier}/events", "a+b@example.com", ev),
        ("POST /api/v1/customers/{identifier}/suppress", "shop/1", None),
        ("DELETE /api/v1/customers/{identifier}", "cio_a3000001", None),
    ]


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("PUT", "/api/v1/customers/x", {"_timestamp": 1_700_000_000_000}),
        ("PUT", "/api/v1/customers/x", {"big": "x" * 1001}),
        ("PUT", "/api/v1/customers/" + "p" * 151, {}),
        ("POST", "/api/v1/customers/x/events", {"name": "", "id": new_ulid()}),
        ("POST", "/api/v1/customers/x/events", {"name": "E"}),
    ],
    ids=["ms-timestamp", "oversize-attribute", "long-id", "blank-name", "no-id"],
)
def test_invalid_v1_request_is_400(
    fake: FakeCustomerIO, api: httpx.Client, method: str, path: str, body: Any
) -> None:
    response = api.request(method, path, json=body)
    assert response.status_code == 400
    assert response.json()["errors"]
    assert fake.operations() == []


# --- faults ------------------------------------------------------------------------------------


def test_latency(fake: FakeCustomerIO, api: httpx.Client) -> None:
    fake.set_faults(latency_ms=300)
    started = time.monotonic()
    response = api.get("/api/v1/accounts/region")
    elapsed = time.monotonic() - started
    assert response.status_code == 200
    assert 0.3 <= elapsed < 2.0
    fake.set_faults()
    started = time.monotonic()
    api.get("/api/v1/accounts/region")
    assert time.monotonic() - started < 0.25


def test_status_for_n_times_then_healthy(
    fake: FakeCustomerIO, api: httpx.Client, control: FakeCustomerIOClient
) -> None:
    assert control.set_faults(status=500, times=2)["status"] == 500
    statuses = [api.post("/api/v2/batch", json={"batch": [event()]}).status_code for _ in range(3)]
    assert statuses == [500, 500, 200]
    assert len(fake.operations()) == 1  # a faulted request is not processed
    assert control.faults()["status"] is None
    assert [r["status"] for r in control.requests()] == [500, 500, 200]


@pytest.mark.parametrize(("status", "retry_after"), [(429, 7), (503, 2), (429, None)])
def test_status_with_and_without_retry_after(
    fake: FakeCustomerIO, api: httpx.Client, status: int, retry_after: int | None
) -> None:
    fake.set_faults(status=status, retry_after=retry_after)
    for _ in range(2):  # times=None: until changed
        response = api.get("/api/v1/accounts/region")
        assert response.status_code == status
        assert response.headers.get("Retry-After") == (
            str(retry_after) if retry_after is not None else None
        )
    fake.set_faults()
    assert api.get("/api/v1/accounts/region").status_code == 200


def test_401_fault_answers_like_bad_credentials(fake: FakeCustomerIO, api: httpx.Client) -> None:
    fake.set_faults(status=401, times=1)
    response = api.get("/api/v1/accounts/region")
    assert (response.status_code, response.json()) == (
        401,
        {"meta": {"error": "Unauthorized request"}},
    )
    assert api.get("/api/v1/accounts/region").status_code == 200


def test_down_closes_without_a_response(fake: FakeCustomerIO, api: httpx.Client) -> None:
    fake.set_faults(down=True)
    with pytest.raises(httpx.TransportError):
        api.post("/api/v2/batch", json={"batch": [event()]})
    with pytest.raises(httpx.TransportError):
        api.get("/api/v1/accounts/region")
    assert fake.operations() == []
    assert [r["fault"] for r in fake.requests()] == ["down", "down"]
    fake.set_faults()
    assert api.get("/api/v1/accounts/region").status_code == 200


def test_down_for_n_requests(fake: FakeCustomerIO, api: httpx.Client) -> None:
    fake.set_faults(down=True, times=1)
    with pytest.raises(httpx.TransportError):
        api.get("/api/v1/accounts/region")
    assert api.get("/api/v1/accounts/region").status_code == 200


def test_timeout_then_cleared(fake: FakeCustomerIO, api: httpx.Client) -> None:
    fake.set_faults(timeout=True)
    started = time.monotonic()
    with pytest.raises(httpx.ReadTimeout):
        api.post("/api/v2/batch", json={"batch": [event()]}, timeout=0.3)
    assert time.monotonic() - started < 2.0
    assert fake.operations() == []
    assert fake.requests()[-1]["fault"] == "timeout"
    fake.set_faults()
    assert api.post("/api/v2/batch", json={"batch": [event()]}).status_code == 200
    assert len(fake.operations()) == 1


def test_control_api_answers_while_a_request_hangs(
    fake: FakeCustomerIO, control: FakeCustomerIOClient
) -> None:
    fake.set_faults(timeout=True)
    outcome: list[BaseException | int] = []

    def hang() -> None:
        with httpx.Client(base_url=fake.url, auth=fake.auth, timeout=8.0) as client:
            try:
                outcome.append(client.get("/api/v1/accounts/region").status_code)
            except httpx.TransportError as exc:
                outcome.append(exc)

    thread = threading.Thread(target=hang)
    thread.start()
    deadline = time.monotonic() + 5
    while not control.requests() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert control.stats()["by_status"] == {"timeout": 1}
    started = time.monotonic()
    assert control.set_faults() == {
        "latency_ms": 0,
        "status": None,
        "retry_after": None,
        "times": None,
        "timeout": False,
        "down": False,
    }
    thread.join(timeout=5)
    # Clearing the fault let the held request go at once (closed unanswered), long before 8 s.
    assert time.monotonic() - started < 2.0
    assert len(outcome) == 1
    assert isinstance(outcome[0], httpx.TransportError)


def test_bad_faults_are_400(fake: FakeCustomerIO) -> None:
    with httpx.Client(base_url=fake.url) as client:
        for body in ({"status": "500"}, {"latency_ms": -1}, {"down": 1}, {"oops": True}, [1]):
            response = client.post("/_fake/faults", json=body)
            assert response.status_code == 400, body
    assert fake.recorder.faults().disruptive is False


def test_reset_forgets_everything(
    fake: FakeCustomerIO, api: httpx.Client, control: FakeCustomerIOClient
) -> None:
    op = event()
    api.post("/api/v2/batch", json={"batch": [op]})
    control.set_faults(status=503)
    control.reset()
    assert control.operations() == []
    assert control.requests() == []
    assert control.stats() == {
        "requests": 0,
        "operations": 0,
        "duplicates_ignored": 0,
        "by_status": {},
    }
    # Faults cleared and dedup ids forgotten: the same event is recorded again.
    assert api.post("/api/v2/batch", json={"batch": [op]}).status_code == 200
    assert [o["operation"] for o in control.operations()] == [op]


def test_stop_then_start_on_the_same_port(fake: FakeCustomerIO, api: httpx.Client) -> None:
    port = fake.port
    assert api.get("/api/v1/accounts/region").status_code == 200
    fake.stop()
    with pytest.raises(httpx.TransportError):
        api.get("/api/v1/accounts/region")  # neither the kept-alive connection nor a new one
    fake.start()
    assert fake.port == port
    assert api.get("/api/v1/accounts/region").status_code == 200


# --- a separate process ------------------------------------------------------------------------


def _start(args: list[str]) -> tuple[subprocess.Popen[str], str, str]:
    """Start a fake process on port 0; return it, its URL and the site id it announced."""
    process = subprocess.Popen(
        [sys.executable, "-m", *args, "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    match = _URL_LINE.search(line)
    if match is None:
        process.kill()
        pytest.fail(f"no URL line: {line!r}; stderr: {process.communicate(timeout=5)[1]}")
    assert int(match.group(2)) > 0
    return process, match.group(1), match.group(3)


@pytest.mark.parametrize(
    ("args", "site_id", "api_key", "stop"),
    [
        (["webhooks", "dev", "fake-customerio"], "fake-site", "fake-key", signal.SIGTERM),
        (
            ["webhooks", "dev", "fake-customerio", "--site-id", "s9", "--api-key", "k9"],
            "s9",
            "k9",
            signal.SIGINT,
        ),
    ],
    ids=["defaults-sigterm", "options-sigint"],
)
def test_subprocess(args: list[str], site_id: str, api_key: str, stop: signal.Signals) -> None:
    process, url, announced_site = _start(args)
    try:
        assert announced_site == site_id
        with httpx.Client(base_url=url, auth=(site_id, api_key), timeout=5.0) as client:
            response = client.post("/api/v2/batch", json={"batch": [event()]})
            assert response.status_code == 200
            assert client.get("/api/v1/accounts/region").json()["url"] == url
        with FakeCustomerIOClient(url) as control:
            assert len(control.operations()) == 1
    finally:
        process.send_signal(stop)
        try:
            returncode = process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            raise
    assert returncode == 0
