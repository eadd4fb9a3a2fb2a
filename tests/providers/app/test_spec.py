"""The app provider's settings: whose checkouts its cart events name."""

from __future__ import annotations

import pytest

from tests.mappers.golden import configs
from webhooks.errors import ConfigError, UnknownProvider


def test_by_default_cart_ids_are_stripe_checkout_sessions_of_the_platform() -> None:
    config = configs()["app"]
    assert (config.checkout_provider, config.checkout_account) == ("stripe", "platform")


def test_a_shopify_merchant_names_the_shop() -> None:
    config = configs(app_checkout_provider="shopify", app_checkout_account="a.myshopify.com")
    assert (config["app"].checkout_provider, config["app"].checkout_account) == (
        "shopify",
        "a.myshopify.com",
    )


def test_a_provider_without_one_own_account_needs_the_account_named() -> None:
    with pytest.raises(ConfigError, match="APP_CHECKOUT_ACCOUNT"):
        configs(app_checkout_provider="shopify")


def test_a_stripe_connected_account_is_refused_rather_than_split_across_two_people() -> None:
    with pytest.raises(ConfigError, match="another merchant's Stripe account"):
        configs(app_checkout_account="acct_1Connected")


def test_an_unknown_checkout_provider_is_an_error_not_a_fallback() -> None:
    with pytest.raises(UnknownProvider, match="paddle"):
        configs(app_checkout_provider="paddle")
