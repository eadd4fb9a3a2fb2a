"""The taxonomy: the generated docs match the code, and the models enforce the contract."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest
from click.testing import CliRunner
from pydantic import ValidationError

from mappers.actions import Person, Track
from mappers.taxonomy import EVENT_MODELS, EventName, OrderCompleted
from webhooks.cli import main
from webhooks.providers import registry

DOCS = Path(__file__).resolve().parents[2] / "docs"


@pytest.mark.parametrize(
    ("fmt", "path"), [("markdown", "taxonomy.md"), ("json-schema", "taxonomy.schema.json")]
)
def test_checked_in_taxonomy_matches_the_code(fmt: str, path: str) -> None:
    result = CliRunner().invoke(main, ["taxonomy", "--format", fmt])
    assert result.exit_code == 0
    assert result.output == (DOCS / path).read_text(), (
        f"docs/{path} is stale: run `webhooks taxonomy --format {fmt} > docs/{path}`"
    )


def test_every_event_has_a_model_a_provider_row_and_a_section() -> None:
    documented = {event for spec in registry.specs() for event in spec.docs}
    assert set(EVENT_MODELS) == set(EventName) == documented
    text = (DOCS / "taxonomy.md").read_text()
    for event in EventName:
        assert f"### `{event.value}`" in text


def test_schema_lists_money_as_numbers() -> None:
    schema = json.loads((DOCS / "taxonomy.schema.json").read_text())
    total = json.dumps(schema["events"]["order_completed"]["properties"]["total"])
    assert '"type": "number"' in total
    assert '"string"' not in total


def test_money_is_a_json_number_never_a_string() -> None:
    props = OrderCompleted(source="shopify", order_id="1", total=Decimal("42.50"), currency="USD")
    dumped = props.model_dump(mode="json", exclude_none=True)
    assert dumped["total"] == 42.5
    assert isinstance(dumped["total"], float)
    zero_decimal = OrderCompleted(source="shopify", order_id="1", total=Decimal("6578"))
    assert zero_decimal.model_dump(mode="json")["total"] == 6578


@pytest.mark.parametrize(
    "bad",
    [
        {"currency": "usd"},
        {"currency": "US"},
        {"unknown_property": 1},
        {"source": "Not a provider name"},
        {"order_id": None},
    ],
)
def test_models_refuse_what_breaks_the_contract(bad: dict[str, object]) -> None:
    values: dict[str, object] = {"source": "stripe", "order_id": "pi_1", **bad}
    with pytest.raises(ValidationError):
        OrderCompleted(**values)  # type: ignore[arg-type]


def test_track_refuses_properties_of_another_event_or_a_foreign_key() -> None:
    person = Person(source="stripe", account="platform", customer_id="cus_1")
    props = OrderCompleted(source="stripe", order_id="pi_1")
    with pytest.raises(ValidationError):
        Track(
            person=person,
            event=EventName.REFUND_ISSUED,
            properties=props,
            timestamp=1,
            semantic_key="refund_issued:stripe:platform:x",
        )
    with pytest.raises(ValidationError):
        Track(
            person=person,
            event=EventName.ORDER_COMPLETED,
            properties=props,
            timestamp=1,
            semantic_key="something_else:pi_1",
        )


def test_every_handled_type_is_documented_in_providers_md() -> None:
    text = (DOCS / "providers.md").read_text()
    missing = [
        f"{spec.name}:{event_type}"
        for spec in registry.specs()
        for event_type in spec.handlers
        if f"`{event_type}`" not in text
    ]
    assert missing == []
