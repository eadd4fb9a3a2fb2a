"""The pipeline's test pieces: a migrated database of each backend, a scriptable Customer.io."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from tests.mappers.golden import FIXTURES, parse
from webhooks.stage2.customerio import CustomerIO
from webhooks.storage import migrate
from webhooks.storage.db import create_db_engine
from webhooks.storage.inbox import store_delivery
from webhooks.storage.schema import inbox, outbox


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    """A migrated database of each backend."""
    eng = create_db_engine(database_url, timeout=2)
    migrate.upgrade(eng)
    yield eng
    eng.dispose()


def ingest(engine: Engine, provider: str, case: str, **body_changes: Any) -> None:
    """Store a golden fixture's delivery in the inbox, as the web endpoint would."""
    fixture = json.loads((FIXTURES / provider / f"{case}.json").read_text())
    body = {**fixture["body"], **body_changes}
    headers = {k.lower(): v for k, v in fixture.get("headers", {}).items()}
    store_delivery(engine, parse(provider, json.dumps(body).encode(), headers))


def outbox_rows(engine: Engine) -> list[sa.Row[Any]]:
    """Every outbox row, oldest first."""
    with engine.connect() as conn:
        return list(conn.execute(sa.select(outbox).order_by(outbox.c.id)))


def inbox_rows(engine: Engine) -> list[sa.Row[Any]]:
    """Every inbox row, oldest first."""
    with engine.connect() as conn:
        return list(conn.execute(sa.select(inbox).order_by(inbox.c.id)))


@dataclass
class ScriptedCustomerIO:
    """An httpx transport that answers from a script and records every request."""

    answers: list[httpx.Response | Exception] = field(default_factory=list)
    requests: list[httpx.Request] = field(default_factory=list)
    default: Callable[[httpx.Request], httpx.Response] = lambda _r: httpx.Response(200, json={})

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self.answers:
            answer = self.answers.pop(0)
            if isinstance(answer, Exception):
                raise answer
            return answer
        return self.default(request)

    def client(self) -> CustomerIO:
        transport = httpx.MockTransport(self.handler)
        http = httpx.Client(
            base_url="https://track.example.test", transport=transport, auth=("site", "key")
        )
        return CustomerIO(http, max_rps=1000)

    def bodies(self) -> list[Any]:
        return [json.loads(request.content) for request in self.requests if request.content]


@pytest.fixture
def cio() -> ScriptedCustomerIO:
    """A scriptable Customer.io behind httpx.MockTransport."""
    return ScriptedCustomerIO()
