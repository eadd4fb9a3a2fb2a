"""Sample webhooks of each provider's real published shape, for `webhooks simulate`.

Each provider package keeps a few in its `samples/` folder, copied from the golden
fixtures (each names its fixture; tests/fixtures/<provider>/SOURCES.md says where
that shape comes from). The provider gives every simulated delivery fresh ids, so
each run is a new delivery of a new fact and shows the whole flow again.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from typing import Any

from webhooks.errors import WebhooksError


class NoSample(WebhooksError, LookupError):
    """The provider has no sample of that type; the message lists those it has."""


@dataclass(frozen=True)
class Sample:
    """One delivery to post: the body and the provider's headers (no signature)."""

    body: bytes
    headers: dict[str, str]
    # A backfill's share of its work done once this delivery is read (0..1), for the
    # progress bar's ETA; None when the provider cannot say.
    progress: float | None = None
    # Made up by a backfill from a record, not a webhook's own id: new only when its
    # facts are (the webhook that reported them had another id).
    keyed_by_fact: bool = False


def load(package: str, event_type: str) -> tuple[dict[str, Any], dict[str, str]]:
    """The stored sample of `event_type` in `package`'s samples folder: (body, headers)."""
    name = event_type.replace("/", "_").replace(".", "_") + ".json"
    path = resources.files(package).joinpath("samples", name)
    if not path.is_file():
        raise NoSample(f"no sample of {event_type!r}; samples: {', '.join(types(package))}")
    stored = json.loads(path.read_text())
    return stored["body"], dict(stored.get("headers", {}))


def types(package: str) -> tuple[str, ...]:
    """The event types `package` has samples of."""
    found = []
    for entry in resources.files(package).joinpath("samples").iterdir():
        if entry.name.endswith(".json"):
            found.append(json.loads(entry.read_text())["event_type"])
    return tuple(sorted(found))
