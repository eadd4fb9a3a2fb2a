"""The Customer.io client turns every answer into the error class that says what to do."""

from __future__ import annotations

import httpx
import pytest

from webhooks.errors import CredentialsRefused, PermanentError, TransientError
from webhooks.stage2.customerio import (
    CustomerIO,
    DeliveryRefused,
    DeliveryUnauthorized,
    DeliveryUnavailable,
)


def client(answer: httpx.Response | Exception) -> CustomerIO:
    def handler(request: httpx.Request) -> httpx.Response:
        if isinstance(answer, Exception):
            raise answer
        return answer

    http = httpx.Client(
        base_url="https://track.example.test",
        transport=httpx.MockTransport(handler),
        auth=("site", "key"),
    )
    return CustomerIO(http, max_rps=1000)


@pytest.mark.parametrize(
    ("status", "expected", "meaning"),
    [
        (401, DeliveryUnauthorized, CredentialsRefused),
        (403, DeliveryUnauthorized, CredentialsRefused),
        (408, DeliveryUnavailable, TransientError),
        (429, DeliveryUnavailable, TransientError),
        (500, DeliveryUnavailable, TransientError),
        (503, DeliveryUnavailable, TransientError),
        (400, DeliveryRefused, PermanentError),
        (404, DeliveryRefused, PermanentError),
        (413, DeliveryRefused, PermanentError),
        (422, DeliveryRefused, PermanentError),
        (501, DeliveryRefused, PermanentError),
    ],
)
def test_a_status_becomes_the_class_that_says_what_to_do(
    status: int, expected: type[Exception], meaning: type[Exception]
) -> None:
    answer = httpx.Response(status, headers={"Retry-After": "7"}, text="nope")
    with pytest.raises(expected) as caught:
        client(answer).send_batch([{"type": "person"}])
    assert isinstance(caught.value, meaning)
    assert caught.value.status == status
    assert caught.value.body == "nope"
    assert caught.value.retry_after == 7.0


def test_a_network_failure_is_transient_without_a_status() -> None:
    failing = client(httpx.ConnectError("refused"))
    with pytest.raises(DeliveryUnavailable) as caught:
        failing.send_anonymous_event({"name": "x"})
    assert caught.value.status is None
    assert isinstance(caught.value, TransientError)


def test_a_207_names_the_refused_items_and_accepts_the_rest() -> None:
    body = {"errors": [{"batch_index": 1, "reason": "invalid", "field": "identifiers"}]}
    result = client(httpx.Response(207, json=body)).send_batch([{}, {}, {}])
    assert result.item_errors == {1: "invalid: identifiers"}
