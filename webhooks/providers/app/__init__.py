"""The app endpoint: first-party events from the merchant's own backend.

Signed with Standard Webhooks, validated against the taxonomy before they are stored,
and keyed by the sender's event id. It reports what no provider webhook says: the
checkout_started of a Stripe Checkout Session, product views, skipped subscription
cycles. Everything the service knows about it is declared here (SPEC) or in this
package's modules; the pure translators are mappers.app.
"""

from __future__ import annotations

from mappers.app import HANDLERS, AppConfig
from mappers.taxonomy import EventName
from mappers.taxonomy_doc import EventDoc
from webhooks.errors import ConfigError
from webhooks.providers.app.events import NAME
from webhooks.providers.app.settings import AppSettings
from webhooks.providers.app.signature import AppReceiver, sign
from webhooks.providers.app.simulate import sample
from webhooks.providers.base import ProviderSpec


def _receiver(settings: AppSettings) -> AppReceiver:
    return AppReceiver(settings.secrets(), tolerance=settings.webhook_tolerance)


def _mapper_config(settings: AppSettings, internal_id_key: str) -> AppConfig:
    # The checkout's provider is looked up when the config is built, not at import:
    # the registry is still loading this package then.
    from webhooks.providers import registry

    provider = registry.get(settings.checkout_provider)
    account = settings.checkout_account or provider.own_account
    if account is None:
        raise ConfigError(
            f"APP_CHECKOUT_ACCOUNT: set the {provider.title} account whose checkouts the "
            "backend reports (it has no single own account)"
        )
    if provider.own_account is not None and account != provider.own_account:
        # Another account of such a provider is another merchant (Stripe Connect),
        # whose people are kept apart from the backend's: its order and the backend's
        # checkout would land on two profiles. Not supported rather than split.
        raise ConfigError(
            f"APP_CHECKOUT_ACCOUNT: {account!r} is another merchant's {provider.title} "
            f"account; the app endpoint reports checkouts of {provider.own_account!r} only"
        )
    return AppConfig(checkout_provider=provider.name, checkout_account=account)


_CART = "cart_id at APP_CHECKOUT_PROVIDER (a Stripe Checkout Session id)"
DOCS = {
    EventName.CHECKOUT_STARTED: EventDoc(
        "`checkout_started` from your backend when it creates the checkout (a Stripe "
        "Checkout Session)",
        _CART,
    ),
    EventName.CART_UPDATED: EventDoc("`cart_updated` from your backend", f"{_CART} + content"),
    EventName.PRODUCT_VIEWED: EventDoc("`product_viewed` from your backend", "event id"),
    EventName.SUBSCRIPTION_SKIPPED: EventDoc(
        "`subscription_skipped` from your backend", "subscription id + skipped period"
    ),
}

SPEC: ProviderSpec[AppSettings, AppConfig] = ProviderSpec(
    name=NAME,
    title="App",
    settings=AppSettings,
    receiver=_receiver,
    sign=sign,
    handlers=HANDLERS,
    mapper_config=_mapper_config,
    # Unused: the backend names people by the merchant's own id (customer_id).
    person_id_format="app:{customer_id}",
    docs=DOCS,
    sample=sample,
)

__all__ = ["SPEC", "sign"]
