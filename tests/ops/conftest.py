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
