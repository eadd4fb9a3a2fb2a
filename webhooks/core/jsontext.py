"""JSON text for the hot paths (bodies, stored payloads, Customer.io requests): orjson.

Stage 1 parses each stored body once and writes each operation's payload as JSON, stage
2 measures and sends it: with the standard library that was about a tenth of stage 1's
time; orjson does the same work several times faster. Where orjson refuses what the
standard library accepts (integers beyond 64 bits, lone surrogates, NaN), the standard
library answers, so nothing that parsed or serialised before fails now.

Digests that are stored (an identify's attribute hash, a cart's material digest) keep
the standard library's exact text: a different text would change every stored hash.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

_OPTIONS = orjson.OPT_NON_STR_KEYS  # {1: ...} becomes {"1": ...}, as json.dumps has it
# orjson reads an integer beyond 64 bits as a float, silently losing digits. Any number
# of 19 digits or more may be one: such text is read by the standard library, exactly.
# (Digits mapped to "0", everything else to " ", then one substring search: ~2 ns a byte.)
_DIGITS = bytes(0x30 if 0x30 <= i <= 0x39 else 0x20 for i in range(256))
_LONG_NUMBER = b"0" * 19


def dumps(value: Any) -> str:
    """Compact JSON text of `value` (UTF-8 characters as they are, not escaped)."""
    return dump_bytes(value).decode("utf-8")


def dump_bytes(value: Any) -> bytes:
    """Compact JSON of `value`, UTF-8 encoded: what goes over the wire."""
    try:
        return orjson.dumps(value, option=_OPTIONS)
    except orjson.JSONEncodeError:
        # Beyond orjson (a 65-bit integer, a lone surrogate): the standard library's
        # ASCII-only text, or its TypeError for what JSON cannot hold.
        return json.dumps(value, separators=(",", ":")).encode("ascii")


def loads(text: str | bytes) -> Any:
    """Parse JSON text as the standard library does: the same values, the same refusals."""
    data = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text
    if _LONG_NUMBER in data.translate(_DIGITS):
        return json.loads(text)
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return json.loads(text)


def size(value: Any) -> int:
    """Bytes of `value` as compact JSON, as it is sent."""
    return len(dump_bytes(value))
