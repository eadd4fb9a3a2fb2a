"""Operator commands run in-process against the database of each backend."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from click.testing import CliRunner, Result
from sqlalchemy.engine import Engine

from tests.conftest import make_settings
from tests.pipeline import ScriptedCustomerIO
from webhooks.cli import main
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


def worker(engine: Engine, cio: ScriptedCustomerIO | None) -> Worker:
    settings = make_settings(engine.url.render_as_string(hide_password=False))
    return Worker(engine, settings, cio.client() if cio else None)


@pytest.fixture
def signed(engine: Engine) -> Callable[..., None]:
    """Post a golden fixture's body to the real app, signed as its provider signs."""
    from flask import Flask

    from tests.conftest import ShopifySender, StripeSender, make_settings, shopify_headers
    from tests.pipeline import FIXTURES
    from webhooks.app import create_app

    app: Flask = create_app(make_settings(engine.url.render_as_string(hide_password=False)))

    def post(provider: str, case: str, **body_changes: Any) -> None:
        fixture = json.loads((FIXTURES / provider / f"{case}.json").read_text())
        body = json.dumps({**fixture["body"], **body_changes}).encode()
        if provider == "stripe":
            answer = StripeSender(app.test_client()).post(body)
        else:
            topic = fixture["headers"]["X-Shopify-Topic"]
            sender = ShopifySender(app.test_client())
            answer = sender.post(body, shopify_headers(body, topic=topic))
        assert answer.status_code == 200, answer.json

    return post
