"""The provider seam: what a provider package declares, and the helpers its keying uses.

A provider is one package under webhooks/providers/ exposing a `SPEC` (a ProviderSpec)
and one line in webhooks/providers/registry.py. Every other layer (HTTP routing,
settings, identity, enrichment, the CLI, generated docs, the shared tests) reads the
registry; none names a provider. See docs/adding-a-provider.md.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any, Generic, Protocol, TypeVar, runtime_checkable

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from mappers.base import Handler, StoredDelivery
from mappers.taxonomy import EventName
from mappers.taxonomy_doc import EventDoc
from webhooks.core import jsontext
from webhooks.errors import ConfigError, PayloadError
from webhooks.providers.samples import Sample
from webhooks.storage.inbox import Delivery

# Headers arrive lower-cased (the view normalises them), because HTTP/2 lower-cases
# names and Shopify's newer Events delivery drops the X- prefix.
Headers = Mapping[str, str]
NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_]{0,31}$")

SecretList = Annotated[list[SecretStr], NoDecode]


class ProviderSettings(BaseSettings):
    """Settings every provider has; a provider's subclass adds its own.

    The environment names are the provider's name, upper-cased, then the field:
    STRIPE_WEBHOOK_SECRET, SHOPIFY_PERSON_ID_FORMAT. The loader sets the prefix.
    """

    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", case_sensitive=False
    )

    webhook_secret: SecretList = Field(
        default_factory=list,
        description="Comma-separated signing secrets (rotation); empty disables the endpoint.",
    )
    person_id_format: str | None = Field(
        None,
        max_length=100,
        description="Person id for a customer without an internal id; {customer_id} and "
        "{account} are replaced. Unset: the provider's default.",
    )

    @field_validator("webhook_secret", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        """`a,b , c` becomes ["a", "b", "c"]; an empty value means not configured."""
        if value is None:
            return []
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("webhook_secret")
    @classmethod
    def _no_placeholder(cls, value: list[SecretStr]) -> list[SecretStr]:
        # A copied .env.example must not leave an endpoint open to a public secret.
        if any("replace_me" in secret.get_secret_value().lower() for secret in value):
            raise ValueError("still the placeholder from .env.example; paste the real secret")
        return value

    @field_validator("person_id_format", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("person_id_format")
    @classmethod
    def _person_id_format(cls, value: str | None) -> str | None:
        if value is not None:
            check_person_id_format(value)
        return value

    def secrets(self) -> list[str]:
        """The configured signing secrets, in order."""
        return [secret.get_secret_value() for secret in self.webhook_secret]


def check_person_id_format(value: str) -> None:
    """Raise ValueError unless `value` is a usable person-id template."""
    if "{customer_id}" not in value:
        raise ValueError("must contain {customer_id}")
    try:
        rendered = value.format(customer_id="1", account="a")
    except (KeyError, IndexError, ValueError):
        raise ValueError("only {customer_id} and {account} may be used") from None
    if rendered.lower().startswith("cio_"):
        raise ValueError("Customer.io reads ids starting with cio_ as its own")


@dataclass(frozen=True)
class BackfillRequest:
    """What `webhooks backfill` asks a provider for."""

    since: datetime
    until: datetime | None = None  # None: up to now
    types: tuple[str, ...] = ()  # the provider's type names or groups; empty: all handled
    accounts: tuple[str, ...] = ()  # Shopify shops; empty: every configured one


@dataclass(frozen=True)
class RegisterRequest:
    """What `webhooks register` asks a provider for."""

    url: str
    dry_run: bool = False
    accounts: tuple[str, ...] = ()  # Shopify shops; empty: every configured one


class Receiver(Protocol):
    """The ingest side of a provider, built from its settings: verify, then key."""

    def verify(self, body: bytes, headers: Headers) -> int:
        """The index of the configured secret that signed the body (0: the first); or
        raise a MissingSignature / MalformedSignature / VerificationError."""
        ...

    def parse(self, body: bytes, headers: Headers) -> Delivery:
        """Read the dedup key and metadata of a verified body, or raise PayloadError."""
        ...


@dataclass(frozen=True)
class Batch:
    """Several events in one request, each its own delivery (its own dedup key).

    Stored all or nothing, in one transaction; the answer lists each event's outcome.
    """

    deliveries: list[Delivery]


@runtime_checkable
class BatchReceiver(Receiver, Protocol):
    """A receiver whose requests may carry several events (the app endpoint's batches).

    The view calls `parse_batch` instead of `parse` when a receiver has it.
    """

    def parse_batch(self, body: bytes, headers: Headers) -> Delivery | Batch:
        """One delivery for a single event, a Batch for several; or raise PayloadError
        or InvalidEvent (nothing is stored)."""
        ...


# A call that fetches one piece of enrichment; None when the provider has no such object.
# It raises LookupUnavailable (the row waits), LookupUnauthorized (no more lookups this
# pass) or LookupRefused (this object only); see webhooks.errors.
Fetch = Callable[[], Any]


class Enricher(Protocol):
    """Fetches what a provider's payloads leave out; stage 1 stores it with the row."""

    # Only deliveries of these types are parsed and asked about.
    event_types: frozenset[str]

    def lookups(self, delivery: StoredDelivery) -> dict[str, Fetch]:
        """What `delivery` needs: enrichment key -> the call that fetches it ({} for none)."""
        ...

    def close(self) -> None:
        """Release the client's connections."""
        ...


S = TypeVar("S", bound=ProviderSettings)
C = TypeVar("C")


@dataclass(frozen=True)
class ProviderSpec(Generic[S, C]):
    """Everything the service knows about one provider, in one place."""

    name: str  # URL segment, inbox `provider`, `source` of its events, env prefix
    title: str  # for people: docs, CLI help
    settings: type[S]  # its settings; env names NAME_FIELD
    receiver: Callable[[S], Receiver]  # verification and keying, built from its settings
    # The headers that sign `body` with one secret, exactly as the provider sends them
    # (one for Stripe and Shopify; id, timestamp and signature for Standard Webhooks):
    # `webhooks dev sign`, `webhooks simulate`, tests and benchmarks.
    sign: Callable[[bytes, str], dict[str, str]]
    handlers: Mapping[str, Handler[C]]  # event type or topic -> pure mapper
    mapper_config: Callable[[S, str], C]  # (its settings, INTERNAL_ID_KEY) -> mapper config
    person_id_format: str  # default for customers without an internal id
    # When set, every other account is another merchant (Stripe Connect): its ids and
    # emails never resolve to this account's people.
    own_account: str | None = None
    # Fetches what payloads leave out, stored with the inbox row before mapping.
    enricher: Callable[[S, C], Enricher | None] | None = None
    # Canonical event -> which of this provider's types produce it (docs/taxonomy.md).
    docs: Mapping[EventName, EventDoc] = field(default_factory=dict)
    # A fresh delivery of a type from the package's samples/ (`webhooks simulate`).
    sample: Callable[[str], Sample] | None = None
    # The deliveries of a time range read back from the provider's API, shaped as
    # their webhooks (`webhooks backfill`). Raises ConfigError when the settings or the
    # request cannot do it (no API key, an unknown type).
    backfill: Callable[[S, BackfillRequest], Iterator[Sample]] | None = None
    # Create or update the provider's webhook subscriptions for a URL with exactly the
    # handled types (`webhooks register`): what it found and did, one entry per
    # endpoint or shop. Raises ConfigError when the settings cannot (no API key).
    register: Callable[[S, RegisterRequest], list[dict[str, Any]]] | None = None

    def __post_init__(self) -> None:
        if not NAME_PATTERN.match(self.name):
            raise ConfigError(f"provider name {self.name!r} must match {NAME_PATTERN.pattern}")
        try:
            check_person_id_format(self.person_id_format)
        except ValueError as exc:
            raise ConfigError(f"{self.name} person_id_format: {exc}") from None

    @property
    def env_prefix(self) -> str:
        """The prefix of its environment variables: STRIPE_, SHOPIFY_."""
        return f"{self.name.upper()}_"


# Deepest JSON nesting accepted. Real webhooks nest under ten levels (a Stripe event's
# expanded objects, a Shopify order's line items and their tax lines); anything deeper
# is refused with 400 json_too_deep, not left to Python's recursion limit.
MAX_JSON_DEPTH = 64


def load_json_object(body: bytes) -> dict[str, Any]:
    """Parse a body that must be a JSON object; anything else is a PayloadError."""
    try:
        payload = jsontext.loads(body)
    except RecursionError:
        raise _too_deep() from None
    except (ValueError, UnicodeDecodeError):
        raise PayloadError("body is not valid JSON", code="invalid_json") from None
    if not isinstance(payload, dict):
        raise PayloadError("body is not a JSON object", code="invalid_json")
    if body.count(b"{") + body.count(b"[") > MAX_JSON_DEPTH and _deeper_than(
        payload, MAX_JSON_DEPTH
    ):
        raise _too_deep()
    return payload


def _too_deep() -> PayloadError:
    return PayloadError(f"JSON nests deeper than {MAX_JSON_DEPTH} levels", code="json_too_deep")


def _deeper_than(value: Any, limit: int) -> bool:
    """Whether `value` nests containers deeper than `limit` (iterative: no recursion)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


def required_str(value: Any, what: str) -> str:
    """Return a non-empty string key field, or raise PayloadError naming it."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value.strip():
        raise PayloadError(f"no {what} to key the delivery by", code=f"missing_{what}")
    # PostgreSQL refuses NUL in text and the columns hold 255 characters; refusing here
    # gives a clear 400 instead of a storage error the provider would retry forever.
    if len(value) > 255 or not storable(value):
        raise PayloadError(f"{what} is not a usable key", code=f"invalid_{what}")
    return value.strip()


def storable(value: str) -> bool:
    """Whether every database can store `value`: PostgreSQL refuses NUL in text, and
    JSON may carry lone surrogates ("\udfff") that no driver can encode."""
    if "\x00" in value:
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def optional_str(value: Any, limit: int = 255) -> str | None:
    """A short informational string, or None when absent or unstorable."""
    if not isinstance(value, str) or not value or len(value) > limit:
        return None
    return value if storable(value) else None


def parse_time(value: Any) -> datetime | None:
    """Unix seconds or an ISO 8601 string as an aware UTC datetime; None when unreadable."""
    try:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return datetime.fromtimestamp(value, tz=UTC)
        if isinstance(value, str) and value:
            parsed = datetime.fromisoformat(value)
            if parsed.tzinfo is None:
                parsed = parsed.replace(tzinfo=UTC)
            return parsed.astimezone(UTC)
    except (ValueError, OverflowError, OSError):
        return None
    return None
