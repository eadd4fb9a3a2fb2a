"""gunicorn settings for the web process (`gunicorn -c python:webhooks.gunicorn_conf`)."""

from __future__ import annotations

import os
from typing import Any

bind = f"{os.environ.get('HOST', '0.0.0.0')}:{os.environ.get('PORT', '8000')}"  # noqa: S104
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
# Sync workers: each request is short (verify, one insert); no thread hand-offs.
worker_class = "sync"
# Far above a healthy ack (milliseconds) but below the providers' limits, so a stuck
# worker is replaced instead of holding connections.
timeout = 30
graceful_timeout = 20
keepalive = 5
# Request lines and header sizes stay at gunicorn's safe defaults; the body limit is
# MAX_BODY_BYTES, enforced by the app before it reads the body.
accesslog = None
errorlog = "-"
loglevel = os.environ.get("LOG_LEVEL", "info").lower()
wsgi_app = "webhooks.app:create_app()"
# gunicorn 25+ opens a control socket at one fixed path per user; several instances
# on a host (tests, benchmarks, two services) would fight over it.
control_socket_disable = True


def on_starting(server: Any) -> None:
    """Validate settings and migrate the embedded SQLite database once, before forking."""
    from webhooks.config import load_settings
    from webhooks.storage import migrate

    settings = load_settings()
    if settings.is_sqlite:
        migrate.ensure_current(settings.database_url, settings.database_timeout)
