"""StripeAPI against the fake Stripe over real HTTP: pages, cache, accounts, retries, errors."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest
from structlog.testing import capture_logs

from tests.conftest import make_settings
from tests.providers.stripe.api.test_limits import FakeClock
from webhooks.config import Settings
from webhooks.fakes.stripe import DEFAULT_API_KEY, FakeStripe
from webhooks.providers.stripe.api import (
    StripeAPI,
    StripeAPIError,
    StripeAuthError,
    StripeUnavailable,
)
from webhooks.providers.stripe.api.client import AUTH_PAUSE, CUSTOMER_TTL
from webhooks.providers.stripe.api.limits import IN_CALL, MAX_ATTEMPTS, MAX_RETRY_AFTER_IN_CALL

ADA = {
    "id": "cus_Ada",
    "object": "customer",
    "email": "ada@example.test",
    "name": "Ada Lovelace",
    "phone": "+15555550101",
    "address": {"city": "London", "country": "GB"},
    "metadata": {"customer_id": "user_8842", "tier": "gold"},
}


def line_items(count: int) -> list[dict[str, Any]]:
    return [
        {
            "id": f"li_{i:03}",
            "description": f"Item {i}",
            "quantity": 1 + i % 3,
            "amount_total": 1000 * (1 + i % 3),
            "price": {"id": f"price_{i}", "product": f"prod_{i}", "unit_amount": 1000},
        }
        for i in range(count)
    ]


class Recorder:
    """Injected sleep and clock: the waits are recorded, never slept."""

    def __init__(self) -> None:
        self.clock = FakeClock()
        self.sleeps: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)


@pytest.fixture
def waits() -> Recorder:
    return Recorder()


def client(fake: FakeStripe, waits: Recorder, key: str = DEFAULT_API_KEY, **kw: Any) -> StripeAPI:
    """A StripeAPI on the fake; a high rate so the bucket never sleeps unless a test asks."""
    options: dict[str, Any] = {"max_rps": 1000.0, "rng": random.Random(1)}
    options.update(kw)
    return StripeAPI.create(key, base_url=fake.url, sleep=waits.sleep, clock=waits.clock, **options)


def paths(fake: FakeStripe) -> list[str]:
    return [entry["path"] for entry in fake.requests()]


# --- answers ----------------------------------------------------------------------------------


def test_line_items_of_every_page_as_plain_json(fake_stripe: FakeStripe, waits: Recorder) -> None:
    fake_stripe.add_line_items("cs_1", line_items(25))
    api = client(fake_stripe, waits, page_size=10)
    found = api.line_items("cs_1", "platform")
    assert found == [{"object": "item", **item} for item in line_items(25)]
    assert all(type(item) is dict and type(item["price"]) is dict for item in found)
    assert json.loads(json.dumps(found)) == found  # storable in a JSON column as is
    pages = [entry["query"] for entry in fake_stripe.requests()]
    assert pages == [
        {"limit": "10"},
        {"limit": "10", "starting_after": "li_009"},
        {"limit": "10", "starting_after": "li_019"},
    ]


def test_line_items_use_stripes_largest_page_by_default(
    fake_stripe: FakeStripe, waits: Recorder
) -> None:
    fake_stripe.add_line_items("cs_1", line_items(100))
    assert len(client(fake_stripe, waits).line_items("cs_1") or []) == 100
    assert [entry["query"] for entry in fake_stripe.requests()] == [{"limit": "100"}]


def test_unknown_session_has_no_line_items(fake_stripe: FakeStripe, waits: Recorder) -> None:
    assert client(fake_stripe, waits).line_items("cs_nope") is None


def test_customer_is_its_id_and_metadata_only(fake_stripe: FakeStripe, waits: Recorder) -> None:
    fake_stripe.add_customer(ADA)
    found = client(fake_stripe, waits).customer("cus_Ada", "platform")
    assert found == {"id": "cus_Ada", "metadata": {"customer_id": "user_8842", "tier": "gold"}}


def test_deleted_and_unknown_customers_are_none(fake_stripe: FakeStripe, waits: Recorder) -> None:
    fake_stripe.add_customer({"id": "cus_gone", "deleted": True})
    api = client(fake_stripe, waits)
    assert api.customer("cus_gone") is None
    assert api.customer("cus_nope") is None
    assert [entry["status"] for entry in fake_stripe.requests()] == [200, 404]


def test_connected_accounts_are_asked_with_the_stripe_account_header(
    fake_stripe: FakeStripe, waits: Recorder
) -> None:
    fake_stripe.add_customer({"id": "cus_1", "metadata": {"customer_id": "conn"}}, "acct_1M")
    fake_stripe.add_line_items("cs_1", line_items(2), "acct_1M")
    api = client(fake_stripe, waits)
    assert api.customer("cus_1", "acct_1M") == {"id": "cus_1", "metadata": {"customer_id": "conn"}}
    assert len(api.line_items("cs_1", "acct_1M") or []) == 2
    assert api.customer("cus_1", "platform") is None  # the platform has no such customer
    assert [entry["account"] for entry in fake_stripe.requests()] == ["acct_1M", "acct_1M", None]


# --- the customer cache -----------------------------------------------------------------------


def test_customers_are_cached_per_account_until_the_ttl(
    fake_stripe: FakeStripe, waits: Recorder
) -> None:
    fake_stripe.add_customer(ADA)
    fake_stripe.add_customer({"id": "cus_gone", "deleted": True})
    api = client(fake_stripe, waits)
    first = api.customer("cus_Ada")
    assert first is not None
    first["metadata"]["customer_id"] = "changed by the caller"
    for _ in range(5):
        assert api.customer("cus_Ada") == {
            "id": "cus_Ada",
            "metadata": {"customer_id": "user_8842", "tier": "gold"},
        }
        assert api.customer("cus_gone") is None
    assert paths(fake_stripe) == ["/v1/customers/cus_Ada", "/v1/customers/cus_gone"]
    api.customer("cus_Ada", "acct_other")  # another account: another customer
    waits.clock.now += CUSTOMER_TTL
    api.customer("cus_Ada")
    assert paths(fake_stripe)[2:] == ["/v1/customers/cus_Ada", "/v1/customers/cus_Ada"]


# --- retries ----------------------------------------------------------------------------------


def test_429_is_retried_after_stripes_retry_after(fake_stripe: FakeStripe, waits: Recorder) -> None:
    fake_stripe.add_customer(ADA)
    fake_stripe.set_faults(status=429, retry_after=2, times=1)
    assert client(fake_stripe, waits).customer("cus_Ada") is not None
    assert waits.sleeps == [2.0]
    assert [entry["status"] for entry in fake_stripe.requests()] == [429, 200]


def test_429_without_retry_after_backs_off(fake_stripe: FakeStripe, waits: Recorder) -> None:
    fake_stripe.add_line_items("cs_1", line_items(1))
    fake_stripe.set_faults(status=429, times=2)
    assert client(fake_stripe, waits).line_items("cs_1") is not None
    assert len(waits.sleeps) == 2
    assert 0.25 <= waits.sleeps[0] <= 0.5
    assert 0.5 <= waits.sleeps[1] <= 1.0


def test_a_long_retry_after_is_handed_to_the_caller(
    fake_stripe: FakeStripe, waits: Recorder
) -> None:
    fake_stripe.set_faults(status=429, retry_after=int(MAX_RETRY_AFTER_IN_CALL) + 50)
    with pytest.raises(StripeUnavailable) as caught:
        client(fake_stripe, waits).customer("cus_Ada")
    assert caught.value.retry_after == MAX_RETRY_AFTER_IN_CALL + 50
    assert caught.value.status == 429
    assert waits.sleeps == []
    assert len(fake_stripe.requests()) == 1


@pytest.mark.parametrize("status", [500, 502, 503])
def test_persistent_server_errors_give_up_after_max_attempts(
    fake_stripe: FakeStripe, waits: Recorder, status: int
) -> None:
    fake_stripe.set_faults(status=status)
    with pytest.raises(StripeUnavailable) as caught:
        client(fake_stripe, waits).line_items("cs_1")
    assert caught.value.status == status
    assert len(fake_stripe.requests()) == MAX_ATTEMPTS
    assert len(waits.sleeps) == MAX_ATTEMPTS - 1
    assert all(0 < delay <= IN_CALL.cap for delay in waits.sleeps)


def test_a_5xx_then_success_is_retried(fake_stripe: FakeStripe, waits: Recorder) -> None:
    fake_stripe.add_customer(ADA)
    fake_stripe.set_faults(status=500, times=2)
    assert client(fake_stripe, waits).customer("cus_Ada") is not None
    assert [entry["status"] for entry in fake_stripe.requests()] == [500, 500, 200]


def test_stripe_should_retry_false_is_honoured(fake_stripe: FakeStripe, waits: Recorder) -> None:
    fake_stripe.set_faults(status=500, should_retry=False)
    with pytest.raises(StripeUnavailable):
        client(fake_stripe, waits).customer("cus_Ada")
    assert len(fake_stripe.requests()) == 1


def test_stripe_should_retry_true_retries_a_status_we_would_not(
    fake_stripe: FakeStripe, waits: Recorder
) -> None:
    fake_stripe.add_customer(ADA)
    fake_stripe.set_faults(status=400, should_retry=True, times=1)
    assert client(fake_stripe, waits).customer("cus_Ada") is not None
    assert len(fake_stripe.requests()) == 2


def test_dropped_connections_are_retried(fake_stripe: FakeStripe, waits: Recorder) -> None:
    fake_stripe.add_customer(ADA)
    fake_stripe.set_faults(down=True, times=2)
    assert client(fake_stripe, waits).customer("cus_Ada") is not None
    assert [entry["fault"] for entry in fake_stripe.requests()] == ["down", "down", None]


def test_an_unreachable_stripe_is_unavailable(waits: Recorder) -> None:
    with FakeStripe() as gone:
        pass  # started and stopped: nothing listens on its port now
    with pytest.raises(StripeUnavailable) as caught:
        client(gone, waits).customer("cus_Ada")
    assert caught.value.status is None
    assert len(waits.sleeps) == MAX_ATTEMPTS - 1


def test_every_attempt_passes_the_rate_limit(fake_stripe: FakeStripe, waits: Recorder) -> None:
    fake_stripe.add_customer(ADA)
    fake_stripe.set_faults(status=503, times=1)
    api = client(fake_stripe, waits, max_rps=1.0, rng=random.Random(3))
    api.customer("cus_Ada")  # burst token, then a 503, the backoff, and a second attempt
    api.customer("cus_Other")  # a third request
    backoff = waits.sleeps[0]
    # The retry found the bucket empty (the clock never moved): it waited 1 s, and the
    # next call 2 s, each behind the one before.
    assert waits.sleeps[1:] == pytest.approx([1.0, 2.0])
    assert 0.25 <= backoff <= 0.5


# --- refusals ---------------------------------------------------------------------------------


def test_a_refused_key_is_an_actionable_auth_error(
    fake_stripe: FakeStripe, waits: Recorder
) -> None:
    wrong = "sk_test_not_the_fakes_key"
    api = client(fake_stripe, waits, key=wrong)
    with capture_logs() as logs, pytest.raises(StripeAuthError) as caught:
        api.customer("cus_Ada")
    assert caught.value.status == 401
    assert caught.value.fresh
    [error] = [entry for entry in logs if entry["event"] == "stripe_unauthorized"]
    assert error["log_level"] == "error"
    assert "STRIPE_API_KEY" in error["hint"]
    assert wrong not in json.dumps(logs, default=str)
    assert str(caught.value).find(wrong) == -1
    # Every call would fail the same way: refused locally for a while, not sent.
    with pytest.raises(StripeAuthError) as again:
        api.line_items("cs_1")
    assert not again.value.fresh
    assert len(fake_stripe.requests()) == 1
    waits.clock.now += AUTH_PAUSE
    with pytest.raises(StripeAuthError):
        api.customer("cus_Ada")
    assert len(fake_stripe.requests()) == 2


def test_403_is_an_auth_error_too(fake_stripe: FakeStripe, waits: Recorder) -> None:
    fake_stripe.set_faults(status=403)
    with pytest.raises(StripeAuthError) as caught:
        client(fake_stripe, waits).customer("cus_Ada")
    assert caught.value.status == 403
    assert len(fake_stripe.requests()) == 1


def test_other_refusals_are_permanent_errors(fake_stripe: FakeStripe, waits: Recorder) -> None:
    fake_stripe.set_faults(status=400, times=1)
    with pytest.raises(StripeAPIError) as caught:
        client(fake_stripe, waits).customer("cus_Ada")
    assert not isinstance(caught.value, StripeUnavailable | StripeAuthError)
    assert caught.value.status == 400
    assert len(fake_stripe.requests()) == 1


def test_a_wrong_api_base_is_an_error_not_a_missing_object(
    fake_stripe: FakeStripe, waits: Recorder
) -> None:
    # A 404 that is not Stripe's resource_missing (no such route) must not be read as
    # "no such customer" and stored as such.
    api = StripeAPI.create(DEFAULT_API_KEY, base_url=f"{fake_stripe.url}/wrong", sleep=waits.sleep)
    with pytest.raises(StripeAPIError) as caught:
        api.customer("cus_Ada")
    assert caught.value.status == 404


# --- from settings ----------------------------------------------------------------------------


def stripe_api_client(settings: Settings) -> StripeAPI | None:
    """The API client the Stripe enricher builds from these settings, or None."""
    from mappers.stripe_fields import StripeConfig
    from webhooks.providers.stripe.enrich import enricher

    made = enricher(settings.provider("stripe"), StripeConfig())  # type: ignore[arg-type]
    return made.api if made is not None else None


def test_no_key_no_client(sqlite_url: str) -> None:
    with capture_logs() as logs:
        assert stripe_api_client(make_settings(sqlite_url)) is None
    assert [entry["event"] for entry in logs] == ["stripe_enrichment_off"]


def test_payment_intent_events_without_a_key_are_warned_about(sqlite_url: str) -> None:
    # From API 2025-03-31 only a lookup tells a renewal's PaymentIntent from a one-off.
    from mappers.stripe_fields import StripeConfig
    from webhooks.providers.stripe.enrich import enricher

    settings = make_settings(sqlite_url).provider("stripe")
    with capture_logs() as logs:
        assert enricher(settings, StripeConfig(payment_intent_events=True)) is None  # type: ignore[arg-type]
    assert [(e["event"], e["log_level"]) for e in logs] == [
        ("stripe_enrichment_off", "info"),
        ("stripe_payment_intents_unresolved", "warning"),
    ]


def test_invoice_payments_tell_an_invoice_and_its_payment_intent_apart(
    fake_stripe: FakeStripe,
) -> None:
    fake_stripe.add_invoice_payment(
        {
            "id": "inpay_1",
            "invoice": "in_1",
            "status": "canceled",
            "payment": {"type": "payment_intent", "payment_intent": "pi_declined"},
        }
    )
    fake_stripe.add_invoice_payment(
        {
            "id": "inpay_2",
            "invoice": "in_1",
            "status": "paid",
            "payment": {"type": "payment_intent", "payment_intent": "pi_paid"},
        }
    )
    fake_stripe.add_invoice_payment(
        {
            "id": "inpay_3",
            "invoice": "in_2",
            "status": "paid",
            "payment": {"type": "payment_intent", "payment_intent": "pi_other"},
        },
        account="acct_1Conn",
    )
    api = StripeAPI.create(DEFAULT_API_KEY, base_url=fake_stripe.url)
    try:
        assert api.payment_of_invoice("in_1") == "pi_paid"  # the paid one, not the decline
        assert api.invoice_of_payment("pi_declined") == "in_1"
        assert api.invoice_of_payment("pi_one_off") is None
        assert api.payment_of_invoice("in_2") is None  # another account's
        assert api.payment_of_invoice("in_2", "acct_1Conn") == "pi_other"
    finally:
        api.close()


def test_settings_point_the_client_at_stripe_api_base(
    fake_stripe: FakeStripe, sqlite_url: str
) -> None:
    fake_stripe.add_customer(ADA)
    settings = make_settings(
        sqlite_url, stripe_api_key=DEFAULT_API_KEY, stripe_api_base=fake_stripe.url + "/"
    )
    api = stripe_api_client(settings)
    assert api is not None
    try:
        assert api.customer("cus_Ada") is not None
    finally:
        api.close()
    [entry] = fake_stripe.requests()
    assert entry["path"] == "/v1/customers/cus_Ada"


def test_a_key_of_the_wrong_kind_is_warned_about_without_quoting_it(sqlite_url: str) -> None:
    settings = make_settings(sqlite_url, stripe_api_key="pk_test_publishable123")
    with capture_logs() as logs:
        api = stripe_api_client(settings)
    assert api is not None
    api.close()
    [warning] = logs
    assert warning["event"] == "stripe_api_key_unexpected"
    assert "publishable123" not in json.dumps(warning)
