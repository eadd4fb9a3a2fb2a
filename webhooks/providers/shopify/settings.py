"""Shopify's settings; each is read from SHOPIFY_<NAME> (the registry sets the prefix)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator

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

    admin_token: SecretStr | None = Field(
        None,
        description="Admin API access tokens (shpat_) for backfill, reconcile and register: "
        "SHOP:TOKEN pairs, comma-separated (my-store.myshopify.com:shpat_...), or one bare "
        "token used for whichever --shop is given.",
    )
    api_version: str = Field(
        "2025-10",
        pattern=r"^[0-9]{4}-(01|04|07|10)$",
        description="Admin API version the backfill reads and register calls (2025-10 or "
        "later for register). Webhook payloads follow the app's webhook API version, set "
        "in the app's configuration: keep the two the same.",
    )
    admin_api_base: str = Field(
        "https://{shop}",
        description="Where a shop's Admin API is; {shop} is replaced by its myshopify "
        "domain (override for a local fake or a proxy).",
    )

    @field_validator(
        "internal_id_metafield", "internal_id_note_attribute", "admin_token", mode="before"
    )
    @classmethod
    def _blank_is_unset_too(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("admin_token")
    @classmethod
    def _token_pairs(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            parse_tokens(value.get_secret_value())
        return value

    @field_validator("admin_api_base")
    @classmethod
    def _has_shop(cls, value: str) -> str:
        if "{shop}" not in value or not value.startswith(("https://", "http://")):
            raise ValueError("must be an http(s) URL containing {shop}")
        return value.rstrip("/")

    def tokens(self) -> dict[str, str]:
        """Shop domain -> its Admin API token; the key "" holds a bare token."""
        return parse_tokens(self.admin_token.get_secret_value()) if self.admin_token else {}


def parse_tokens(value: str) -> dict[str, str]:
    """`shop:token,shop2:token2` (or one bare `token`) as a mapping; ValueError when bad."""
    tokens: dict[str, str] = {}
    for part in (item.strip() for item in value.split(",")):
        if not part:
            continue
        shop, _, token = part.rpartition(":")
        shop = shop.strip().lower()
        if shop and not shop.endswith(".myshopify.com"):
            raise ValueError(f"{shop!r} is not a myshopify.com domain (write SHOP:TOKEN)")
        if not token.strip() or "replace_me" in token.lower():
            raise ValueError("an Admin API token is empty or still the .env.example placeholder")
        if shop in tokens:
            raise ValueError(f"{shop or 'a bare token'} is given twice")
        tokens[shop] = token.strip()
    if "" in tokens and len(tokens) > 1:
        raise ValueError("give either one bare token or SHOP:TOKEN pairs, not both")
    return tokens
