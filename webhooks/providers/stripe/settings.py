"""Stripe's settings; each is read from STRIPE_<NAME> (the registry sets the prefix)."""

from __future__ import annotations

from typing import Any

from pydantic import Field, SecretStr, field_validator

from webhooks.providers.base import ProviderSettings


class StripeSettings(ProviderSettings):
    """Signing secrets, identity choices and the optional API key for enrichment."""

    webhook_tolerance: int = Field(
        300, ge=1, le=86_400, description="Seconds a Stripe signature timestamp may be off."
    )
    client_reference_id: bool = Field(
        False,
        description="Treat a Checkout Session's client_reference_id as your customer id. "
        "Buyers can set it on Payment Links (?client_reference_id=): only for sessions "
        "your server creates.",
    )
    payment_intent_events: bool = Field(
        False,
        description="Map payment_intent.* events (apps confirming PaymentIntents themselves).",
    )
    api_key: SecretStr | None = Field(
        None,
        description="Restricted Stripe key (read customers and Checkout Sessions) for line "
        "items and customer metadata; unset: no Stripe API calls.",
    )
    api_base: str | None = Field(
        None, description="Override the Stripe API base URL (a local fake, a proxy)."
    )
    api_max_rps: float = Field(
        20.0, gt=0, le=100, description="Stripe API requests per second per worker."
    )

    @field_validator("webhook_secret")
    @classmethod
    def _stripe_prefix(cls, value: list[SecretStr]) -> list[SecretStr]:
        # A pasted API key (sk_...) would silently reject every delivery with 401.
        for secret in value:
            if not secret.get_secret_value().startswith("whsec_"):
                raise ValueError("every Stripe signing secret starts with whsec_")
        return value

    @field_validator("api_key", "api_base", mode="before")
    @classmethod
    def _blank_is_unset_too(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value
