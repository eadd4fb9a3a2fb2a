"""The samples `webhooks simulate` posts: real shapes, fresh ids, each one mapped."""

from __future__ import annotations

import pytest
from sqlalchemy.engine import Engine

from tests.conftest import make_settings
from tests.pipeline import outbox_rows
from webhooks.app import create_app
from webhooks.providers import registry
from webhooks.providers.samples import NoSample, types
from webhooks.worker import Worker

SAMPLES = [
    (spec.name, event_type)
    for spec in registry.specs()
    for event_type in types(f"webhooks.providers.{spec.name}")
]


def test_every_provider_has_samples() -> None:
    assert {name for name, _ in SAMPLES} == {spec.name for spec in registry.specs()}


def test_every_sample_is_a_copy_of_the_golden_fixture_it_names() -> None:
    """The samples' shapes come from the fixtures (whose origins SOURCES.md records):
    a sample edited on its own would drift from the provider's published shape."""
    import json
    from importlib import resources

    from tests.pipeline import FIXTURES

    for spec in registry.specs():
        folder = resources.files(f"webhooks.providers.{spec.name}").joinpath("samples")
        for entry in folder.iterdir():
            if not entry.name.endswith(".json"):
                continue
            sample = json.loads(entry.read_text())
            source = FIXTURES.parent.parent / sample["source"]
            fixture = json.loads(source.read_text())
            assert sample["body"] == fixture["body"], entry.name
            assert sample.get("headers", {}) == fixture.get("headers", {}), entry.name


@pytest.mark.parametrize(("provider", "event_type"), SAMPLES)
def test_a_sample_is_a_fresh_delivery_of_a_new_fact_that_maps(
    engine: Engine, provider: str, event_type: str
) -> None:
    spec = registry.get(provider)
    assert spec.sample is not None
    settings = make_settings(engine.url.render_as_string(hide_password=False))
    app = create_app(settings)
    secret = settings.provider(provider).secrets()[0]
    for _ in range(2):  # simulate twice: two deliveries, not a duplicate
        sample = spec.sample(event_type)
        headers = {**sample.headers, **spec.sign(sample.body, secret)}
        answer = app.test_client().post(
            f"/webhooks/{provider}",
            data=sample.body,
            headers=headers,
            content_type="application/json",
        )
        assert answer.json == {"status": "accepted"}
    app.extensions["webhooks.engine"].dispose()
    Worker(engine, settings, None).run_once()
    by_delivery: dict[int, set[str]] = {}
    for row in outbox_rows(engine):
        by_delivery.setdefault(row.inbox_id, set()).add(row.op_key)
    # Each run maps, and is a new fact: no operation of the second is the first's.
    first, second = by_delivery.values()
    assert first
    assert second
    assert not first & second


def test_an_unknown_type_lists_the_samples() -> None:
    spec = registry.get("stripe")
    assert spec.sample is not None
    with pytest.raises(NoSample, match=r"samples: .*checkout\.session\.completed"):
        spec.sample("charge.dispute.created")
