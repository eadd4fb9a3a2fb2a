"""Property-based: mutated and truncated payloads never escape as anything but MappingError."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mappers.actions import Identify, Track
from mappers.errors import MappingError
from tests.mappers.golden import cases, configs, parse
from webhooks.stage1.mapping import map_delivery, stored_delivery

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63) | st.floats() | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=6,
)


# Built once: every test example maps under one of the two purchase topics.
TOPICS = ["orders/create", "orders/paid"]
CONFIGS = {topic: configs(shopify_order_completed_topic=topic) for topic in TOPICS}


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every key/index path inside a JSON value."""
    found: list[tuple[Any, ...]] = []
    if isinstance(value, dict):
        for key, child in value.items():
            found.append((*prefix, key))
            found.extend(_paths(child, (*prefix, key)))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            found.append((*prefix, index))
            found.extend(_paths(child, (*prefix, index)))
    return found


def _mutate(payload: dict[str, Any], draw: st.DrawFn) -> dict[str, Any]:
    payload = copy.deepcopy(payload)
    for _ in range(draw(st.integers(1, 4))):
        paths = _paths(payload)
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent: Any = payload
        for step in path[:-1]:
            parent = parent[step]
        action = draw(st.sampled_from(["delete", "replace", "truncate"]))
        if action == "delete":
            del parent[path[-1]]
        elif action == "replace":
            parent[path[-1]] = draw(JSON_VALUES)
        elif isinstance(parent[path[-1]], list):
            parent[path[-1]] = parent[path[-1]][: draw(st.integers(0, 1))]
        else:
            parent[path[-1]] = None
    return payload


@pytest.mark.parametrize("case", cases(), ids=lambda path: f"{path.parent.name}/{path.stem}")
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), config_topic=st.sampled_from(["orders/create", "orders/paid"]))
def test_mutated_payloads_map_or_raise_mapping_error(
    case: Path, data: st.DataObject, config_topic: str
) -> None:
    fixture = json.loads(case.read_text())
    provider = case.parent.name
    headers = {key.lower(): value for key, value in fixture.get("headers", {}).items()}
    original = parse(provider, json.dumps(fixture["body"]).encode(), headers)
    mutated = _mutate(fixture["body"], data.draw)
    delivery = stored_delivery(original, fixture.get("enrichment"))
    delivery = type(delivery)(**{**delivery.__dict__, "payload": mutated})
    try:
        actions = map_delivery(delivery, CONFIGS[config_topic])
    except MappingError as exc:
        reason = exc.reason
    else:
        reason = None
        for action in actions:
            if isinstance(action, Track | Identify):
                json.dumps(action.model_dump(mode="json"))  # serialisable, complete
    if reason is not None:
        # A reason for operators that names what is wrong, not a crash the registry
        # had to wrap: mappers read payloads defensively.
        assert reason
        assert not reason.startswith("unexpected payload shape"), reason
