"""Builders shared by the provider mappers."""

from __future__ import annotations

from mappers.actions import Identify, Person, Track
from mappers.base import StoredDelivery
from mappers.taxonomy import EventName, EventProperties, PersonAttributes

# Customer.io: "Events with a timestamp in the past 72 hours can trigger campaigns."
TRIGGER_WINDOW = 72 * 3600


def semantic_key(event: EventName, delivery: StoredDelivery, *parts: str) -> str:
    """`<event>:<provider>:<account>:<parts...>`: the business fact, whatever carried it."""
    return ":".join((event.value, delivery.provider, delivery.account, *parts))


def track(
    delivery: StoredDelivery,
    person: Person,
    event: EventName,
    properties: EventProperties,
    *key_parts: str,
    timestamp: int | None = None,
) -> Track:
    """A Track keyed by `key_parts` of the fact.

    `timestamp`: the fact's own time when the payload states it (an order's creation,
    a cancellation's request), so every report of one fact carries the same time and
    its event the same id whichever arrives first; else the delivery's event time.
    A fact stated more than TRIGGER_WINDOW before its report (a cash-on-delivery order
    paid days later, a deletion of a cancel scheduled weeks ago) takes the report's
    time instead: Customer.io stores older events but they trigger no campaign.
    """
    reported = delivery.timestamp()
    if timestamp is None or reported - timestamp > TRIGGER_WINDOW:
        timestamp = reported
    return Track(
        person=person,
        event=event,
        properties=properties,
        timestamp=timestamp,
        semantic_key=semantic_key(event, delivery, *key_parts),
    )


def identify(
    delivery: StoredDelivery, person: Person, attributes: PersonAttributes
) -> list[Identify]:
    """An Identify when the payload revealed any attribute and anyone to attach it to."""
    if person.is_empty() or not attributes.model_dump(exclude_none=True):
        return []
    return [Identify(person=person, attributes=attributes, timestamp=delivery.timestamp())]
