"""Golden fixtures: a raw provider delivery beside the canonical actions it must map to.

A fixture `tests/fixtures/<provider>/<case>.json` holds:
  {"description": "...", "headers": {...}, "body": {...},
   "config": {...settings overrides, optional}, "enrichment": {... optional}}
and `<case>.expected.json` the list of actions (each as JSON data, nulls left out).
The body goes through the real ingest parse (the provider's receiver) before mapping,
so a fixture covers the whole chain from the bytes the provider sends. Every registered
provider's folder is swept; the folder name is the provider's name.
`python -m tests.mappers.golden --write CASE...` writes expected files for review.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from mappers.actions import Action
from mappers.base import StoredDelivery
from webhooks.config import load_settings
from webhooks.providers import registry
from webhooks.providers.base import Receiver
from webhooks.stage1.mapping import map_delivery, stored_delivery
from webhooks.stage1.setup import mapper_configs
from webhooks.storage.inbox import Delivery

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
# Body changes turning the refund_created_partial fixture into the refund that
# charge_refunded_with_refund_list_2020 lists: one fact, reported without a customer
# (refund.created) and with one (charge.refunded).
REFUND_LISTED_ON_THE_2020_CHARGE: dict[str, Any] = {
    "api_version": "2020-08-27",
    "data": {
        "object": {
            "id": "re_3TestOld01",
            "object": "refund",
            "amount": 1500,
            "currency": "usd",
            "charge": "ch_3TestPay01",
            "payment_intent": "pi_3TestPay01",
            "status": "succeeded",
        }
    },
}


def receiver(provider: str) -> Receiver:
    """The provider's receiver with no secrets: parse() keys a body, verify() refuses all."""
    spec = registry.get(provider)
    return spec.receiver(spec.settings(_env_file=None, _env_prefix=spec.env_prefix))


def configs(**settings: Any) -> dict[str, Any]:
    """Every provider's mapper config for these settings overrides (defaults otherwise)."""
    return mapper_configs(load_settings(_env_file=None, **settings))


def parse(provider: str, body: bytes, headers: dict[str, str]) -> Delivery:
    """Key a body as the provider's endpoint would."""
    return receiver(provider).parse(body, headers)


def cases() -> list[Path]:
    """Every registered provider's fixture files (not the expected outputs), sorted."""
    return sorted(
        path
        for name in (spec.name for spec in registry.specs())
        for path in (FIXTURES / name).glob("*.json")
        if not path.name.endswith(".expected.json")
    )


def expected_path(case: Path) -> Path:
    """Where the expected output of `case` lives."""
    return case.with_name(case.name.removesuffix(".json") + ".expected.json")


def run_case(case: Path) -> list[dict[str, Any]]:
    """Map the fixture's delivery and return the actions as JSON data."""
    fixture = json.loads(case.read_text())
    provider = case.parent.name
    body = json.dumps(fixture["body"]).encode()
    headers = {key.lower(): value for key, value in fixture.get("headers", {}).items()}
    delivery = parse(provider, body, headers)
    mapped = map_delivery(
        stored_delivery(delivery, fixture.get("enrichment")), configs(**fixture.get("config", {}))
    )
    return [as_json(action) for action in mapped]


def as_json(action: Action) -> dict[str, Any]:
    """An action as JSON-ready data: amounts as numbers, no null fields."""
    return action.model_dump(mode="json", exclude_none=True)


def main() -> None:
    """Write the expected output of the named cases (review every diff by hand)."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--write", nargs="+", required=True, help="fixture files")
    for name in parser.parse_args().write:
        case = Path(name)
        if case.name.endswith(".expected.json"):
            continue
        expected_path(case).write_text(json.dumps(run_case(case), indent=2, sort_keys=True) + "\n")
        print(f"wrote {expected_path(case)}")


if __name__ == "__main__":
    main()


def map_with(delivery: StoredDelivery, config: Any = None) -> list[Action]:
    """Map `delivery`, with `config` as its provider's mapper config (default: defaults)."""
    mapped = configs()
    if config is not None:
        mapped[delivery.provider] = config
    return map_delivery(delivery, mapped)
