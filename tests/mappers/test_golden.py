"""Every golden fixture maps to exactly its expected canonical actions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.mappers.golden import FIXTURES, cases, expected_path, run_case
from webhooks.providers import registry


@pytest.mark.parametrize("case", cases(), ids=lambda path: f"{path.parent.name}/{path.stem}")
def test_fixture_maps_to_expected_actions(case: Path) -> None:
    expected = json.loads(expected_path(case).read_text())
    assert run_case(case) == expected


def test_every_expected_file_has_its_fixture() -> None:
    orphans = [
        path
        for path in FIXTURES.glob("*/*.expected.json")
        if not path.with_name(path.name.replace(".expected", "")).exists()
    ]
    assert orphans == []


def test_every_fixture_folder_is_a_registered_provider_with_fixtures() -> None:
    folders = {path.name for path in FIXTURES.iterdir() if path.is_dir()}
    assert folders == {spec.name for spec in registry.specs()}
    assert all(any((FIXTURES / name).glob("*.expected.json")) for name in folders)
