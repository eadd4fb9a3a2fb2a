"""Personal data masked out of what operator commands print (unless --show-pii).

Payloads and raw bodies hold names, emails, phones and addresses. The commands that
print them (`dead-letters show`, `trace`) pass them through `mask` first: every value
under a key that names personal data is replaced, and any other string that looks
like an email address is too. Ids, amounts, currencies, event names and timestamps
stay, since they are what an operator follows.
"""

from __future__ import annotations

import re
from typing import Any

MASK = "***"
PERSONAL_KEYS = frozenset(
    {
        "email",
        "customer_email",
        "contact_email",
        "receipt_email",
        "phone",
        "first_name",
        "last_name",
        "name",
        "company",
        "address",
        "address1",
        "address2",
        "line1",
        "line2",
        "city",
        "zip",
        "postal_code",
        "province",
        "state",
        "latitude",
        "longitude",
        "browser_ip",
        "client_details",
        "note",
    }
)
# Where "name" is a person's name; at the top of an operation it is the event's.
NAMELESS_AT_TOP = frozenset({"name", "state"})
EMAIL = re.compile(r"[^@\s\"':,;<>()]+@[^@\s\"':,;<>()]+\.[A-Za-z]{2,}")


def mask(value: Any, *, top: bool = True) -> Any:
    """A copy of `value` with personal data replaced by MASK."""
    if isinstance(value, dict):
        return {
            EMAIL.sub(MASK, key): (
                mask(item, top=False)
                if (top and key in NAMELESS_AT_TOP) or key.lower() not in PERSONAL_KEYS
                else _masked(item)
            )
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [mask(item, top=False) for item in value]
    if isinstance(value, str):
        return EMAIL.sub(MASK, value)
    return value


def _masked(value: Any) -> Any:
    if value is None or value == "" or isinstance(value, bool):
        return value
    return MASK
