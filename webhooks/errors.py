"""One exception tree for the service: every error it raises on purpose descends from
WebhooksError. What a worker does with an error is its class, never a flag or a message:

WebhooksError
├── ConfigError                      the configuration is invalid (names the variable)
│   └── UnknownProvider              a provider name no registry entry has
├── IngestError                      a webhook request refused (HTTP status and code)
│   ├── ProviderNotConfigured, MissingSignature, MalformedSignature, PayloadError
│   ├── InvalidEvent                 422: a first-party event that fails the taxonomy
│   ├── VerificationError
│   │   └── StaleSignature
│   └── StorageUnavailable           503: the provider retries
└── ProcessingError                  the worker's stages (mapping, lookups, delivery)
    ├── PermanentError               dead-letter: retrying the same input fails the same way
    │   └── mappers.errors.MappingError, stage 2's DeliveryRefused, LookupRefused
    ├── TransientError               retry later (`retry_after` when the peer said)
    │   └── stage 2's DeliveryUnavailable, LookupUnavailable
    └── CredentialsRefused           pause everything that uses them until an operator fixes them
        └── stage 2's DeliveryUnauthorized, LookupUnauthorized
"""

from __future__ import annotations


class WebhooksError(Exception):
    """Root of every error this package raises on purpose."""


class ConfigError(WebhooksError):
    """The configuration is invalid; the message names the offending variable."""


class UnknownProvider(ConfigError, LookupError):
    """A provider name that no registry entry has: never a fallback to another provider."""


# --- ingest side -------------------------------------------------------------------


class IngestError(WebhooksError):
    """A webhook request was refused; carries the HTTP status and a short machine code.

    Subclasses set both in their class line: `class X(IngestError, status=400, code=...)`.
    """

    status: int = 400
    code: str = "bad_request"

    def __init_subclass__(cls, *, status: int | None = None, code: str | None = None) -> None:
        super().__init_subclass__()
        if status is not None:
            cls.status = status
        if code is not None:
            cls.code = code

    def __init__(self, message: str, *, code: str | None = None, status: int | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status


class ProviderNotConfigured(IngestError, status=404, code="provider_not_configured"):
    """The provider has no signing secret configured, so its endpoint is disabled."""


class MissingSignature(IngestError, status=400, code="missing_signature"):
    """The request carries no signature header at all."""


class MalformedSignature(IngestError, status=400, code="malformed_signature"):
    """The signature header cannot be parsed."""


class VerificationError(IngestError, status=401, code="invalid_signature"):
    """The signature does not match any configured secret."""


class StaleSignature(VerificationError, code="timestamp_out_of_tolerance"):
    """The signature matches, but its timestamp is outside the tolerance (either side)."""


class MalformedBody(IngestError, status=400, code="malformed_body"):
    """The body's framing is broken: a bad chunk size, a connection closed mid-body."""


class BodyTimeout(IngestError, status=408, code="body_timeout"):
    """The body was not fully received within BODY_TIMEOUT_SECONDS of the headers."""


class PayloadError(IngestError, status=400, code="invalid_payload"):
    """The verified body is not JSON, or lacks what is needed to key it (id, topic)."""


class InvalidEvent(IngestError, status=422, code="invalid_event"):
    """A verified event does not fit the taxonomy (the app endpoint validates before it
    stores): `errors` lists each problem as {"path": "...", "message": "..."}."""

    def __init__(self, message: str, errors: list[dict[str, str]]) -> None:
        super().__init__(message)
        self.errors = errors


class StorageUnavailable(IngestError, status=503, code="storage_unavailable"):
    """The database could not take the write in time; the provider should retry."""


# --- worker side ----------------------------------------------------------------------


class ProcessingError(WebhooksError):
    """A worker stage could not finish an item; the subclass says what happens next."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class PermanentError(ProcessingError):
    """The same input will fail the same way: dead-letter it with this reason."""


class TransientError(ProcessingError):
    """The peer is unreachable, throttling or failing: try the same thing later.

    `retry_after` is the peer's own hint in seconds, when it gave one.
    """

    def __init__(
        self, message: str, *, status: int | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message, status=status)
        self.retry_after = retry_after


class CredentialsRefused(ProcessingError):
    """The peer refused our credentials (401/403): every call fails until they are fixed."""


class LookupRefused(PermanentError):
    """An enrichment lookup was refused for this object; the row maps without the data."""


class LookupUnavailable(TransientError):
    """An enrichment source is unavailable; the row waits, up to its deadline."""


class LookupUnauthorized(CredentialsRefused):
    """An enrichment source refused the key; no more lookups this pass."""
