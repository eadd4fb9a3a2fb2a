"""Golden fixtures: a raw provider delivery beside the canonical actions it must map to.

A fixture `tests/fixtures/<provider>/<case>.json` holds:
  {"description": "...", "headers": {...}, "body": {...},
   "config": {...MapperConfig overrides, optional}, "enrichment": {... optional}}
and `<case>.expected.json` the list of actions (mappers.actions.to_json of each).
The body goes through the real ingest parse (webhooks.providers) before mapping, so a
fixture covers the whole chain from the bytes the provider sends.
`python -m tests.mappers.golden --write CASE...` writes expected files for review.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from mappers.actions import to_json
from mappers.base import MapperConfig
from mappers.registry import map_delivery
from webhooks.providers.shopify.signature import ShopifyProvider
from webhooks.providers.stripe.signature import StripeProvider
from webhooks.stage1.mapping import stored_delivery

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
PARSERS = {"stripe": StripeProvider(["whsec_unused"]), "shopify": ShopifyProvider(["unused"])}


def cases() -> list[Path]:
    """Every fixture file (not the expected outputs), sorted."""
    return sorted(
        path for path in FIXTURES.glob("*/*.json") if not path.name.endswith(".expected.json")
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
    delivery = PARSERS[provider].parse(body, headers)
    config = MapperConfig(**fixture.get("config", {}))
    actions = map_delivery(stored_delivery(delivery, fixture.get("enrichment")), config)
    return [to_json(action) for action in actions]


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
