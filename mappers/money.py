"""Money: exact Decimal amounts in major units, from Stripe minor units or Shopify strings."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

from mappers.errors import MappingError

# Stripe sends integers in the currency's minor unit (https://docs.stripe.com/currencies).
STRIPE_ZERO_DECIMAL = frozenset(
    {
        "BIF",
        "CLP",
        "DJF",
        "GNF",
        "JPY",
        "KMF",
        "KRW",
        "MGA",
        "PYG",
        "RWF",
        "VND",
        "VUV",
        "XAF",
        "XOF",
        "XPF",
    }
)
STRIPE_THREE_DECIMAL = frozenset({"BHD", "JOD", "KWD", "OMR", "TND"})
# Stripe's special cases: ISK and UGX are sent as two-decimal amounts ending in 00
# (500 = 5 ISK) but have no minor unit of their own, so the result has 0 decimals.
STRIPE_TWO_DECIMAL_WIRE_ZERO_DECIMAL = frozenset({"ISK", "UGX"})
# Far above any real amount; with at most 3 decimals the JSON number stays exact.
MAX_AMOUNT = Decimal(10) ** 12


def currency_code(value: Any, where: str) -> str:
    """Upper-case ISO 4217 code, or a MappingError naming the field."""
    if not isinstance(value, str) or len(value.strip()) != 3 or not value.strip().isalpha():
        raise MappingError(f"{where} is not a three-letter currency code")
    return value.strip().upper()


def decimals(currency: str) -> int:
    """The number of decimals amounts in `currency` are reported with."""
    if currency in STRIPE_ZERO_DECIMAL or currency in STRIPE_TWO_DECIMAL_WIRE_ZERO_DECIMAL:
        return 0
    if currency in STRIPE_THREE_DECIMAL:
        return 3
    return 2


def stripe_amount(minor: Any, currency: str, where: str) -> Decimal:
    """A Stripe integer amount in minor units as an exact Decimal in major units."""
    if isinstance(minor, bool) or not isinstance(minor, int):
        raise MappingError(f"{where} is not an integer amount")
    if abs(minor) >= MAX_AMOUNT * 1000:
        raise MappingError(f"{where} is out of range")
    if currency in STRIPE_ZERO_DECIMAL:
        divisor = 1
    elif currency in STRIPE_THREE_DECIMAL:
        divisor = 1000
    else:
        divisor = 100
    return exact(Decimal(minor) / divisor, currency)


def exact(amount: Decimal, currency: str) -> Decimal:
    """`amount` with `currency`'s own decimals, never rounded."""
    # Show the currency's own decimals, but never round: an amount that does not fit
    # (a fractional ISK amount, a 3-decimal Shopify currency) keeps all its digits.
    shown = amount.quantize(Decimal(1).scaleb(-decimals(currency)))
    return shown if shown == amount else amount


def json_number(value: Decimal) -> int | float:
    """An exact amount as a JSON number: an int when whole, else the shortest float."""
    # Amounts are exact Decimals in the models; only the JSON boundary turns them into
    # numbers. float(Decimal) gives the shortest repr that round-trips, so "42.50" is
    # written 42.5 and no arithmetic ever happens in binary floating point.
    return int(value) if value == value.to_integral_value() else float(value)


def decimal_amount(value: Any, currency: str, where: str) -> Decimal:
    """A Shopify decimal string ("42.50") as an exact Decimal; never through float."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise MappingError(f"{where} is not a decimal amount")
    try:
        amount = Decimal(str(value).strip())
    except InvalidOperation:
        raise MappingError(f"{where} is not a decimal amount") from None
    if not amount.is_finite() or abs(amount) >= MAX_AMOUNT:
        raise MappingError(f"{where} is out of range")
    return exact(amount, currency)
