"""Defensive reads from provider JSON (mappers.read): the same answer on every path."""

from __future__ import annotations

from typing import Any

import pytest

from mappers import read

DATA: dict[str, Any] = {
    "id": "cs_1",
    "customer": {"id": "cus_1", "metadata": {"user": 7}},
    "invoice": "in_1",
    "count": 3,
    "flag": True,
    "blank": "  ",
    "items": [1, 2],
}


@pytest.mark.parametrize(
    ("data", "path", "expected"),
    [
        (DATA, "id", "cs_1"),
        (DATA, "customer.id", "cus_1"),
        (DATA, "customer.metadata.user", 7),
        (DATA, "missing", None),
        (DATA, "customer.missing.deeper", None),
        (DATA, "invoice.id", None),  # a string has no fields
        (DATA, "items.0", None),  # nor does a list, by a dotted path
        (None, "id", None),
        ("text", "id", None),
        ([DATA], "id", None),
        ({"": "empty key"}, "", "empty key"),
    ],
)
def test_at_reads_one_or_several_steps_and_never_raises(
    data: Any, path: str, expected: Any
) -> None:
    assert read.at(data, path) == expected


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("customer", "cus_1"),  # an expanded object: its id
        ("invoice", "in_1"),  # an id string
        ("count", "3"),  # an integer id, as text
        ("flag", None),  # a bool is not an id
        ("blank", None),  # nor is white space
        ("items", None),
        ("missing", None),
        ("customer.metadata", None),  # an object without an id
    ],
)
def test_ref_reads_a_stripe_reference_either_way(path: str, expected: str | None) -> None:
    assert read.ref(DATA, path) == expected
