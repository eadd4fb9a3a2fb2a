"""The provider seam, proven by a provider that exists only in this file.

"Acme" is registered through the public registry API and runs end to end: a signed POST
to /webhooks/acme, the inbox, its own settings from ACME_* names, its pure mapper, the
identity rules with its own person-id format, and a real HTTP send to the fake
Customer.io. No file outside this test knows it. docs/adding-a-provider.md walks through
this file as its example; `test_the_guide_names_only_what_exists` keeps the two in step.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from pydantic import Field
from sqlalchemy.engine import Engine

from mappers.actions import Action, Identify, Person, Track
from mappers.base import StoredDelivery
from mappers.taxonomy import EventName, OrderCompleted, PersonAttributes
from mappers.taxonomy_doc import EventDoc
from tests.conftest import make_settings
from webhooks.app import create_app
from webhooks.cli import main
from webhooks.errors import ConfigError, MissingSignature, UnknownProvider, VerificationError
from webhooks.fakes.customerio import FakeCustomerIO
from webhooks.providers import registry
from webhooks.providers.base import (
    Headers,
    ProviderSettings,
    ProviderSpec,
    load_json_object,
    parse_time,
    required_str,
)
from webhooks.storage.db import create_db_engine
from webhooks.storage.inbox import Delivery
from webhooks.storage.schema import inbox
from webhooks.worker import Worker, customerio_client

ROOT = Path(__file__).resolve().parents[2]
SECRET = "acme_test_secret"
# A secret every registered scheme can sign with (Standard Webhooks needs whsec_ + base64).
ANY_SCHEME_SECRET = "whsec_YW55LXNjaGVtZS10ZXN0LWtleS0yNGI="
SIGNATURE_HEADER = "x-acme-signature"


# --- 1. settings: read from ACME_<FIELD> --------------------------------------------------


class AcmeSettings(ProviderSettings):
    """Acme's own knob besides the signing secrets and person-id format every provider has."""

    default_currency: str = Field("EUR", pattern=r"^[A-Z]{3}$")


# --- 2. verification and keying (the ingest side) -----------------------------------------


def sign(body: bytes, secret: str) -> str:
    """Acme signs the raw body with HMAC-SHA256, hex, in X-Acme-Signature."""
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class AcmeReceiver:
    """Verify on the raw bytes against every secret (rotation), then key by event id."""

    def __init__(self, secrets: Sequence[str]) -> None:
        self._secrets = list(secrets)

    def verify(self, body: bytes, headers: Headers) -> int:
        received = headers.get(SIGNATURE_HEADER)
        if not received:
            raise MissingSignature("X-Acme-Signature header is missing")
        for index, secret in enumerate(self._secrets):
            if hmac.compare_digest(sign(body, secret), received):
                return index
        raise VerificationError("signature does not match a configured secret")

    def parse(self, body: bytes, headers: Headers) -> Delivery:
        event = load_json_object(body)
        event_id = required_str(event.get("id"), "event_id")
        return Delivery(
            provider="acme",
            account=required_str(event.get("store", "main"), "account"),
            event_type=required_str(event.get("type"), "event_type"),
            delivery_id=event_id,
            event_id=event_id,
            occurred_at=parse_time(event.get("created")),
            body=body,
        )


# --- 3. the pure mapper and its config ----------------------------------------------------


@dataclass(frozen=True)
class AcmeConfig:
    """What Acme's settings change about what a payload means."""

    default_currency: str = "EUR"


def order_paid(delivery: StoredDelivery, config: AcmeConfig) -> list[Action]:
    order = delivery.payload["data"]
    who = Person(
        source="acme",
        account=delivery.account,
        customer_id=order["customer"]["id"],
        email=order["customer"]["email"],
    )
    props = OrderCompleted(
        source="acme",
        order_id=order["id"],
        total=Decimal(order["total"]),
        currency=order.get("currency") or config.default_currency,
    )
    at = delivery.timestamp()
    return [
        Identify(person=who, attributes=PersonAttributes(email=who.email), timestamp=at),
        Track(
            person=who,
            event=EventName.ORDER_COMPLETED,
            properties=props,
            timestamp=at,
            semantic_key=f"order_completed:acme:{delivery.account}:{order['id']}",
        ),
    ]


def order_spoofed(delivery: StoredDelivery, config: AcmeConfig) -> list[Action]:
    """A broken mapper: it claims another provider's person. The worker must refuse it."""
    who = Person(source="stripe", account="platform", customer_id="cus_1")
    return [Identify(person=who, attributes=PersonAttributes(), timestamp=delivery.timestamp())]


# --- 4. the spec: the one place that knows Acme ------------------------------------------


SPEC: ProviderSpec[AcmeSettings, AcmeConfig] = ProviderSpec(
    name="acme",
    title="Acme",
    settings=AcmeSettings,
    receiver=lambda settings: AcmeReceiver(settings.secrets()),
    sign=lambda body, secret: {SIGNATURE_HEADER: sign(body, secret)},
    handlers={"order.paid": order_paid, "order.spoofed": order_spoofed},
    mapper_config=lambda settings, _internal_id_key: AcmeConfig(settings.default_currency),
    person_id_format="acme:{customer_id}",
    docs={EventName.ORDER_COMPLETED: EventDoc("`order.paid`", "order id")},
)


# --- the proof ----------------------------------------------------------------------------


@pytest.fixture
def acme() -> Iterator[ProviderSpec[AcmeSettings, AcmeConfig]]:
    """Acme, registered for one test through the public API, and removed after it."""
    registry.register(SPEC)
    try:
        yield SPEC
    finally:
        registry.unregister(SPEC.name)


@pytest.fixture
def fake() -> Iterator[FakeCustomerIO]:
    with FakeCustomerIO() as server:
        yield server


def event(event_id: str, event_type: str = "order.paid", **data: Any) -> bytes:
    order = {
        "id": "ord_1",
        "total": "42.50",
        "customer": {"id": "c_7", "email": "ada@example.test"},
        **data,
    }
    body = {"id": event_id, "type": event_type, "created": 1764320000, "data": order}
    return json.dumps(body).encode()


def test_a_provider_defined_in_a_test_runs_end_to_end(
    acme: ProviderSpec[AcmeSettings, AcmeConfig],
    fake: FakeCustomerIO,
    sqlite_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Its settings come from the environment under its own prefix, like any provider's.
    monkeypatch.setenv("ACME_DEFAULT_CURRENCY", "GBP")
    settings = make_settings(
        sqlite_url,
        acme_webhook_secret=f"{SECRET},acme_old_secret",
        acme_person_id_format="acme-{account}-{customer_id}",
        customerio_track_url=fake.url,
        customerio_site_id=fake.site_id,
        customerio_api_key=fake.api_key,
    )
    assert settings.provider("acme").default_currency == "GBP"  # type: ignore[attr-defined]
    app = create_app(settings)
    client = app.test_client()

    body = event("evt_1")
    signed = {SIGNATURE_HEADER: sign(body, SECRET)}
    accepted = client.post("/webhooks/acme", data=body, headers=signed)
    assert (accepted.status_code, accepted.json) == (200, {"status": "accepted"})
    again = client.post("/webhooks/acme", data=body, headers=signed)
    assert again.json == {"status": "duplicate"}
    forged = client.post("/webhooks/acme", data=body, headers={SIGNATURE_HEADER: "00"})
    assert (forged.status_code, forged.json["error"]) == (401, "invalid_signature")

    engine = create_db_engine(settings.database_url)
    cio = customerio_client(settings)
    assert cio is not None
    try:
        worker = Worker(engine, settings, cio)
        worker.run_once()
        worker.run_once()  # delivery of what the first pass mapped and held for nothing
    finally:
        cio.close()
        engine.dispose()

    [person] = fake.people()["people"]
    assert person["identifier"] == {"id": "acme-main-c_7"}  # its format, from ACME_*
    assert person["attributes"]["email"] == "ada@example.test"
    [order] = person["events"]
    assert order["name"] == "order_completed"
    assert order["data"]["order_id"] == "ord_1"
    assert order["data"]["source"] == "acme"
    assert order["data"]["currency"] == "GBP"  # the mapper config built from its settings
    assert order["data"]["is_first_order"] is True  # person state works for it too
    app.extensions["webhooks.engine"].dispose()


def test_a_mapper_claiming_another_providers_person_is_dead_lettered(
    acme: ProviderSpec[AcmeSettings, AcmeConfig], sqlite_url: str
) -> None:
    settings = make_settings(sqlite_url, acme_webhook_secret=SECRET)
    app = create_app(settings)
    body = event("evt_2", "order.spoofed")
    response = app.test_client().post(
        "/webhooks/acme", data=body, headers={SIGNATURE_HEADER: sign(body, SECRET)}
    )
    assert response.status_code == 200
    engine: Engine = app.extensions["webhooks.engine"]
    Worker(create_db_engine(settings.database_url), settings, None).run_once()
    with engine.connect() as conn:
        row = conn.execute(sa.select(inbox.c.state, inbox.c.last_error)).one()
    assert row.state == "dead"
    assert "returned a person of source 'stripe'" in row.last_error
    engine.dispose()


def test_the_cli_and_the_generated_docs_read_the_registry(
    acme: ProviderSpec[AcmeSettings, AcmeConfig],
) -> None:
    runner = CliRunner()
    signed = runner.invoke(main, ["dev", "sign", "acme", "--secret", SECRET], input=b"{}")
    assert signed.exit_code == 0, signed.output
    assert signed.output.strip() == f"{SIGNATURE_HEADER}: {sign(b'{}', SECRET)}"
    taxonomy = runner.invoke(main, ["taxonomy"])
    assert "| from Acme |" in taxonomy.output
    assert "`order.paid`" in taxonomy.output
    schema = json.loads(runner.invoke(main, ["taxonomy", "--format", "json-schema"]).output)
    assert "acme" in schema["events"]["order_completed"]["properties"]["source"]["enum"]


def test_an_unknown_provider_is_an_error_everywhere() -> None:
    runner = CliRunner()
    refused = runner.invoke(main, ["dev", "sign", "acme", "--secret", "x"], input=b"{}")
    assert refused.exit_code == 2
    assert "no provider named 'acme'" in refused.output
    with pytest.raises(ConfigError, match="registered already"):
        registry.register(registry.get("stripe"))
    with pytest.raises(ConfigError, match="must match"):
        dataclasses.replace(SPEC, name="Acme Inc")
    with pytest.raises(ConfigError, match=r"must contain \{customer_id\}"):
        dataclasses.replace(SPEC, person_id_format="acme")


def test_a_registered_provider_has_what_every_layer_reads() -> None:
    for spec in registry.specs():
        assert issubclass(spec.settings, ProviderSettings)
        assert spec.handlers, spec.name
        assert set(spec.docs) <= set(EventName), spec.name
        settings = spec.settings(_env_file=None, _env_prefix=spec.env_prefix)
        # With no secrets configured, even a correctly signed body is refused.
        with pytest.raises(VerificationError):
            spec.receiver(settings).verify(b"{}", spec.sign(b"{}", ANY_SCHEME_SECRET))
        # Mapper configs are frozen: a replay maps with exactly what a pass started with.
        config = spec.mapper_config(settings, "customer_id")
        assert dataclasses.is_dataclass(config), spec.name
        assert config.__dataclass_params__.frozen, spec.name  # type: ignore[attr-defined]


def test_the_guide_names_only_what_exists() -> None:
    guide = (ROOT / "docs" / "adding-a-provider.md").read_text()
    assert "tests/providers/test_seam.py" in guide
    # Every `ProviderSpec` field the guide names is a real field, and it names them all.
    named = set(re.findall(r"^\| `(\w+)` \|", guide, flags=re.MULTILINE))
    assert named == set(ProviderSpec.__dataclass_fields__)
    # Every module path it cites exists.
    for path in re.findall(r"`((?:webhooks|mappers|tests)/[\w/]+\.py)`", guide):
        assert (ROOT / path).exists(), path


def test_a_stored_row_of_a_provider_no_longer_registered_is_dead_lettered(
    acme: ProviderSpec[AcmeSettings, AcmeConfig], sqlite_url: str
) -> None:
    # Acme's delivery is stored; then the build no longer registers Acme. The worker
    # must dead-letter the row with a reason and keep going, never stop on it.
    settings = make_settings(sqlite_url, acme_webhook_secret=SECRET)
    app = create_app(settings)
    body = event("evt_3")
    app.test_client().post(
        "/webhooks/acme", data=body, headers={SIGNATURE_HEADER: sign(body, SECRET)}
    )
    registry.unregister("acme")
    try:
        later = make_settings(sqlite_url)
        engine = create_db_engine(later.database_url)
        Worker(engine, later, None).run_once()
        with engine.connect() as conn:
            row = conn.execute(sa.select(inbox.c.state, inbox.c.last_error)).one()
        engine.dispose()
    finally:
        registry.register(SPEC)  # the fixture removes it again
    assert row.state == "dead"
    assert row.last_error == "no provider named 'acme' is registered"
    app.extensions["webhooks.engine"].dispose()


def test_settings_loaded_before_a_provider_was_registered_say_so(
    acme: ProviderSpec[AcmeSettings, AcmeConfig], sqlite_url: str
) -> None:
    registry.unregister("acme")
    try:
        settings = make_settings(sqlite_url)
    finally:
        registry.register(SPEC)
    with pytest.raises(UnknownProvider, match="settings were loaded before 'acme'"):
        settings.provider("acme")
