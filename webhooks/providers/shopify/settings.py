"""Shopify's settings; each is read from SHOPIFY_<NAME> (the registry sets the prefix)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from webhooks.providers.base import ProviderSettings


class ShopifySettings(ProviderSettings):
    """Signing secrets (app secret, previous one, admin keys) and what payloads mean."""

    order_completed_topic: Literal["orders/create", "orders/paid"] = Field(
        "orders/create", description="Shopify topic that counts as a purchase."
    )
    internal_id_metafield: str | None = Field(
        None,
        pattern=r"^[^.\s]+\.[^.\s]+$",
        description="namespace.key of a Shopify customer metafield holding your customer id.",
    )
    internal_id_note_attribute: str | None = Field(
        None,
        max_length=100,
        description="Shopify cart note attribute holding your customer id. Shoppers can "
        "set these: only for stores whose storefront writes it server-side.",
    )

    @field_validator("internal_id_metafield", "internal_id_note_attribute", mode="before")
    @classmethod
    def _blank_is_unset_too(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value
