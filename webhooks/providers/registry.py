"""The provider registry: every provider the service knows, by name. No discovery.

Adding a provider is its package under webhooks/providers/ and one line in BUILTIN.
Everything else reads this module: HTTP routing, settings, identity, enrichment, the
CLI, generated docs and the shared tests. An unknown name is an UnknownProvider error,
never a fallback to another provider.
"""

from __future__ import annotations

import importlib
from typing import Any

from webhooks.errors import ConfigError, UnknownProvider
from webhooks.providers.base import ProviderSpec

# Each entry is a package exposing SPEC. Order is the order of docs and listings.
BUILTIN = (
    "webhooks.providers.stripe",
    "webhooks.providers.shopify",
    "webhooks.providers.app",
)

AnySpec = ProviderSpec[Any, Any]
_specs: dict[str, AnySpec] = {}
_loaded = False


def _load_builtin() -> None:
    # Imported on first use, not at import time, so that the provider packages (which
    # import the mappers and their settings) load only when something asks for them.
    global _loaded
    if _loaded:
        return
    _loaded = True
    for module in BUILTIN:
        _add(importlib.import_module(module).SPEC)


def register(spec: AnySpec) -> AnySpec:
    """Add a provider; a second one of the same name is an error, not a replacement."""
    _load_builtin()
    return _add(spec)


def _add(spec: AnySpec) -> AnySpec:
    if spec.name in _specs:
        raise ConfigError(f"a provider named {spec.name!r} is registered already")
    _specs[spec.name] = spec
    return spec


def unregister(name: str) -> None:
    """Remove a provider (tests that register their own remove it afterwards)."""
    _load_builtin()
    if name not in _specs:
        raise UnknownProvider(f"no provider named {name!r} is registered")
    del _specs[name]


def get(name: str) -> AnySpec:
    """The spec of provider `name`; UnknownProvider (naming the known ones) otherwise."""
    _load_builtin()
    try:
        return _specs[name]
    except KeyError:
        known = ", ".join(sorted(_specs)) or "none"
        raise UnknownProvider(f"no provider named {name!r} (registered: {known})") from None


def specs() -> list[AnySpec]:
    """Every registered provider, built-in ones first, in registration order."""
    _load_builtin()
    return list(_specs.values())
