"""JSON text on the hot paths: orjson's speed, the standard library's acceptance."""

from __future__ import annotations

import json
import re
from decimal import Decimal
from typing import Any

import pytest

from webhooks.core import jsontext


@pytest.mark.parametrize(
    "value",
    [
        {"name": "order_completed", "attributes": {"total": 12.5, "items": [1, 2]}},
        {"email": "zoë@example.com", "city": "Zürich"},  # not escaped: as it is sent
        {"big": 2**70},  # beyond orjson's 64 bits: the standard library writes it
        {"lone": "\ud800"},  # a lone surrogate: likewise
        {1: "a"},  # a non-string key becomes a string, as json.dumps does
        [],
    ],
)
def test_what_is_written_reads_back_as_the_standard_library_reads_it(value: Any) -> None:
    text = jsontext.dumps(value)
    assert json.loads(text) == json.loads(json.dumps(value))
    assert jsontext.loads(text) == json.loads(text)
    assert jsontext.size(value) == len(text.encode("utf-8", "surrogatepass"))


def test_text_is_compact_and_keeps_characters_as_they_are() -> None:
    assert jsontext.dumps({"a": [1, "é"]}) == '{"a":[1,"é"]}'
    assert jsontext.size({"a": "é"}) == len('{"a":"é"}'.encode())


@pytest.mark.parametrize(
    "text",
    [
        b'{"id": 123456789012345678901234567890}',  # beyond 64 bits: orjson gives a float
        '{"id": -9223372036854775809, "n": 18446744073709551616}',  # just beyond, as str
        b'{"id": 9223372036854775807, "f": 0.1234567890123456789}',  # long, but in range
        b'{"v": NaN}',  # not JSON, but Python has always read it
        b'{"s": "\\ud800"}',  # an escaped lone surrogate
    ],
)
def test_what_the_standard_library_reads_is_read(text: str | bytes) -> None:
    assert repr(jsontext.loads(text)) == repr(json.loads(text))


@pytest.mark.parametrize("text", [b"{", b"", b"\xff\xfe", b'{"a": 1} x'])
def test_what_the_standard_library_refuses_is_refused_with_its_error(text: bytes) -> None:
    try:
        json.loads(text)
    except ValueError as error:
        expected = error
    else:
        raise AssertionError("the standard library read it")
    with pytest.raises(type(expected), match=re.escape(str(expected))):
        jsontext.loads(text)


def test_what_json_cannot_hold_is_a_type_error() -> None:
    with pytest.raises(TypeError):
        jsontext.dumps({"amount": Decimal("1.10")})
