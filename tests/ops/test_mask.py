"""Masking personal data out of what operator commands print."""

from __future__ import annotations

from webhooks.ops.mask import MASK, mask


def test_personal_fields_and_emails_are_masked_ids_and_amounts_stay() -> None:
    payload = {
        "type": "person",
        "action": "event",
        "name": "order_completed",
        "identifiers": {"id": "stripe:cus_1"},
        "attributes": {
            "email": "ann@example.com",
            "first_name": "Ann",
            "name": "Ann Example",
            "order_id": "pi_1",
            "total": "42.00",
            "note": "call me at home",
            "items": [{"name": "Mug", "price": 10}],
            "shipping": {"city": "Oslo", "zip": "0150", "country": "NO"},
        },
    }
    masked = mask(payload)
    assert masked["name"] == "order_completed"  # the event's name, at the top
    attributes = masked["attributes"]
    for field in ("email", "first_name", "name", "note"):
        assert attributes[field] == MASK
    assert (attributes["order_id"], attributes["total"]) == ("pi_1", "42.00")
    assert attributes["shipping"] == {"city": MASK, "zip": MASK, "country": "NO"}
    assert masked["identifiers"] == {"id": "stripe:cus_1"}
    assert mask("email:ann@example.com") == f"email:{MASK}"
    assert mask({"key": "linked to bob@shop.example.org"}) == {"key": f"linked to {MASK}"}
    assert payload["attributes"]["email"] == "ann@example.com"  # a copy, not in place
