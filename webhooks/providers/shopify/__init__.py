"""Shopify: checkouts, orders, refunds, customers, consent, subscription contracts, privacy.

Everything the service knows about Shopify is declared here (SPEC) or in this package's
modules; the pure translators are mappers.shopify*.
"""

from __future__ import annotations

from mappers.shopify import HANDLERS
from mappers.shopify_fields import ShopifyConfig
from mappers.taxonomy import EventName
from mappers.taxonomy_doc import EventDoc
from webhooks.providers.base import ProviderSpec
from webhooks.providers.shopify.backfill import records
from webhooks.providers.shopify.register import register
from webhooks.providers.shopify.settings import ShopifySettings
from webhooks.providers.shopify.signature import (
    NAME,
    SIGNATURE_HEADER,
    ShopifyReceiver,
    sign,
)
from webhooks.providers.shopify.simulate import sample


def _receiver(settings: ShopifySettings) -> ShopifyReceiver:
    return ShopifyReceiver(settings.secrets())


def _mapper_config(settings: ShopifySettings, _internal_id_key: str) -> ShopifyConfig:
    return ShopifyConfig(
        order_completed_topic=settings.order_completed_topic,
        internal_id_metafield=settings.internal_id_metafield,
        internal_id_note_attribute=settings.internal_id_note_attribute,
    )


_CONTRACT = "contract id + revision id"
DOCS = {
    EventName.CHECKOUT_STARTED: EventDoc(
        "`checkouts/create`; `checkouts/update` carrying an email or phone",
        "checkout token: once per checkout, whichever of the two arrives first",
    ),
    EventName.CART_UPDATED: EventDoc(
        "`checkouts/update` of an open checkout",
        "checkout token + a hash of items, quantities, prices, totals and discount codes: "
        "an update that changes only the address repeats the previous key (so a cart that "
        "returns to earlier contents is not reported again, and the first update may repeat "
        "the contents checkout_started already carried; the journey guards filter these)",
    ),
    EventName.ORDER_COMPLETED: EventDoc(
        "`orders/create` and `orders/paid` (configurable: paid orders only)", "order id"
    ),
    EventName.ORDER_CANCELED: EventDoc("`orders/cancelled`", "order id"),
    EventName.REFUND_ISSUED: EventDoc("`refunds/create`", "refund id"),
    EventName.PAYMENT_FAILED: EventDoc(
        "`subscription_billing_attempts/failure`", "billing attempt id"
    ),
    EventName.SUBSCRIPTION_CREATED: EventDoc("`subscription_contracts/create`", "contract id"),
    EventName.SUBSCRIPTION_PAUSED: EventDoc("`subscription_contracts/pause`", _CONTRACT),
    EventName.SUBSCRIPTION_RESUMED: EventDoc("`subscription_contracts/activate`", _CONTRACT),
    EventName.SUBSCRIPTION_CANCELED: EventDoc("`subscription_contracts/cancel`", _CONTRACT),
}


def _sign(body: bytes, secret: str) -> dict[str, str]:
    return {SIGNATURE_HEADER: sign(body, secret)}


SPEC: ProviderSpec[ShopifySettings, ShopifyConfig] = ProviderSpec(
    name=NAME,
    title="Shopify",
    settings=ShopifySettings,
    receiver=_receiver,
    sign=_sign,
    handlers=HANDLERS,
    mapper_config=_mapper_config,
    person_id_format="shopify:{account}:{customer_id}",
    docs=DOCS,
    sample=sample,
    backfill=records,
    register=register,
)

__all__ = ["SPEC", "sign"]
