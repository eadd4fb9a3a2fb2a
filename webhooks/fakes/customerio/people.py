"""The people the fake Customer.io would hold: a pure fold of its accepted operations, in order.

What is folded, after Customer.io's documented behaviour (../shared/reference/customerio.md):

- identify creates or updates the profile its identifier names; attributes are merged, newest
  value wins. One carrying a timestamp older than the newest already applied to that profile
  leaves the attributes alone. `_update: true` never creates a profile.
- an event attaches to the profile its identifier names, creating it when missing.
- an anonymous event waits under its anonymous_id until an identify carries that id as its
  `anonymous_id` attribute; the link then stays, so later ones attach at once (an assumption:
  the docs only describe the events logged before the identify).
- merge moves the secondary's attributes the primary lacks, its events and its anonymous ids
  into the primary and deletes the secondary; with no primary it does nothing (documented).
- delete removes the profile; suppress removes it and ignores its identifier until unsuppress.

Simplifications: a profile is found only by the identifier it was created with (an id, or an
email compared case-insensitively); the fake consolidates no id/email pairs and assigns no
cio_id, so an operation addressed by cio_id finds nobody and is dropped, as Customer.io drops
one naming an unknown cio_id. The 30-day limit on merged and anonymous events is not modelled.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from webhooks.fakes.customerio.api import (
    ANONYMOUS_EVENT,
    BATCH,
    CUSTOMER_EVENT,
    DELETE,
    IDENTIFY,
    MERGE,
    SUPPRESS,
    UNSUPPRESS,
)

# (identifier type, value), the value lower-cased for an email: how a profile is found.
Key = tuple[str, str]
# Identify body keys that are instructions, not attributes.
_NOT_ATTRIBUTES = frozenset({"_timestamp", "_update", "cio_relationships"})
# The v1 endpoints addressing a person in the path, by the v2 action each is.
_V1_ACTIONS = {
    IDENTIFY: "identify",
    CUSTOMER_EVENT: "event",
    DELETE: "delete",
    SUPPRESS: "suppress",
    UNSUPPRESS: "unsuppress",
}


@dataclass
class _Profile:
    identifier: dict[str, str]
    attributes: dict[str, Any] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)
    anonymous_ids: set[str] = field(default_factory=set)
    newest: int | None = None  # the newest identify timestamp applied to the attributes


def fold_people(operations: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """The people view of an operation log (as `Recorder.operations()` returns it)."""
    fold = _Fold()
    for entry in operations:
        fold.apply(entry)
    return fold.view()


def _key(identifier: Mapping[str, Any]) -> Key:
    ((kind, value),) = identifier.items()
    return (kind, value.lower() if kind == "email" else value)


def _path_identifier(raw: str) -> dict[str, str]:
    """A v1 path identifier by its shape, as Customer.io reads it: cio_ prefix, @, else id."""
    if raw.startswith("cio_"):
        return {"cio_id": raw[len("cio_") :]}
    return {"email": raw} if "@" in raw else {"id": raw}


def _as_v2(endpoint: str, raw_identifier: str, body: Any) -> dict[str, Any]:
    """A v1 person request as the v2 item saying the same (v1 `data` is v2 `attributes`)."""
    item: dict[str, Any] = {}
    if endpoint == IDENTIFY:
        item["attributes"] = {k: v for k, v in body.items() if k != "_timestamp"}
        item["timestamp"] = body.get("_timestamp")
    elif endpoint == CUSTOMER_EVENT:
        item = {**body, "attributes": body.get("data")}
    # Set last, so no body key can stand in for them.
    item["action"] = _V1_ACTIONS[endpoint]
    item["identifiers"] = _path_identifier(raw_identifier)
    return item


def _event(body: Mapping[str, Any], data_field: str, received_at: float) -> dict[str, Any]:
    timestamp = body.get("timestamp")
    return {
        "name": body["name"],
        "id": body["id"],
        # Customer.io stamps an event sent without a timestamp with its time of receipt.
        "timestamp": int(received_at) if timestamp is None else timestamp,
        "data": body.get(data_field) or {},
    }


def _order(event: dict[str, Any]) -> tuple[int, str]:
    return (event["timestamp"], event["id"].upper())  # ULIDs are case-insensitive


class _Fold:
    """The state of the fold: profiles, held anonymous events and suppressed identifiers."""

    def __init__(self) -> None:
        self.profiles: dict[Key, _Profile] = {}  # in order of creation
        self.held: dict[str | None, list[dict[str, Any]]] = {}
        self.owners: dict[str, Key] = {}  # anonymous_id -> the profile it is linked to
        self.suppressed: set[Key] = set()

    def apply(self, entry: Mapping[str, Any]) -> None:
        """Fold one accepted operation."""
        endpoint = entry["endpoint"]
        body: Mapping[str, Any] = entry.get("operation") or {}
        received_at = float(entry.get("received_at") or 0)
        if endpoint == BATCH:
            self._person(body, received_at)
        elif endpoint == MERGE:
            self._person({"action": "merge", **body}, received_at)
        elif endpoint in _V1_ACTIONS:
            self._person(_as_v2(endpoint, entry["identifier"], body), received_at)
        elif endpoint == ANONYMOUS_EVENT:
            self._anonymous_event(body, received_at)

    def _person(self, item: Mapping[str, Any], received_at: float) -> None:
        """Fold one person operation in the v2 shape."""
        action = item["action"]
        if action == "merge":
            self._merge(item["primary"], item["secondary"])
        elif action == "identify":
            attributes = item.get("attributes") or {}
            self._identify(item["identifiers"], attributes, item.get("timestamp"))
        elif action == "event":
            self._track(item["identifiers"], _event(item, "attributes", received_at))
        elif action in ("delete", "suppress", "unsuppress"):
            self._remove(item["identifiers"], action)

    def _profile(self, identifier: Mapping[str, str], *, create: bool) -> _Profile | None:
        key = _key(identifier)
        if key in self.suppressed:
            return None  # "any future API calls ... referencing the specified ID are ignored"
        profile = self.profiles.get(key)
        if profile is None and create and key[0] != "cio_id":
            profile = self.profiles[key] = _Profile(dict(identifier))
        return profile

    def _identify(
        self, identifier: Mapping[str, str], attributes: Mapping[str, Any], timestamp: int | None
    ) -> None:
        profile = self._profile(identifier, create=not attributes.get("_update"))
        if profile is None:
            return
        # Equal timestamps count as applied (the later arrival wins): Customer.io documents only
        # that older updates lose. An identify without a timestamp is applied and moves nothing.
        if timestamp is None or profile.newest is None or timestamp >= profile.newest:
            profile.attributes.update(
                (name, value) for name, value in attributes.items() if name not in _NOT_ATTRIBUTES
            )
            if timestamp is not None:
                profile.newest = timestamp
        # The link is made even by a stale identify: the timestamp orders attribute updates only.
        anonymous_id = attributes.get("anonymous_id")
        if isinstance(anonymous_id, str) and anonymous_id:
            self._link(profile, anonymous_id)

    def _link(self, profile: _Profile, anonymous_id: str) -> None:
        profile.anonymous_ids.add(anonymous_id)
        self.owners[anonymous_id] = _key(profile.identifier)
        profile.events.extend(self.held.pop(anonymous_id, []))

    def _track(self, identifier: Mapping[str, str], event: dict[str, Any]) -> None:
        profile = self._profile(identifier, create=True)
        if profile is not None:
            profile.events.append(event)

    def _anonymous_event(self, body: Mapping[str, Any], received_at: float) -> None:
        anonymous_id = body.get("anonymous_id")  # empty or null for invite events: never linked
        event = _event(body, "data", received_at)
        key = self.owners.get(anonymous_id) if anonymous_id else None
        owner = self.profiles.get(key) if key is not None else None
        if owner is not None:
            owner.events.append(event)
        else:
            self.held.setdefault(anonymous_id, []).append(event)

    def _remove(self, identifier: Mapping[str, str], action: str) -> None:
        key = _key(identifier)
        if action == "unsuppress":
            self.suppressed.discard(key)  # frees the identifier; restores nothing
            return
        self._drop(key)
        if action == "suppress":
            self.suppressed.add(key)

    def _drop(self, key: Key) -> _Profile | None:
        profile = self.profiles.pop(key, None)
        if profile is not None:
            for anonymous_id in profile.anonymous_ids:
                if self.owners.get(anonymous_id) == key:
                    del self.owners[anonymous_id]
        return profile

    def _merge(self, primary: Mapping[str, str], secondary: Mapping[str, str]) -> None:
        target = self._profile(primary, create=False)
        source_key = _key(secondary)
        # The primary must exist, else the request "won't do anything" (the secondary stays).
        if target is None or source_key not in self.profiles or self.profiles[source_key] is target:
            return
        source = self._drop(source_key)
        assert source is not None  # checked just above
        for name, value in source.attributes.items():
            target.attributes.setdefault(name, value)  # only the attributes the primary lacks
        target.events.extend(source.events)
        for anonymous_id in source.anonymous_ids:
            self._link(target, anonymous_id)

    def view(self) -> dict[str, Any]:
        """The JSON view: people in order of creation, then the anonymous events still held."""
        people: list[dict[str, Any]] = [
            {
                "identifier": profile.identifier,
                "attributes": profile.attributes,
                "anonymous_ids": sorted(profile.anonymous_ids),
                "events": sorted(profile.events, key=_order),
            }
            for profile in self.profiles.values()
        ]
        held = [
            {"anonymous_id": anonymous_id, **event}
            for anonymous_id, events in self.held.items()
            for event in events
        ]
        # A deep copy: values are shared with the operation log, which must not change.
        return copy.deepcopy({"people": people, "anonymous_events": sorted(held, key=_order)})
