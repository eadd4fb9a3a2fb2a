"""Stage 1's pieces, built once from the settings and the provider registry."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from webhooks.config import Settings
from webhooks.providers import registry
from webhooks.providers.base import Enricher
from webhooks.stage1.state.identity import IdentityPolicy
from webhooks.stage1.state.step import StateConfig


def mapper_configs(settings: Settings) -> dict[str, Any]:
    """Each provider's mapper config by name, from its settings."""
    return {
        spec.name: spec.mapper_config(settings.provider(spec.name), settings.internal_id_key)
        for spec in registry.specs()
    }


def identity_policy(settings: Settings) -> IdentityPolicy:
    """Person-id formats (the provider's default unless set), own accounts, guest policy."""
    specs = registry.specs()
    return IdentityPolicy(
        person_id_formats={
            spec.name: settings.provider(spec.name).person_id_format or spec.person_id_format
            for spec in specs
        },
        own_accounts={spec.name: spec.own_account for spec in specs if spec.own_account},
        guest_policy=settings.guest_policy,
    )


def state_config(settings: Settings) -> StateConfig:
    """The identity, person-state and journey choices, from the service's settings."""
    return StateConfig(
        identity=identity_policy(settings),
        reporting_currency=settings.reporting_currency,
        cart_update_hold_seconds=settings.cart_update_hold_seconds,
        merge_delay_seconds=settings.merge_delay_seconds,
        redact_action=settings.redact_action,
        erasure_retention_days=settings.erasure_retention_days,
        backfill_live_window_seconds=settings.backfill_live_window_seconds,
    )


@dataclass
class Stage1:
    """What process_batch needs besides the database: configs, state rules, lookups."""

    configs: dict[str, Any]
    state: StateConfig
    enrichers: dict[str, Enricher] = field(default_factory=dict)

    def close(self) -> None:
        """Release the enrichers' connections."""
        for enricher in self.enrichers.values():
            enricher.close()


def build(settings: Settings) -> Stage1:
    """Stage 1 for these settings; enrichers only for providers configured for them."""
    configs = mapper_configs(settings)
    enrichers: dict[str, Enricher] = {}
    for spec in registry.specs():
        if spec.enricher is None:
            continue
        made = spec.enricher(settings.provider(spec.name), configs[spec.name])
        if made is not None:
            enrichers[spec.name] = made
    return Stage1(configs, state_config(settings), enrichers)
