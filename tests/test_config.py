"""Settings: defaults, comma-separated secrets, .env files and errors naming the variable."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from webhooks.config import (
    DEFAULT_DATABASE_URL,
    TWO_MIB,
    Settings,
    load_settings,
)
from webhooks.errors import ConfigError
from webhooks.providers import registry


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Run in an empty directory with none of the service's variables set."""
    for name in (
        "DATABASE_URL",
        "DATABASE_TIMEOUT",
        "STRIPE_WEBHOOK_SECRET",
        "STRIPE_WEBHOOK_TOLERANCE",
        "SHOPIFY_WEBHOOK_SECRET",
        "MAX_BODY_BYTES",
        "LOG_LEVEL",
        "LOG_FORMAT",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)


def test_defaults() -> None:
    settings = load_settings()
    assert settings.database_url == DEFAULT_DATABASE_URL
    assert settings.is_sqlite
    assert settings.provider("stripe").webhook_secret == []
    assert settings.provider("shopify").webhook_secret == []
    assert settings.provider("stripe").webhook_tolerance == 300  # type: ignore[attr-defined]
    assert settings.enabled_providers() == []
    assert settings.max_body_bytes == TWO_MIB
    assert (settings.log_level, settings.log_format) == ("INFO", "json")


def test_comma_separated_secrets_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STRIPE_WEBHOOK_SECRET", "whsec_live, whsec_test ,")
    monkeypatch.setenv("SHOPIFY_WEBHOOK_SECRET", "app-secret,old-secret")
    settings = load_settings()
    assert settings.provider("stripe").secrets() == ["whsec_live", "whsec_test"]
    assert settings.provider("shopify").secrets() == ["app-secret", "old-secret"]
    assert settings.enabled_providers() == ["stripe", "shopify"]
    assert "whsec_live" not in repr(settings)
    assert "whsec_live" not in repr(settings.provider("stripe"))


def test_empty_secret_disables_the_provider(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STRIPE_WEBHOOK_SECRET", "")
    assert load_settings().provider("stripe").webhook_secret == []


def test_dotenv_file_is_read(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("MAX_BODY_BYTES=65536\nlog_level=debug\n")
    settings = load_settings()
    assert settings.max_body_bytes == 65536
    assert settings.log_level == "DEBUG"


def test_environment_beats_dotenv(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("MAX_BODY_BYTES=65536\n")
    monkeypatch.setenv("MAX_BODY_BYTES", "131072")
    assert load_settings().max_body_bytes == 131072


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("STRIPE_WEBHOOK_SECRET", "sk_live_pasted_api_key"),
        ("STRIPE_WEBHOOK_TOLERANCE", "soon"),
        ("MAX_BODY_BYTES", "-1"),
        ("DATABASE_URL", "mysql://localhost/x"),
        ("LOG_FORMAT", "xml"),
        ("DATABASE_TIMEOUT", "-5"),
        ("WORKER_STAGE", "deliver"),
    ],
)
def test_invalid_values_name_the_variable_and_hide_the_value(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert name in str(caught.value)
    assert value not in str(caught.value)


def test_mapping_settings_reach_the_mapper_config(monkeypatch: pytest.MonkeyPatch) -> None:
    from webhooks.stage1.setup import mapper_configs

    monkeypatch.setenv("SHOPIFY_ORDER_COMPLETED_TOPIC", "orders/paid")
    monkeypatch.setenv("INTERNAL_ID_KEY", "app_user_id")
    monkeypatch.setenv("STRIPE_PAYMENT_INTENT_EVENTS", "true")
    configs = mapper_configs(load_settings())
    assert configs["shopify"].order_completed_topic == "orders/paid"
    assert configs["stripe"].internal_id_metadata_key == "app_user_id"
    assert configs["stripe"].payment_intent_events is True


def test_identity_settings_reach_the_mapper_and_the_state_step(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from webhooks.stage1.setup import mapper_configs, state_config
    from webhooks.stage1.state.identity import IdentityPolicy
    from webhooks.stage1.state.step import StateConfig

    for name, value in {
        "SHOPIFY_INTERNAL_ID_METAFIELD": "app.user_id",
        "SHOPIFY_INTERNAL_ID_NOTE_ATTRIBUTE": "user_id",
        "STRIPE_PERSON_ID_FORMAT": "s-{account}-{customer_id}",
        "SHOPIFY_PERSON_ID_FORMAT": "sh-{customer_id}",
        "STRIPE_CLIENT_REFERENCE_ID": "true",
        "GUEST_POLICY": "email",
        "REPORTING_CURRENCY": "eur",
        "CART_UPDATE_HOLD_SECONDS": "30",
        "MERGE_DELAY_SECONDS": "5",
    }.items():
        monkeypatch.setenv(name, value)
    settings = load_settings()
    mapper = mapper_configs(settings)["shopify"]
    assert mapper_configs(settings)["stripe"].client_reference_id is True
    assert (mapper.internal_id_metafield, mapper.internal_id_note_attribute) == (
        "app.user_id",
        "user_id",
    )
    assert state_config(settings) == StateConfig(
        identity=IdentityPolicy(
            person_id_formats={
                "stripe": "s-{account}-{customer_id}",
                "shopify": "sh-{customer_id}",
                "app": "app:{customer_id}",
            },
            own_accounts={"stripe": "platform"},
            guest_policy="email",
        ),
        reporting_currency="EUR",
        cart_update_hold_seconds=30.0,
        merge_delay_seconds=5.0,
    )


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("STRIPE_PERSON_ID_FORMAT", "stripe:{id}"),
        ("SHOPIFY_PERSON_ID_FORMAT", "cio_{customer_id}"),
        ("SHOPIFY_INTERNAL_ID_METAFIELD", "no_dot"),
        ("GUEST_POLICY", "guess"),
    ],
)
def test_bad_identity_settings_name_the_variable(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=name):
        load_settings()


def test_unknown_order_topic_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHOPIFY_ORDER_COMPLETED_TOPIC", "orders/fulfilled")
    with pytest.raises(ConfigError, match="SHOPIFY_ORDER_COMPLETED_TOPIC"):
        load_settings()


@pytest.mark.parametrize("name", ["STRIPE_WEBHOOK_SECRET", "SHOPIFY_WEBHOOK_SECRET"])
def test_placeholder_secret_from_env_example_is_refused(
    monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    placeholder = "whsec_replace_me" if name.startswith("STRIPE") else "replace_me"
    monkeypatch.setenv(name, placeholder)
    with pytest.raises(ConfigError, match=name):
        load_settings()


def test_database_timeout_stays_inside_shopifys_five_seconds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DATABASE_TIMEOUT", "10")
    with pytest.raises(ConfigError, match="DATABASE_TIMEOUT"):
        load_settings()


@pytest.mark.parametrize(
    ("name", "missing"),
    [("CUSTOMERIO_SITE_ID", "CUSTOMERIO_API_KEY"), ("CUSTOMERIO_API_KEY", "CUSTOMERIO_SITE_ID")],
)
def test_half_set_customerio_credentials_name_the_missing_one(
    monkeypatch: pytest.MonkeyPatch, name: str, missing: str
) -> None:
    # Not a silent dry run: one of the two set is a typo or a missing secret.
    monkeypatch.setenv(name, "set")
    with pytest.raises(ConfigError, match=missing):
        load_settings()


def test_customerio_region_and_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUSTOMERIO_REGION", "eu")
    assert load_settings().customerio_url == "https://track-eu.customer.io"
    assert load_settings().dry_run
    monkeypatch.setenv("CUSTOMERIO_TRACK_URL", "http://127.0.0.1:9009/")
    monkeypatch.setenv("CUSTOMERIO_SITE_ID", "site")
    monkeypatch.setenv("CUSTOMERIO_API_KEY", "key")
    settings = load_settings()
    assert settings.customerio_url == "http://127.0.0.1:9009"
    assert not settings.dry_run


ROOT = Path(__file__).resolve().parent.parent
SETTING_NAMES = {name.upper() for name in Settings.model_fields} | {
    f"{spec.env_prefix}{name.upper()}"
    for spec in registry.specs()
    for name in spec.settings.model_fields
}


def _env_example() -> dict[str, str]:
    lines = (ROOT / ".env.example").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line.strip() and not line.startswith("#"))


def test_env_example_sets_exactly_the_settings() -> None:
    assert set(_env_example()) == SETTING_NAMES


def test_readme_documents_every_setting() -> None:
    section = (ROOT / "README.md").read_text().split("## Configuration\n", 1)[1].split("\n## ")[0]
    first_cells = [line.split(" | ")[0] for line in section.splitlines() if line.startswith("| `")]
    documented = {name for cell in first_cells for name in re.findall(r"`([A-Z0-9_]+)`", cell)}
    assert SETTING_NAMES - documented == set()


def test_env_example_values_are_the_defaults(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # A copied .env.example changes nothing until it is edited.
    for name in SETTING_NAMES:
        monkeypatch.delenv(name, raising=False)
    example = _env_example()
    (tmp_path / ".env").write_text((ROOT / ".env.example").read_text())
    settings = load_settings()
    models: list[tuple[str, Any, type[BaseModel]]] = [("", settings, Settings)]
    for spec in registry.specs():
        models.append((spec.env_prefix, settings.provider(spec.name), spec.settings))
    for prefix, values, model in models:
        for name, field in model.model_fields.items():
            if example[prefix + name.upper()]:  # an empty value means unset
                default = field.get_default(call_default_factory=True)
                assert getattr(values, name) == default, prefix + name


def test_an_unknown_provider_is_a_loud_error_not_a_fallback() -> None:
    from webhooks.errors import UnknownProvider

    with pytest.raises(UnknownProvider, match=r"'paddle' \(registered: app, shopify, stripe\)"):
        load_settings().provider("paddle")


def test_an_override_that_names_no_setting_is_refused() -> None:
    # A typo in a caller's override must not be silently ignored.
    with pytest.raises(ConfigError, match="STRIPE_WEBHOOK_SECRETS: no such setting"):
        load_settings(stripe_webhook_secrets="whsec_1")


def test_provider_settings_errors_name_the_prefixed_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SHOPIFY_ORDER_COMPLETED_TOPIC", "orders/fulfilled")
    monkeypatch.setenv("STRIPE_API_MAX_RPS", "0")
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert "SHOPIFY_ORDER_COMPLETED_TOPIC" in str(caught.value)
    assert "STRIPE_API_MAX_RPS" in str(caught.value)
