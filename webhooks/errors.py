"""One exception tree for the service, with ingest-side and delivery-side branches."""

from __future__ import annotations


class WebhooksError(Exception):
    """Root of every error this package raises on purpose."""


class ConfigError(WebhooksError):
    """The configuration is invalid; the message names the offending variable."""


# --- ingest side -------------------------------------------------------------------


class IngestError(WebhooksError):
    """A webhook request was refused; carries the HTTP status and a short machine code."""

    status: int = 400
    code: str = "bad_request"

    def __init__(self, message: str, *, code: str | None = None, status: int | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status


class ProviderNotConfigured(IngestError):
    """The provider has no signing secret configured, so its endpoint is disabled."""

    status = 404
    code = "provider_not_configured"


class MissingSignature(IngestError):
    """The request carries no signature header at all."""

    status = 400
    code = "missing_signature"


class MalformedSignature(IngestError):
    """The signature header cannot be parsed."""

    status = 400
    code = "malformed_signature"


class VerificationError(IngestError):
    """The signature does not match any configured secret, or its timestamp is stale."""

    status = 401
    code = "invalid_signature"


class PayloadError(IngestError):
    """The verified body is not JSON, or lacks what is needed to key it (id, topic)."""

    status = 400
    code = "invalid_payload"


class StorageUnavailable(IngestError):
    """The database could not take the write in time; the provider should retry."""

    status = 503
    code = "storage_unavailable"
