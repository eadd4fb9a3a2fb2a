"""The Flask application factory."""

from __future__ import annotations

from typing import Any

from flask import Flask

from webhooks.config import Settings, load_settings
from webhooks.ingest.http import bp, register_error_handlers
from webhooks.ingest.wsgi import close_after_errors
from webhooks.logging import configure_logging
from webhooks.ops.metrics import bp as metrics_bp
from webhooks.providers import registry
from webhooks.providers.base import Receiver
from webhooks.storage import migrate
from webhooks.storage.db import create_db_engine
from webhooks.storage.wake import Waker


def create_app(settings: Settings | None = None, **overrides: Any) -> Flask:
    """Build the app from `settings` (or the environment plus `overrides`).

    Nothing happens at import time: the engine and providers are created here. The
    embedded SQLite database is migrated on start so it needs no manual step (under
    gunicorn the master does it once, before forking); PostgreSQL deployments run
    `webhooks db upgrade` and /readyz reports an outdated schema until they do.
    """
    settings = settings or load_settings(**overrides)
    configure_logging(settings.log_level, settings.log_format)
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    if settings.is_sqlite:
        migrate.ensure_current(settings.database_url, settings.database_timeout)
    # The request path runs single statements only, so autocommit is exact and cheap.
    engine = create_db_engine(
        settings.database_url, autocommit=True, poll_busy=True, **settings.engine_options()
    )
    app.extensions["webhooks.settings"] = settings
    app.extensions["webhooks.engine"] = engine
    # SQLite: tells this host's workers a delivery is stored (PostgreSQL's trigger does).
    app.extensions["webhooks.waker"] = Waker(engine)
    app.extensions["webhooks.providers"] = receivers(settings)
    app.register_blueprint(bp)
    app.register_blueprint(metrics_bp)
    app.wsgi_app = close_after_errors(app.wsgi_app)  # type: ignore[method-assign,assignment]
    register_error_handlers(app)
    return app


def receivers(settings: Settings) -> dict[str, Receiver]:
    """The enabled providers' receivers by URL name; one without secrets is left out (404)."""
    enabled = set(settings.enabled_providers())
    return {
        spec.name: spec.receiver(settings.provider(spec.name))
        for spec in registry.specs()
        if spec.name in enabled
    }
