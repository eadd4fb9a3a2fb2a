"""Settings: defaults, then the environment and `.env`, then overrides passed by callers.

The service's own settings are fields of `Settings`; each registered provider brings its
own settings class (webhooks.providers.base.ProviderSettings), read from the variables
named after it (STRIPE_WEBHOOK_SECRET, SHOPIFY_PERSON_ID_FORMAT ...) and reached with
`settings.provider(name)`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import (
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from webhooks.errors import ConfigError, UnknownProvider
from webhooks.providers import registry
from webhooks.providers.base import ProviderSettings

DEFAULT_DATABASE_URL = "sqlite:///webhooks.db"
TWO_MIB = 2 * 1024 * 1024

EnvFile = Path | str | None


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
    # Pooled connections are opened as threads need them and then kept. Overflow ones
    # are closed on return: under a steady load above the pool, a process would start
    # a PostgreSQL backend every few requests (1,272 in a two-minute ingest benchmark
    # with a pool of 5 and 10 overflow), so by default there is none.
    database_pool_size: int = Field(
        15,
        ge=1,
        le=100,
        description="PostgreSQL connections each process (web process or worker) may hold: "
        "opened as its threads need them, then kept open.",
    )
    database_max_overflow: int = Field(
        0,
        ge=0,
        le=100,
        description="PostgreSQL connections a process may open beyond the pool in a burst, "
        "each closed again when returned. Size: processes x (pool + overflow) + 1 per "
        "worker (its LISTEN) below the server's max_connections (docs/scaling.md).",
    )
    max_body_bytes: int = Field(TWO_MIB, ge=1024, le=64 * 1024 * 1024)
    body_timeout_seconds: float = Field(
        5.0,
        gt=0,
        le=60,
        description="Seconds a client has to send the whole body after its headers; "
        "later is a 408, so a trickling client holds a server thread no longer.",
    )
    internal_id_key: str = Field(
        "customer_id",
        min_length=1,
        max_length=100,
        description="Metadata key holding your own customer id (Stripe metadata).",
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
    redact_action: Literal["delete", "suppress"] = Field(
        "delete",
        description="What a privacy redaction (Shopify customers/redact, shop/redact) sends "
        "Customer.io per person: delete the profile, or suppress it (delete it and refuse "
        "its identifier from then on, so a late webhook cannot bring it back).",
    )
    backfill_live_window_seconds: float = Field(
        3600,
        ge=0,
        le=72 * 3600,
        description="Backfilled events older than this are history: they update person "
        "attributes but are withheld as events, so old facts never start journeys.",
    )
    payload_retention_days: int = Field(
        30,
        ge=1,
        le=3650,
        description="Default of `webhooks purge`: raw bodies and payloads (personal data) "
        "of finished work older than this are dropped; dedup keys stay.",
    )
    waiting_expiry_hours: float = Field(
        168,
        gt=0,
        le=24 * 365,
        description="How long a delivery may wait for an event naming its person (a "
        "refund naming an order nobody linked) before it becomes a dead letter.",
    )
    erasure_retention_days: int = Field(
        365,
        ge=1,
        le=3650,
        description="How long a privacy redaction is remembered (as keyed digests, never "
        "in clear), so webhooks arriving later about what it erased are suppressed.",
    )
    customerio_site_id: str | None = Field(None, description="Track API site id.")
    customerio_api_key: SecretStr | None = Field(None, description="Track API key.")
    metrics_token: SecretStr | None = Field(
        None,
        description="Bearer token GET /metrics requires; unset, /metrics answers 404.",
    )
    customerio_region: Literal["us", "eu"] = Field("us", description="Workspace region.")
    customerio_track_url: str | None = Field(
        None, description="Override the Track API base URL (a local fake, a proxy)."
    )
    customerio_max_rps: float = Field(
        50.0,
        gt=0,
        le=1000,
        description="Requests per second per worker to Customer.io (spaced evenly, at most "
        "two back to back; backfill and replay calls leave the next slot to live ones).",
    )
    delivery_max_age_hours: float = Field(
        72.0, gt=0, description="Give up (dead-letter) an operation older than this."
    )
    worker_poll_interval: float = Field(
        0.25,
        gt=0,
        le=10,
        description="Seconds an idle worker waits before looking again when no wake-up "
        "comes (PostgreSQL NOTIFY, SQLite datagram from the web processes).",
    )
    # SQLite: ingest waits for each of these write transactions (a 500-row one made
    # acks wait 15 ms more). PostgreSQL: a row holds about seven advisory locks until
    # its batch commits, out of a lock table of max_locks_per_transaction x
    # max_connections (6,400 by default) shared by every session (docs/scaling.md).
    worker_map_batch: int = Field(
        100,
        ge=1,
        le=1000,
        description="Inbox rows a worker maps in one transaction while a backlog lasts. "
        "Larger drains a PostgreSQL backlog faster (500: 1.2-1.3 x); keep workers x "
        "batch x 7 advisory locks well below max_locks_per_transaction x max_connections.",
    )
    # Python runs one thread at a time per process: a worker's mapping and sending share
    # one core. As two processes on a host with cores to spare, a backlog drained
    # 1.3-1.5 x faster (docs/scaling.md).
    worker_stage: Literal["both", "map", "send"] = Field(
        "both",
        description="What one `webhooks worker` process runs: both stages, or only stage "
        "1 (map) or stage 2 (send), to run them as separate processes. `webhooks serve`'s "
        "own worker always runs both.",
    )
    worker_lease_seconds: float = Field(
        60.0,
        ge=1,
        le=3600,
        description="How long a claim lasts; a dead worker's rows are taken over after it.",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    log_format: Literal["json", "console"] = "json"

    # Each registered provider's settings, by name; filled by load_settings.
    _providers: dict[str, ProviderSettings] = PrivateAttr(default_factory=dict)

    def provider(self, name: str) -> ProviderSettings:
        """The settings of provider `name` (UnknownProvider for a name not registered)."""
        try:
            return self._providers[name]
        except KeyError:
            registry.get(name)  # raises UnknownProvider naming the registered ones
            raise UnknownProvider(f"settings were loaded before {name!r} was registered") from None

    def engine_options(self) -> dict[str, Any]:
        """The keyword arguments of storage.db.create_db_engine these settings give."""
        return {
            "timeout": self.database_timeout,
            "pool_size": self.database_pool_size,
            "max_overflow": self.database_max_overflow,
        }

    def enabled_providers(self) -> list[str]:
        """Providers with a signing secret: their endpoints accept deliveries."""
        return [name for name, item in self._providers.items() if item.webhook_secret]

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
        mode="before",
    )
    @classmethod
    def _blank_is_unset(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("reporting_currency")
    @classmethod
    def _currency_upper(cls, value: str) -> str:
        return value.upper()

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


def load_settings(*, _env_file: EnvFile = ".env", **overrides: Any) -> Settings:
    """Build settings, turning validation errors into a ConfigError naming the variable.

    `overrides` take the variables' names in lower case: `database_url=...`,
    `stripe_webhook_secret=...` (a provider's, by its prefix). A name that is neither
    is an error, so a typo in a test or a caller never silently does nothing.
    """
    specs = registry.specs()
    core: dict[str, Any] = {}
    per_provider: dict[str, dict[str, Any]] = {spec.name: {} for spec in specs}
    for key, value in overrides.items():
        if key in Settings.model_fields:
            core[key] = value
            continue
        for spec in specs:
            field = key.removeprefix(spec.name + "_")
            if field != key and field in spec.settings.model_fields:
                per_provider[spec.name][field] = value
                break
        else:
            raise ConfigError(f"invalid configuration: {key.upper()}: no such setting")
    problems: list[str] = []
    providers: dict[str, ProviderSettings] = {}
    for spec in specs:
        try:
            providers[spec.name] = spec.settings(
                _env_file=_env_file, _env_prefix=spec.env_prefix, **per_provider[spec.name]
            )
        except ValidationError as exc:
            problems += _problems(exc, spec.env_prefix)
    try:
        settings = Settings(_env_file=_env_file, **core)
    except ValidationError as exc:
        problems = _problems(exc, "") + problems
    if problems:
        raise ConfigError("invalid configuration: " + "; ".join(problems))
    settings._providers = providers
    return settings


def _problems(exc: ValidationError, prefix: str) -> list[str]:
    found = []
    for error in exc.errors():
        name = (prefix + (str(error["loc"][0]) if error["loc"] else "settings")).upper()
        found.append(f"{name}: {error['msg']}")
    return found
