"""Field readers for Shopify payloads: identity hints, person attributes, items, money."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal

from mappers.actions import Person
from mappers.base import StoredDelivery
from mappers.errors import MappingError
from mappers.money import currency_code, decimal_amount
from mappers.read import as_text, at, opt_bool, opt_int, opt_text
from mappers.taxonomy import Item, PersonAttributes

SOURCE = "shopify"

# Shopify's marketing consent states. `pending` (a double opt-in not yet confirmed) is
# neither a yes nor a no, so it maps to None and leaves the person's attribute alone;
# an unknown future state does the same rather than guessing.
CONSENT_STATES: dict[str, bool] = {
    "subscribed": True,
    "unsubscribed": False,
    "not_subscribed": False,
    "redacted": False,
    "invalid": False,
}


@dataclass(frozen=True)
class ShopifyConfig:
    """Merchant choices that change what a Shopify payload means (from SHOPIFY_* settings)."""

    # Which topic counts as the purchase. orders/create: every placed order (orders/paid
    # of the same order maps to the same fact). orders/paid: only paid orders
    # (orders/create counts only if it arrives already paid).
    order_completed_topic: Literal["orders/create", "orders/paid"] = "orders/create"
    # Where a payload carries the merchant's own customer id, if anywhere: a customer
    # metafield "namespace.key" (included in webhooks whose subscription lists its
    # namespace), or a cart note attribute. Off by default: shoppers can set note
    # attributes, so only a storefront that writes it server-side should use it.
    internal_id_metafield: str | None = None
    internal_id_note_attribute: str | None = None


def first_text(data: Any, *paths: str) -> str | None:
    """The first non-empty string (or int id) found at `paths`, in order."""
    for path in paths:
        if (value := opt_text(data, path)) is not None:
            return value
    return None


def gid_id(data: Any, path: str) -> str | None:
    """The numeric tail of an Admin GraphQL id ("gid://shopify/Customer/7" -> "7")."""
    value = opt_text(data, path)
    if value is None or not value.startswith("gid://"):
        return None
    return value.rsplit("/", 1)[-1] or None


def consent(state: Any) -> bool | None:
    """A consent `state` as subscribed (True), not subscribed (False) or unknown (None)."""
    return CONSENT_STATES.get(state.strip().lower()) if isinstance(state, str) else None


def opt_currency(data: Any, path: str) -> str | None:
    """An optional currency code; present but malformed is a MappingError."""
    value = at(data, path)
    return None if value is None else currency_code(value, path)


def id_list(data: Any, path: str) -> list[str]:
    """A list of ids as strings; [] when absent, MappingError naming a bad entry."""
    raw = at(data, path)
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise MappingError(f"{path} is not a list")
    ids = [as_text(entry) for entry in raw]
    if None in ids:
        # A redaction or export target silently dropped would be a compliance gap.
        raise MappingError(f"{path}[{ids.index(None)}] is not an id")
    return [value for value in ids if value is not None]


def _address(data: Any, *paths: str) -> dict[str, Any]:
    """The first non-empty address object among `paths` (Shopify sends [] for none)."""
    for path in paths:
        value = at(data, path)
        if isinstance(value, dict) and value:
            return value
    return {}


# -- identity hints -------------------------------------------------------------------


def person(delivery: StoredDelivery, **hints: str | None) -> Person:
    """A Person of this shop carrying only the hints given (nothing invented)."""
    return Person(source=SOURCE, account=delivery.account, **hints)


def cart_token(payload: Any) -> str | None:
    """The cart token without the `?key=...` suffix some payloads append to it."""
    # The suffix is a per-session secret, not part of the cart's identity: with it the
    # same cart would look like several (RudderStack hit this when stitching).
    value = opt_text(payload, "cart_token")
    if value is None:
        return None
    return value.split("?", 1)[0] or None


def internal_id(config: ShopifyConfig, payload: Any, customer: Any) -> str | None:
    """The merchant's own customer id, from where the merchant configured it, if at all.

    A customer metafield is written by the merchant's backend; a note attribute can be
    set by any shopper through the storefront's cart API, so it is read only when the
    merchant opted in (SHOPIFY_INTERNAL_ID_NOTE_ATTRIBUTE).
    """
    if config.internal_id_metafield and isinstance(customer, dict):
        namespace, _, key = config.internal_id_metafield.partition(".")
        for field in customer.get("metafields") or []:
            if (
                isinstance(field, dict)
                and field.get("namespace") == namespace
                and field.get("key") == key
            ):
                return as_text(field.get("value"))
    if config.internal_id_note_attribute:
        for note in at(payload, "note_attributes") or []:
            if isinstance(note, dict) and note.get("name") == (config.internal_id_note_attribute):
                return as_text(note.get("value"))
    return None


def commerce_person(
    delivery: StoredDelivery, config: ShopifyConfig, payload: Any, checkout_token: str | None
) -> Person:
    """Every identity hint of a checkout or order (resolution happens later)."""
    return person(
        delivery,
        customer_id=opt_text(payload, "customer.id"),
        internal_id=internal_id(config, payload, at(payload, "customer")),
        email=first_text(payload, "email", "contact_email", "customer.email"),
        phone=first_text(payload, "phone", "customer.phone", "sms_marketing_phone"),
        cart_token=cart_token(payload),
        checkout_token=checkout_token,
    )


# -- person attributes ----------------------------------------------------------------


def checkout_attributes(payload: Any, who: Person) -> PersonAttributes:
    """What a checkout reveals about the buyer."""
    address = _address(payload, "billing_address", "shipping_address")
    email = opt_text(payload, "email")
    sms_phone = first_text(payload, "sms_marketing_phone", "phone")
    return PersonAttributes(
        email=who.email,
        phone=who.phone,
        first_name=first_text(
            payload,
            "customer.first_name",
            "billing_address.first_name",
            "shipping_address.first_name",
        ),
        last_name=first_text(
            payload,
            "customer.last_name",
            "billing_address.last_name",
            "shipping_address.last_name",
        ),
        # Each checkbox is about the address typed into this checkout. Only a ticked box
        # is news: an unticked one is the default and must not overwrite a subscription
        # the consent topics reported (they carry withdrawals).
        email_consent=True if email and opt_bool(payload, "buyer_accepts_marketing") else None,
        sms_consent=(
            True if sms_phone and opt_bool(payload, "buyer_accepts_sms_marketing") else None
        ),
        country=opt_text(address, "country_code"),
        city=opt_text(address, "city"),
    )


def order_attributes(payload: Any, who: Person, placed: bool = False) -> PersonAttributes:
    """What an order reveals about its customer.

    `placed`: the report of the order being placed (orders/create), the one time its
    checkout's marketing box is news.
    """
    address = _address(payload, "customer.default_address", "billing_address")
    return PersonAttributes(
        email=who.email,
        phone=who.phone,
        first_name=first_text(payload, "customer.first_name", "billing_address.first_name"),
        last_name=first_text(payload, "customer.last_name", "billing_address.last_name"),
        # Orders carry the customer's consent only before API 2025-01; from then on the
        # box ticked at checkout is all an order says (an unticked one is no news). It
        # was ticked when the order was placed: orders/paid or orders/cancelled, timed
        # later, would put it over an unsubscribe that came in between.
        email_consent=_first_known(
            consent(at(payload, "customer.email_marketing_consent.state")),
            True if placed and who.email and opt_bool(payload, "buyer_accepts_marketing") else None,
        ),
        sms_consent=consent(at(payload, "customer.sms_marketing_consent.state")),
        country=opt_text(address, "country_code"),
        city=opt_text(address, "city"),
    )


def _first_known(*values: bool | None) -> bool | None:
    return next((value for value in values if value is not None), None)


def customer_attributes(customer: Any) -> PersonAttributes:
    """A Customer resource as person attributes (consent only where the payload has it)."""
    address = _address(customer, "default_address")
    return PersonAttributes(
        email=opt_text(customer, "email"),
        phone=opt_text(customer, "phone"),
        first_name=opt_text(customer, "first_name"),
        last_name=opt_text(customer, "last_name"),
        # Since 2025-01 customer webhooks omit consent (the consent topics carry it);
        # absent stays None so an older-looking payload never clears a known state.
        email_consent=consent(at(customer, "email_marketing_consent.state")),
        sms_consent=consent(at(customer, "sms_marketing_consent.state")),
        country=opt_text(address, "country_code"),
        city=opt_text(address, "city"),
        locale=opt_text(customer, "locale"),
    )


# -- money and items ------------------------------------------------------------------


@dataclass(frozen=True)
class Money:
    """How one payload's amounts are read: which currency they are in, from which side."""

    currency: str
    # Orders: prefer `<field>_set.shop_money.amount`. Checkouts carry no *_set fields.
    shop_sets: bool

    def read(self, data: Any, field: str, where: str = "") -> Decimal | None:
        """`field` as an exact Decimal in `currency`, or None when absent."""
        if self.shop_sets:
            set_path = f"{field}_set.shop_money.amount"
            if at(data, set_path) is not None:
                return decimal_amount(at(data, set_path), self.currency, where + set_path)
        value = at(data, field)
        return None if value is None else decimal_amount(value, self.currency, where + field)


def order_money(payload: Any) -> Money:
    """Orders: amounts in the shop currency (plain fields and shop_money agree)."""
    shop_code = opt_currency(payload, "total_price_set.shop_money.currency_code")
    currency = opt_currency(payload, "currency") or shop_code
    if currency is None:
        raise MappingError("currency is missing (and total_price_set.shop_money has none)")
    if shop_code is not None and shop_code != currency:
        raise MappingError("total_price_set.shop_money.currency_code disagrees with currency")
    return Money(currency=currency, shop_sets=True)


def checkout_money(payload: Any) -> Money:
    """Checkouts: amounts are in the presentment currency, which defaults to the shop's."""
    # Shopify documents checkout amounts (total_price, subtotal_price, line and shipping
    # prices) "in presentment currency", while `currency` is the shop's; with no shop
    # money in the payload, the honest label for every amount is the presentment one.
    currency = opt_currency(payload, "presentment_currency") or opt_currency(payload, "currency")
    if currency is None:
        raise MappingError("currency is missing")
    return Money(currency=currency, shop_sets=False)


def presentment(payload: Any, currency: str) -> dict[str, Any]:
    """presentment_currency/_total of an order when the buyer paid in another currency."""
    code = opt_currency(payload, "presentment_currency") or opt_currency(
        payload, "total_price_set.presentment_money.currency_code"
    )
    if code is None or code == currency:
        return {}
    path = "total_price_set.presentment_money.amount"
    value = at(payload, path)
    total = None if value is None else decimal_amount(value, code, path)
    return {"presentment_currency": code, "presentment_total": total}


def line_items(payload: Any, money: Money) -> list[Item] | None:
    """The payload's line items, or None when it has no `line_items` field."""
    raw = at(payload, "line_items")
    if raw is None:
        return None
    if not isinstance(raw, list):
        raise MappingError("line_items is not a list")
    return [_item(entry, f"line_items[{index}].", money) for index, entry in enumerate(raw)]


def _item(entry: Any, where: str, money: Money) -> Item:
    if not isinstance(entry, dict):
        raise MappingError(f"{where[:-1]} is not an object")
    quantity = opt_int(entry, "quantity")
    if quantity is None or quantity < 0:
        raise MappingError(f"{where}quantity is missing or not a count")
    return Item(
        sku=opt_text(entry, "sku"),
        product_id=opt_text(entry, "product_id"),
        variant_id=opt_text(entry, "variant_id"),
        name=first_text(entry, "title", "name"),
        quantity=quantity,
        price=money.read(entry, "price", where),
    )


def shipping(payload: Any, money: Money) -> Decimal | None:
    """Shipping charged: the order's total, else the sum of the shipping lines chosen."""
    total = money.read(payload, "total_shipping_price")
    if total is not None:
        return total
    lines = at(payload, "shipping_lines")
    prices = [
        money.read(line, "price", f"shipping_lines[{index}].")
        for index, line in enumerate(lines if isinstance(lines, list) else [])
        if isinstance(line, dict)
    ]
    present = [price for price in prices if price is not None]
    # No shipping line yet (early checkout) is unknown shipping, not free shipping.
    return sum(present, Decimal(0)) if present else None


def commerce_amounts(payload: Any, money: Money) -> dict[str, Any]:
    """subtotal, discount, shipping, tax, total and currency of a checkout or order."""
    return {
        # Before discounts, as on Stripe: Shopify's subtotal_price is after them.
        "subtotal": money.read(payload, "total_line_items_price")
        or money.read(payload, "subtotal_price"),
        "discount": money.read(payload, "total_discounts"),
        "shipping": shipping(payload, money),
        "tax": money.read(payload, "total_tax"),
        "total": money.read(payload, "total_price"),
        "currency": money.currency,
    }


def discount_codes(payload: Any) -> list[str]:
    """Discount codes applied (objects with `code`, or bare strings), upper-cased."""
    raw = at(payload, "discount_codes")
    codes = [
        opt_text(entry, "code") if isinstance(entry, dict) else as_text(entry)
        for entry in (raw if isinstance(raw, list) else [])
    ]
    # Shopify matches discount codes case-insensitively, so case is not material.
    return sorted(code.upper() for code in codes if code)


def refunded(payload: Any) -> tuple[Decimal, str] | None:
    """(amount, currency) of money actually sent back, or None when there is none."""
    raw = at(payload, "transactions")
    if raw is not None and not isinstance(raw, list):
        raise MappingError("transactions is not a list")
    # Only successful refund transactions move money: a pending or failed one has not
    # (Shopify sends no second refunds/create when a pending one settles; a limit).
    paid = [
        (f"transactions[{index}].", entry)
        for index, entry in enumerate(raw or [])
        if isinstance(entry, dict)
        and entry.get("kind") == "refund"
        and entry.get("status") == "success"
    ]
    if not paid:
        return None
    fallback = _line_items_currency(payload)
    currencies: set[str] = set()
    for where, entry in paid:
        value = entry.get("currency")
        code = fallback if value is None else currency_code(value, f"{where}currency")
        if code is None:
            raise MappingError(f"{where}currency is missing")
        currencies.add(code)
    if len(currencies) > 1:
        raise MappingError("refund transactions are in several currencies")
    currency = currencies.pop()
    total = sum(
        (decimal_amount(entry.get("amount"), currency, f"{where}amount") for where, entry in paid),
        Decimal(0),
    )
    # A refund of 0 (a restock or a note only) gives no money back.
    return (total, currency) if total > 0 else None


def _line_items_currency(payload: Any) -> str | None:
    """The shop currency of the refunded lines, for transactions that name none."""
    raw = at(payload, "refund_line_items")
    path = "subtotal_set.shop_money.currency_code"
    for index, entry in enumerate(raw if isinstance(raw, list) else []):
        value = at(entry, path)
        if value is not None:
            return currency_code(value, f"refund_line_items[{index}].{path}")
    return None
