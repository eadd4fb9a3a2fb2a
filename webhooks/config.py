"""Settings: defaults, then the environment and `.env`, then overrides passed by callers."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from webhooks.errors import ConfigError

DEFAULT_DATABASE_URL = "sqlite:///webhooks.db"
TWO_MIB = 2 * 1024 * 1024

SecretList = Annotated[list[SecretStr], NoDecode]


def _split_secrets(value: Any) -> Any:
    """Turn `a,b , c` into ["a", "b", "c"]; an empty value means "not configured"."""
    if value is None:
        return []
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class Settings(BaseSettings):
    """Every knob of the service, validated once at start-up."""

    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        case_sensitive=False,
    )

    database_url: str = Field(
        DEFAULT_DATABASE_URL,
        description="SQLAlchemy URL of the inbox database.",
    )
    database_timeout: float = Field(
        2.0,
        gt=0,
        # Connect plus statement must stay inside Shopify's 5 s to answer 503 in time.
        le=2.5,
        description="Seconds to wait for a connection or a lock before answering 503.",
    )
    stripe_webhook_secret: SecretList = Field(
        default_factory=list,
        description="Comma-separated whsec_ signing secrets; empty disables the endpoint.",
    )
    stripe_webhook_tolerance: int = Field(
        300, ge=1, le=86_400, description="Seconds a Stripe signature timestamp may be off."
    )
    shopify_webhook_secret: SecretList = Field(
        default_factory=list,
        description="Comma-separated Shopify signing secrets; empty disables the endpoint.",
    )
    max_body_bytes: int = Field(TWO_MIB, ge=1024, le=64 * 1024 * 1024)
    shopify_order_completed_topic: Literal["orders/create", "orders/paid"] = Field(
        "orders/create", description="Shopify topic that counts as a purchase."
    )
    internal_id_key: str = Field(
        "customer_id",
        min_length=1,
        max_length=100,
        description="Stripe metadata key holding your own customer id.",
    )
    stripe_client_reference_id: bool = Field(
        False,
        description="Treat a Checkout Session's client_reference_id as your customer id. "
        "Buyers can set it on Payment Links (?client_reference_id=): only for sessions "
        "your server creates.",
    )
    shopify_internal_id_metafield: str | None = Field(
        None,
        pattern=r"^[^.\s]+\.[^.\s]+$",
        description="namespace.key of a Shopify customer metafield holding your customer id.",
    )
    shopify_internal_id_note_attribute: str | None = Field(
        None,
        max_length=100,
        description="Shopify cart note attribute holding your customer id. Shoppers can "
        "set these: only for stores whose storefront writes it server-side.",
    )
    stripe_person_id_format: str = Field(
        "stripe:{customer_id}",
        max_length=100,
        description="Person id for a Stripe customer without an internal id; "
        "{customer_id} and {account} are replaced.",
    )
    shopify_person_id_format: str = Field(
        "shopify:{account}:{customer_id}",
        max_length=100,
        description="Person id for a Shopify customer without an internal id; "
        "{customer_id} and {account} (the shop domain) are replaced.",
    )
    guest_policy: Literal["anonymous", "email", "skip"] = Field(
        "anonymous",
        description="Buyers with no customer id: anonymous events by cart token (merged "
        "when they become known), identify by email, or skip.",
    )
    reporting_currency: str = Field(
        "USD",
        pattern=r"^[A-Za-z]{3}$",
        description="Currency of lifetime_value; amounts in others are left out of it.",
    )
    cart_update_hold_seconds: float = Field(
        120.0,
        ge=0,
        le=86_400,
        description="Hold cart_updated this long, so an order that follows suppresses it.",
    )
    merge_delay_seconds: float = Field(
        60.0,
        ge=0,
        le=3600,
        description="Send a profile merge this long after it is queued, alone, so the "
        "primary's identify has been applied (Customer.io ignores a merge into a profile "
        "that does not exist yet).",
    )
    stripe_api_key: SecretStr | None = Field(
        None,
        description="Restricted Stripe key (read customers and Checkout Sessions) for line "
        "items and customer metadata; unset: no Stripe API calls.",
    )
    stripe_api_base: str | None = Field(
        None, description="Override the Stripe API base URL (a local fake, a proxy)."
    )
    stripe_api_max_rps: float = Field(
        20.0, gt=0, le=100, description="Stripe API requests per second per worker."
    )
    stripe_payment_intent_events: bool = Field(
        False,
        description="Map payment_intent.* events (apps confirming PaymentIntents themselves).",
    )
    customerio_site_id: str | None = Field(None, description="Track API site id.")
    customerio_api_key: SecretStr | None = Field(None, description="Track API key.")
    customerio_region: Literal["us", "eu"] = Field("us", description="Workspace region.")
    customerio_track_url: str | None = Field(
        None, description="Override the Track API base URL (a local fake, a proxy)."
    )
    customerio_max_rps: float = Field(
        50.0, gt=0, le=1000, description="Requests per second per worker to Customer.io."
    )
    delivery_max_age_hours: float = Field(
        72.0, gt=0, description="Give up (dead-letter) an operation older than this."
    )
    worker_poll_interval: float = Field(
        0.25, gt=0, le=10, description="Seconds an idle worker waits before looking again."
    )
    worker_lease_seconds: float = Field(
        60.0,
        ge=1,
        le=3600,
        description="How long a claim lasts; a dead worker's rows are taken over after it.",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    log_format: Literal["json", "console"] = "json"

    @field_validator("stripe_webhook_secret", "shopify_webhook_secret", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        return _split_secrets(value)

    @field_validator("stripe_webhook_secret", "shopify_webhook_secret")
    @classmethod
    def _no_placeholder(cls, value: list[SecretStr]) -> list[SecretStr]:
        # A copied .env.example must not leave an endpoint open to a public secret.
        if any("replace_me" in secret.get_secret_value().lower() for secret in value):
            raise ValueError("still the placeholder from .env.example; paste the real secret")
        return value

    @field_validator("stripe_webhook_secret")
    @classmethod
    def _stripe_prefix(cls, value: list[SecretStr]) -> list[SecretStr]:
        # A pasted API key (sk_...) would silently reject every delivery with 401.
        for secret in value:
            if not secret.get_secret_value().startswith("whsec_"):
                raise ValueError("every Stripe signing secret starts with whsec_")
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @field_validator("database_url")
    @classmethod
    def _known_backend(cls, value: str) -> str:
        if not value.startswith(("sqlite", "postgresql")):
            raise ValueError("only sqlite:/// and postgresql+psycopg:// URLs are supported")
        return value

    @field_validator(
        "customerio_site_id",
        "customerio_track_url",
        "stripe_api_base",
        "shopify_internal_id_metafield",
        "shopify_internal_id_note_attribute",
        "stripe_api_key",
        mode="before",
    )
    @classmethod
    def _blank_is_unset(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("reporting_currency")
    @classmethod
    def _currency_upper(cls, value: str) -> str:
        return value.upper()

    @field_validator("stripe_person_id_format", "shopify_person_id_format")
    @classmethod
    def _person_id_format(cls, value: str) -> str:
        if "{customer_id}" not in value:
            raise ValueError("must contain {customer_id}")
        try:
            rendered = value.format(customer_id="1", account="a")
        except (KeyError, IndexError, ValueError):
            raise ValueError("only {customer_id} and {account} may be used") from None
        if rendered.lower().startswith("cio_"):
            raise ValueError("Customer.io reads ids starting with cio_ as its own")
        return value

    @model_validator(mode="after")
    def _both_credentials_or_none(self) -> Settings:
        # One of the two set is a typo or a missing secret, not a wish for a dry run.
        has_key = bool(self.customerio_api_key and self.customerio_api_key.get_secret_value())
        if bool(self.customerio_site_id) != has_key:
            missing = "CUSTOMERIO_API_KEY" if self.customerio_site_id else "CUSTOMERIO_SITE_ID"
            raise ValueError(f"{missing} is missing (set both Customer.io credentials or neither)")
        return self

    @property
    def customerio_url(self) -> str:
        """The Track API base URL: the override, else the region's host."""
        if self.customerio_track_url:
            return self.customerio_track_url.rstrip("/")
        return (
            "https://track-eu.customer.io"
            if self.customerio_region == "eu"
            else ("https://track.customer.io")
        )

    @property
    def dry_run(self) -> bool:
        """True without Customer.io credentials: deliver nothing, record everything."""
        key = self.customerio_api_key.get_secret_value() if self.customerio_api_key else ""
        return not (self.customerio_site_id and key)

    @property
    def is_sqlite(self) -> bool:
        """True when the inbox is the embedded SQLite database."""
        return self.database_url.startswith("sqlite")


def load_settings(**overrides: Any) -> Settings:
    """Build settings, turning validation errors into a ConfigError naming the variable."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            name = str(error["loc"][0]).upper() if error["loc"] else "settings"
            problems.append(f"{name}: {error['msg']}")
        raise ConfigError("invalid configuration: " + "; ".join(problems)) from None
