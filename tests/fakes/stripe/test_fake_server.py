"""The fake Stripe API over real HTTP: auth, pagination, accounts, faults, control API, process."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from webhooks.fakes.stripe import DEFAULT_API_KEY, FakeStripe

KEY = DEFAULT_API_KEY
_URL_LINE = re.compile(r"fake Stripe listening on (http://127\.0\.0\.1:(\d+)) \(api key (\S+)\)")


def items(count: int, prefix: str = "li") -> list[dict[str, Any]]:
    return [
        {"id": f"{prefix}_{i}", "description": f"thing {i}", "quantity": 1} for i in range(count)
    ]


@pytest.fixture
def api(fake_stripe: FakeStripe) -> Iterator[httpx.Client]:
    """An httpx client of the fake, authenticated as Stripe's library does (Bearer)."""
    headers = {"Authorization": f"Bearer {KEY}"}
    with httpx.Client(base_url=fake_stripe.url, headers=headers, timeout=5.0) as client:
        yield client


# --- auth -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer sk_test_wrong", f"Basic {KEY}", "Bearer", f"Token {KEY}"],
    ids=["none", "wrong-key", "basic-not-base64", "empty", "other-scheme"],
)
def test_requests_without_the_key_are_401_in_stripes_shape(
    fake_stripe: FakeStripe, authorization: str | None
) -> None:
    fake_stripe.add_customer({"id": "cus_1"})
    headers = {"Authorization": authorization} if authorization else {}
    response = httpx.get(f"{fake_stripe.url}/v1/customers/cus_1", headers=headers)
    assert response.status_code == 401
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["message"]
    assert "sk_test" not in response.text  # not even the wrong key is echoed


def test_basic_auth_with_the_key_as_user_name_is_accepted(fake_stripe: FakeStripe) -> None:
    fake_stripe.add_customer({"id": "cus_1"})
    response = httpx.get(f"{fake_stripe.url}/v1/customers/cus_1", auth=(KEY, ""))
    assert response.status_code == 200


# --- line items -------------------------------------------------------------------------------


def test_line_items_paginate_with_limit_and_starting_after(
    fake_stripe: FakeStripe, api: httpx.Client
) -> None:
    fake_stripe.add_line_items("cs_1", items(5))
    path = "/v1/checkout/sessions/cs_1/line_items"
    first = api.get(path, params={"limit": 2}).json()
    assert first["object"] == "list"
    assert first["url"] == path
    assert [item["id"] for item in first["data"]] == ["li_0", "li_1"]
    assert first["has_more"] is True
    second = api.get(path, params={"limit": 2, "starting_after": "li_1"}).json()
    assert [item["id"] for item in second["data"]] == ["li_2", "li_3"]
    assert second["has_more"] is True
    last = api.get(path, params={"limit": 2, "starting_after": "li_3"}).json()
    assert [item["id"] for item in last["data"]] == ["li_4"]
    assert last["has_more"] is False
    everything = api.get(path).json()  # Stripe's default page is 10
    assert len(everything["data"]) == 5
    assert everything["has_more"] is False
    assert everything["data"][0] == {
        "object": "item",
        "id": "li_0",
        "description": "thing 0",
        "quantity": 1,
    }


@pytest.mark.parametrize(
    ("params", "param"),
    [
        ({"limit": 0}, "limit"),
        ({"limit": 101}, "limit"),
        ({"limit": "x"}, "limit"),
        ({"starting_after": "li_nope"}, "starting_after"),
    ],
)
def test_bad_pagination_is_400_naming_the_parameter(
    fake_stripe: FakeStripe, api: httpx.Client, params: dict[str, Any], param: str
) -> None:
    fake_stripe.add_line_items("cs_1", items(2))
    response = api.get("/v1/checkout/sessions/cs_1/line_items", params=params)
    assert response.status_code == 400
    assert response.json()["error"]["param"] == param


def test_unknown_session_is_404_resource_missing(api: httpx.Client) -> None:
    response = api.get("/v1/checkout/sessions/cs_nope/line_items")
    assert response.status_code == 404
    error = response.json()["error"]
    assert (error["type"], error["code"]) == ("invalid_request_error", "resource_missing")
    assert "cs_nope" in error["message"]


def test_unknown_route_is_404_without_resource_missing(api: httpx.Client) -> None:
    response = api.get("/v1/charges/ch_1")
    assert response.status_code == 404
    assert "code" not in response.json()["error"]


# --- customers and accounts -------------------------------------------------------------------


def test_customers_found_deleted_and_missing(fake_stripe: FakeStripe, api: httpx.Client) -> None:
    fake_stripe.add_customer({"id": "cus_1", "email": "a@example.test", "metadata": {"k": "v"}})
    fake_stripe.add_customer({"id": "cus_gone", "deleted": True})
    found = api.get("/v1/customers/cus_1").json()
    assert found == {
        "object": "customer",
        "id": "cus_1",
        "email": "a@example.test",
        "metadata": {"k": "v"},
    }
    gone = api.get("/v1/customers/cus_gone")
    assert gone.status_code == 200
    assert gone.json() == {"id": "cus_gone", "object": "customer", "deleted": True}
    missing = api.get("/v1/customers/cus_nope")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "resource_missing"
    assert missing.json()["error"]["param"] == "id"


def test_objects_belong_to_the_account_of_the_stripe_account_header(
    fake_stripe: FakeStripe, api: httpx.Client
) -> None:
    fake_stripe.add_customer({"id": "cus_1", "metadata": {"who": "connected"}}, "acct_A")
    fake_stripe.add_customer({"id": "cus_1", "metadata": {"who": "platform"}})
    fake_stripe.add_line_items("cs_1", items(1), "acct_A")
    connected = api.get("/v1/customers/cus_1", headers={"Stripe-Account": "acct_A"})
    assert connected.json()["metadata"] == {"who": "connected"}
    assert api.get("/v1/customers/cus_1").json()["metadata"] == {"who": "platform"}
    assert api.get("/v1/customers/cus_1", headers={"Stripe-Account": "acct_B"}).status_code == 404
    assert api.get("/v1/checkout/sessions/cs_1/line_items").status_code == 404
    on_a = api.get("/v1/checkout/sessions/cs_1/line_items", headers={"Stripe-Account": "acct_A"})
    assert on_a.status_code == 200
    assert [entry["account"] for entry in fake_stripe.requests()] == [
        "acct_A",
        None,
        "acct_B",
        None,
        "acct_A",
    ]


# --- faults -----------------------------------------------------------------------------------


def test_429_fault_for_the_next_n_requests_with_retry_after(
    fake_stripe: FakeStripe, api: httpx.Client
) -> None:
    fake_stripe.add_customer({"id": "cus_1"})
    fake_stripe.set_faults(status=429, retry_after=3, times=2)
    for _ in range(2):
        response = api.get("/v1/customers/cus_1")
        assert response.status_code == 429
        assert response.headers["Retry-After"] == "3"
        assert response.json()["error"]["code"] == "rate_limit"
    assert api.get("/v1/customers/cus_1").status_code == 200
    assert fake_stripe.state.faults().status is None  # cleared itself
    assert [entry["fault"] for entry in fake_stripe.requests()] == ["status", "status", None]


@pytest.mark.parametrize("status", [500, 503])
def test_server_error_faults_until_cleared(
    fake_stripe: FakeStripe, api: httpx.Client, status: int
) -> None:
    fake_stripe.add_customer({"id": "cus_1"})
    fake_stripe.set_faults(status=status, should_retry=True)
    for _ in range(3):
        response = api.get("/v1/customers/cus_1")
        assert response.status_code == status
        assert response.json()["error"]["type"] == "api_error"
        assert response.headers["Stripe-Should-Retry"] == "true"
    fake_stripe.set_faults()
    assert api.get("/v1/customers/cus_1").status_code == 200


def test_faults_come_before_auth(fake_stripe: FakeStripe) -> None:
    fake_stripe.set_faults(status=503, times=1)
    assert httpx.get(f"{fake_stripe.url}/v1/customers/cus_1").status_code == 503


def test_latency_and_down_faults(fake_stripe: FakeStripe, api: httpx.Client) -> None:
    fake_stripe.add_customer({"id": "cus_1"})
    fake_stripe.set_faults(latency_ms=200)
    started = time.monotonic()
    assert api.get("/v1/customers/cus_1").status_code == 200
    assert time.monotonic() - started >= 0.2
    fake_stripe.set_faults(down=True, times=1)
    with pytest.raises(httpx.TransportError):
        api.get("/v1/customers/cus_1")
    assert api.get("/v1/customers/cus_1").status_code == 200
    assert [entry["fault"] for entry in fake_stripe.requests()] == [None, "down", None]


def test_the_request_log_keeps_query_and_account_and_never_the_key(
    fake_stripe: FakeStripe, api: httpx.Client
) -> None:
    fake_stripe.add_line_items("cs_1", items(3))
    api.get(
        "/v1/checkout/sessions/cs_1/line_items",
        params={"limit": 2, "starting_after": "li_0"},
        headers={"Stripe-Account": "acct_X"},
    )
    [entry] = fake_stripe.requests()
    assert entry["method"] == "GET"
    assert entry["path"] == "/v1/checkout/sessions/cs_1/line_items"
    assert entry["query"] == {"limit": "2", "starting_after": "li_0"}
    assert entry["account"] == "acct_X"
    assert entry["status"] == 404  # cs_1 lives on the platform, not acct_X
    assert KEY not in str(entry)


# --- the control API over HTTP ----------------------------------------------------------------


def test_control_api_loads_fixtures_sets_faults_and_resets(fake_stripe: FakeStripe) -> None:
    with httpx.Client(base_url=fake_stripe.url, timeout=5.0) as control:
        loaded = control.post(
            "/_fake/fixtures",
            json={
                "account": "acct_A",
                "line_items": {"cs_1": items(2)},
                "customers": [{"id": "cus_1", "metadata": {"customer_id": "u1"}}],
            },
        )
        assert loaded.status_code == 200
        no_id = {"customers": [{"no": "id"}]}
        assert control.post("/_fake/fixtures", json=no_id).status_code == 400
        assert control.post("/_fake/faults", json={"status": "x"}).status_code == 400
        assert control.post("/_fake/faults", json={"bogus": 1}).status_code == 400
        faults = control.post("/_fake/faults", json={"status": 500, "times": 1}).json()
        assert faults["status"] == 500
        assert control.get("/_fake/faults").json()["times"] == 1
        api = {"Authorization": f"Bearer {KEY}", "Stripe-Account": "acct_A"}
        assert control.get("/v1/customers/cus_1", headers=api).status_code == 500
        customer = control.get("/v1/customers/cus_1", headers=api).json()
        assert customer["metadata"] == {"customer_id": "u1"}
        assert [entry["status"] for entry in control.get("/_fake/requests").json()] == [500, 200]
        assert control.post("/_fake/reset").status_code == 200
        assert control.get("/_fake/requests").json() == []
        assert control.get("/v1/customers/cus_1", headers=api).status_code == 404
        assert control.get("/_fake/nothing").status_code == 404


def test_stop_closes_kept_alive_connections(fake_stripe: FakeStripe, api: httpx.Client) -> None:
    fake_stripe.add_customer({"id": "cus_1"})
    assert api.get("/v1/customers/cus_1").status_code == 200
    fake_stripe.stop()
    with pytest.raises(httpx.TransportError):
        api.get("/v1/customers/cus_1")


# --- a separate process -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "api_key", "stop"),
    [
        (["webhooks", "dev", "fake-stripe"], KEY, signal.SIGTERM),
        (["webhooks", "dev", "fake-stripe", "--api-key", "sk_test_9"], "sk_test_9", signal.SIGINT),
    ],
    ids=["defaults-sigterm", "options-sigint"],
)
def test_subprocess(args: list[str], api_key: str, stop: signal.Signals) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", *args, "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        match = _URL_LINE.search(line)
        assert match is not None, f"no URL line: {line!r}"
        url, announced_key = match.group(1), match.group(3)
        assert int(match.group(2)) > 0
        assert announced_key == api_key
        fixtures = {"customers": [{"id": "cus_1", "metadata": {"customer_id": "u1"}}]}
        assert httpx.post(f"{url}/_fake/fixtures", json=fixtures).status_code == 200
        found = httpx.get(f"{url}/v1/customers/cus_1", auth=(api_key, ""))
        assert found.json()["metadata"] == {"customer_id": "u1"}
    finally:
        process.send_signal(stop)
        try:
            returncode = process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            raise
    assert returncode == 0
