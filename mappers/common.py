"""Builders shared by the provider mappers."""

from __future__ import annotations

from mappers.actions import Identify, Person, Track
from mappers.base import StoredDelivery
from mappers.taxonomy import EventName, EventProperties, PersonAttributes


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
    """
    return Track(
        person=person,
        event=event,
        properties=properties,
        timestamp=delivery.timestamp() if timestamp is None else timestamp,
        semantic_key=semantic_key(event, delivery, *key_parts),
    )


def identify(
    delivery: StoredDelivery, person: Person, attributes: PersonAttributes
) -> list[Identify]:
    """An Identify when the payload revealed any attribute and anyone to attach it to."""
    if person.is_empty() or not attributes.model_dump(exclude_none=True):
        return []
    return [Identify(person=person, attributes=attributes, timestamp=delivery.timestamp())]
