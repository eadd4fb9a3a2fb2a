"""Operator commands run in-process against the database of each backend."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from click.testing import CliRunner, Result
from sqlalchemy.engine import Engine

from tests.conftest import make_settings
from tests.pipeline import ScriptedCustomerIO
from webhooks.cli import main
from webhooks.fakes.customerio import FakeCustomerIO
from webhooks.stage2.customerio import CustomerIO
from webhooks.worker import Worker

Run = Callable[..., Result]
Post = Callable[..., None]


@pytest.fixture
def run(database_url: str) -> Run:
    """`webhooks ARGS` in-process, configured for this test's database."""

    def invoke(*args: str) -> Result:
        env = {"DATABASE_URL": database_url, "LOG_LEVEL": "WARNING"}
        return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)

    return invoke


def as_json(result: Result) -> Any:
    return json.loads(result.stdout)


def worker(engine: Engine, cio: ScriptedCustomerIO | CustomerIO | None, **overrides: Any) -> Worker:
    """A worker on this database, sending to `cio` (None: a dry run)."""
    settings = make_settings(engine.url.render_as_string(hide_password=False), **overrides)
    client = cio.client() if isinstance(cio, ScriptedCustomerIO) else cio
    return Worker(engine, settings, client)


@pytest.fixture
def fake_cio() -> Iterator[tuple[FakeCustomerIO, CustomerIO]]:
    """The fake Customer.io over real HTTP (auth, statuses, faults), and a client of it."""
    with (
        FakeCustomerIO() as fake,
        httpx.Client(base_url=fake.url, auth=fake.auth, timeout=5) as http,
    ):
        yield fake, CustomerIO(http)


def post_signed(engine: Engine, provider: str, case: str, **body_changes: Any) -> None:
    """Post a golden fixture's body through the real app, signed as its provider signs
    (verified, keyed and stored exactly as a live webhook is)."""
    from tests.conftest import ShopifySender, StripeSender, make_settings, shopify_headers
    from tests.pipeline import FIXTURES
    from webhooks.app import create_app

    fixture = json.loads((FIXTURES / provider / f"{case}.json").read_text())
    body = json.dumps({**fixture["body"], **body_changes}).encode()
    app = create_app(make_settings(engine.url.render_as_string(hide_password=False)))
    try:
        if provider == "stripe":
            answer = StripeSender(app.test_client()).post(body)
        else:
            topic = fixture["headers"]["X-Shopify-Topic"]
            answer = ShopifySender(app.test_client()).post(body, shopify_headers(body, topic=topic))
    finally:
        app.extensions["webhooks.engine"].dispose()
    assert answer.status_code == 200, answer.json


@pytest.fixture
def signed(engine: Engine) -> Post:
    """post_signed bound to this test's database."""

    def post(provider: str, case: str, **body_changes: Any) -> None:
        post_signed(engine, provider, case, **body_changes)

    return post
