"""What mappers return: identify and track actions, and privacy requests."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SerializeAsAny, model_validator

from mappers.taxonomy import EVENT_MODELS, EventName, EventProperties, PersonAttributes, Source


class _Action(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Person(_Action):
    """The identity hints a payload gives; resolving them to one person comes later.

    Keep every hint: a later stage links them (a Stripe customer beside an internal id,
    a checkout token beside an email) so events carrying only one still find the person.
    """

    source: Source
    account: str = Field(description="Stripe account or Shopify shop domain.")
    customer_id: str | None = Field(None, description="Provider customer id.")
    internal_id: str | None = Field(None, description="The merchant's own id, from metadata.")
    client_reference_id: str | None = Field(None, description="Stripe client_reference_id.")
    email: str | None = None
    phone: str | None = None
    cart_token: str | None = Field(None, description="Shopify cart token.")
    checkout_token: str | None = Field(
        None, description="Shopify checkout token or Stripe Checkout Session id."
    )
    order_id: str | None = Field(
        None,
        description="The order (Stripe PaymentIntent) an event refers to, when it "
        "names no customer (refunds).",
    )
    subscription_id: str | None = Field(
        None, description="The subscription or contract an event refers to."
    )
    anonymous_id: str | None = Field(
        None,
        description="A visitor id the sender chose before knowing the person (the app "
        "endpoint); its events join the person who later shows it beside their id.",
    )
    # A backend reports the checkout of a payment provider (a Stripe Checkout Session):
    # its token is that provider's, so the order that completes it is the same checkout.
    checkout_provider: str | None = Field(
        None, description="The provider `checkout_token` belongs to, when not `source`."
    )
    checkout_account: str | None = Field(None, description="That provider's account.")

    @model_validator(mode="after")
    def _checkout_scope_whole(self) -> Person:
        if (self.checkout_provider is None) != (self.checkout_account is None):
            raise ValueError("checkout_provider and checkout_account come together")
        return self

    def checkout_origin(self) -> tuple[str, str]:
        """The (provider, account) whose checkout `checkout_token` names."""
        if self.checkout_provider is not None and self.checkout_account is not None:
            return self.checkout_provider, self.checkout_account
        return self.source, self.account

    def is_empty(self) -> bool:
        """True when nothing identifies anyone."""
        scope = {"source", "account", "checkout_provider", "checkout_account"}
        hints = self.model_dump(exclude=scope, exclude_none=True)
        return not hints


class Identify(_Action):
    """Set person attributes as of `timestamp` (the provider's event time)."""

    kind: Literal["identify"] = "identify"
    person: Person
    attributes: PersonAttributes
    timestamp: int = Field(ge=0)


class Track(_Action):
    """One canonical event; `semantic_key` names the business fact it reports."""

    kind: Literal["track"] = "track"
    person: Person
    event: EventName
    properties: SerializeAsAny[EventProperties]
    timestamp: int = Field(ge=0, description="Provider's event time, Unix seconds.")
    semantic_key: str = Field(min_length=1, max_length=512)

    @model_validator(mode="after")
    def _properties_match_event(self) -> Track:
        expected = EVENT_MODELS[self.event]
        if type(self.properties) is not expected:
            raise ValueError(f"{self.event} needs {expected.__name__} properties")
        if not self.semantic_key.startswith(f"{self.event.value}:"):
            raise ValueError("a semantic key starts with its event name")
        return self

    def payload(self) -> dict[str, Any]:
        """The properties as JSON-ready data (amounts as numbers, no nulls)."""
        return self.properties.model_dump(mode="json", exclude_none=True)


class SubscriptionState(_Action):
    """A subscription's status changed without a taxonomy event (Stripe: a trial
    converting to active, a payment falling past_due); updates person state only."""

    kind: Literal["subscription_state"] = "subscription_state"
    person: Person
    subscription_id: str = Field(min_length=1)
    status: str = Field(min_length=1, description="Provider status after the change.")
    timestamp: int = Field(ge=0)


class OrderPayment(_Action):
    """A payment of an order reported under another id: refunds naming the payment are
    the order's. Stripe from API 2025-03-31: an invoice names no PaymentIntent, and
    invoice_payment.paid says which one paid it. Updates person state only."""

    kind: Literal["order_payment"] = "order_payment"
    person: Person = Field(description="Names the order (`order_id`) the payment paid.")
    payment_id: str = Field(min_length=1, description="The payment (Stripe PaymentIntent).")
    timestamp: int = Field(ge=0)

    @model_validator(mode="after")
    def _names_the_order(self) -> OrderPayment:
        if not self.person.order_id:
            raise ValueError("an order payment names its order in person.order_id")
        return self


class RedactPerson(_Action):
    """Shopify customers/redact: erase this person's data (executed by a later stage)."""

    kind: Literal["redact_person"] = "redact_person"
    person: Person
    order_ids: list[str] = Field(default_factory=list)
    timestamp: int = Field(ge=0)


class RedactShop(_Action):
    """Shopify shop/redact: erase everything held for this shop."""

    kind: Literal["redact_shop"] = "redact_shop"
    account: str
    timestamp: int = Field(ge=0)


class ExportPersonData(_Action):
    """Shopify customers/data_request: the merchant must be sent this person's data."""

    kind: Literal["export_person_data"] = "export_person_data"
    person: Person
    request_id: str | None = None
    order_ids: list[str] = Field(default_factory=list)
    timestamp: int = Field(ge=0)


Action = (
    Identify
    | Track
    | SubscriptionState
    | OrderPayment
    | RedactPerson
    | RedactShop
    | ExportPersonData
)
