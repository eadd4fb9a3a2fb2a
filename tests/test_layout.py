"""The tree shows the flow: each package imports only the layers below it, and none of
them imports another that imports it back. docs/architecture.md lists the same rules."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Unit -> the units it may import (itself always). Lowest first; see docs/architecture.md.
ALLOWED: dict[str, set[str]] = {
    "webhooks.errors": set(),
    "mappers": {"webhooks.errors"},
    "webhooks.core": {"webhooks.errors", "mappers"},
    "webhooks.storage": {"webhooks.errors", "webhooks.core"},
    "webhooks.migrations": {"webhooks.storage"},
    "webhooks.providers": {"webhooks.errors", "webhooks.core", "webhooks.storage", "mappers"},
    "webhooks.config": {"webhooks.errors", "webhooks.providers"},
    "webhooks.logging": set(),
    "webhooks.ingest": {
        "webhooks.errors",
        "webhooks.core",
        "webhooks.storage",
        "webhooks.providers",
    },
    "webhooks.stage1": {
        "webhooks.errors",
        "webhooks.core",
        "webhooks.storage",
        "webhooks.providers",
        "webhooks.config",
        "mappers",
    },
    "webhooks.stage2": {"webhooks.errors", "webhooks.core", "webhooks.storage"},
    "webhooks.worker": {
        "webhooks.errors",
        "webhooks.core",
        "webhooks.config",
        "webhooks.stage1",
        "webhooks.stage2",
        "webhooks.storage",  # its heartbeat, and making retries due after an outage
    },
    # Operator views and actions over the stored state, and backfills from providers.
    "webhooks.ops": {"webhooks.errors", "webhooks.core", "webhooks.storage", "webhooks.providers"},
    "webhooks.supervisor": set(),  # runs `webhooks worker` as a process, imports none of it
    "webhooks.fakes": set(),
    "webhooks.app": {
        "webhooks.config",
        "webhooks.ingest",
        "webhooks.logging",
        "webhooks.ops",
        "webhooks.providers",
        "webhooks.storage",
    },
    "webhooks.gunicorn_conf": {"webhooks.config", "webhooks.core", "webhooks.storage"},
    "webhooks.server": {"webhooks.gunicorn_conf", "webhooks.app"},
    # The entry points wire everything; only they may start the fakes (`webhooks dev`).
    "webhooks.cli": {"*"},
    "webhooks.__main__": {"webhooks.cli"},
    "webhooks": set(),  # the package's __init__: the version only
}


def _unit(module: str) -> str:
    """The unit of ALLOWED a dotted module name belongs to (its longest prefix there)."""
    parts = module.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in ALLOWED:
            return candidate
    raise AssertionError(f"{module} belongs to no unit of ALLOWED: add it there")


def _modules() -> dict[str, Path]:
    found = {}
    for package in ("webhooks", "mappers"):
        for path in (ROOT / package).rglob("*.py"):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def _imports(path: Path) -> set[str]:
    """Every first-party module `path` imports, at module level or inside functions."""
    names: set[str] = set()
    modules = _modules()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from package import module` imports the module; `from module import name`
            # the module itself.
            inner = {f"{node.module}.{alias.name}" for alias in node.names}
            found = inner & modules.keys()
            names.update(found or {node.module})
    modules = _modules()
    return {name for name in names if name in modules}


EDGES = {
    module: {_unit(name) for name in _imports(path)} - {_unit(module)}
    for module, path in sorted(_modules().items())
}


@pytest.mark.parametrize("module", sorted(EDGES))
def test_a_module_imports_only_the_layers_below_it(module: str) -> None:
    allowed = ALLOWED[_unit(module)]
    if "*" in allowed:
        return
    assert EDGES[module] <= allowed, f"{module} imports {sorted(EDGES[module] - allowed)}"


def test_no_package_imports_one_that_imports_it_back() -> None:
    graph: dict[str, set[str]] = {}
    for module, targets in EDGES.items():
        graph.setdefault(_unit(module), set()).update(targets)

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        for nxt in graph.get(start, set()):
            if nxt == goal or (nxt not in seen and reaches(nxt, goal, seen | {nxt})):
                return True
        return False

    cycles = [unit for unit in graph if reaches(unit, unit, {unit})]
    assert cycles == []


def test_service_code_never_imports_the_fakes() -> None:
    users = {
        module
        for module, targets in EDGES.items()
        if "webhooks.fakes" in targets and _unit(module) not in ("webhooks.cli", "webhooks.fakes")
    }
    assert users == set()


def test_only_the_provider_packages_name_a_provider() -> None:
    # A provider is known in one place: its package (and its pure mapper). Service code
    # that compares a provider's name would break the seam.
    offenders = []
    for module, path in _modules().items():
        if _unit(module) in ("webhooks.providers", "mappers", "webhooks.fakes", "webhooks.cli"):
            continue
        text = path.read_text()
        for name in ('"stripe"', '"shopify"', "'stripe'", "'shopify'"):
            if name in text:
                offenders.append(f"{module}: {name}")
    assert offenders == []
