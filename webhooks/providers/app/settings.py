"""The app endpoint's settings; each is read from APP_<NAME> (the registry sets the prefix)."""

from __future__ import annotations

import base64
import binascii
from typing import Any

from pydantic import Field, SecretStr, field_validator

from webhooks.providers.base import ProviderSettings

SECRET_PREFIX = "whsec_"  # noqa: S105 (the scheme's prefix, not a secret)


class AppSettings(ProviderSettings):
    """Signing secrets (Standard Webhooks) and whose checkouts the backend reports."""

    webhook_tolerance: int = Field(
        300,
        ge=1,
        le=86_400,
        description="Seconds a webhook-timestamp may be off, either way (Standard Webhooks "
        "libraries use 300).",
    )
    checkout_provider: str = Field(
        "stripe",
        pattern=r"^[a-z][a-z0-9_]{0,31}$",
        description="The provider whose checkout the backend's checkout_started and "
        "cart_updated name by cart_id (a Stripe Checkout Session id): the order that "
        "provider's webhook reports for it is the same checkout.",
    )
    checkout_account: str | None = Field(
        None,
        max_length=255,
        description="That provider's account (a Shopify shop domain); unset: the "
        "provider's own account (Stripe's platform; connected accounts are not supported).",
    )

    @field_validator("webhook_secret")
    @classmethod
    def _standard_webhooks_key(cls, value: list[SecretStr]) -> list[SecretStr]:
        # A secret that is not whsec_ + base64 would refuse every event with 401.
        for secret in value:
            key_bytes(secret.get_secret_value())
        return value

    @field_validator("checkout_account", mode="before")
    @classmethod
    def _blank_is_unset_too(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value


def key_bytes(secret: str) -> bytes:
    """The HMAC key of a Standard Webhooks secret: the base64 after `whsec_`.

    Raises ValueError (naming the rule, never the secret) for anything else.
    """
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError("every app signing secret starts with whsec_ (Standard Webhooks)")
    encoded = secret.removeprefix(SECRET_PREFIX)
    try:
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("an app signing secret is whsec_ followed by base64") from None
    if len(key) < 16:
        raise ValueError("an app signing secret's key has at least 16 bytes (24 recommended)")
    return key
