"""gunicorn settings for the web process (`gunicorn -c python:webhooks.gunicorn_conf`)."""

from __future__ import annotations

import os
import tempfile
from typing import Any

METRICS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"
bind = f"{os.environ.get('HOST', '0.0.0.0')}:{os.environ.get('PORT', '8000')}"  # noqa: S104
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
# Threaded workers. A sync worker is held by one connection for as long as its client
# takes to send the body, so two clients trickling bodies stopped the service. A
# gthread worker waits for a new connection's first bytes in its event loop, not a
# thread, and the app's BODY_TIMEOUT_SECONDS bounds how long a body may occupy one of
# WEB_THREADS threads; fifty slow clients leave threads for real deliveries. A
# worker accepts more connections than it has threads, and with 32 threads fifty
# slow clients arriving together could all land on one worker and fill it; 64 cover
# that. Threads start on demand, and the work per request is short (verify, one
# insert; SQLite writers take turns, webhooks/storage/writer.py).
worker_class = "gthread"
threads = int(os.environ.get("WEB_THREADS", "64"))
# gthread's master heartbeat comes from the event loop, so this only replaces a
# worker whose loop is stuck; a request is bounded by BODY_TIMEOUT_SECONDS and
# DATABASE_TIMEOUT well before it.
timeout = 30
graceful_timeout = 20
keepalive = 5
# Limits gunicorn enforces before the app runs, so its answers are its own plain pages
# (listed in the README): a request line over 8 KB (414), more than 100 headers or
# one over 8 KB (431), a malformed Content-Length or Content-Length with chunked (400).
# Webhook requests use a short path and a dozen headers of a few hundred bytes. The
# body limit is MAX_BODY_BYTES, enforced by the app before it reads the body.
limit_request_line = 8190
limit_request_fields = 100
limit_request_field_size = 8190
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

    # Every process counts into files here and /metrics sums them. It must be in the
    # environment before any process imports prometheus_client: the workers do after
    # this fork. `webhooks serve` sets it earlier, for its delivery worker too.
    if not os.environ.get(METRICS_DIR_ENV):
        os.environ[METRICS_DIR_ENV] = tempfile.mkdtemp(prefix="webhooks-metrics-")

    settings = load_settings()
    if settings.is_sqlite:
        migrate.ensure_current(settings.database_url, settings.database_timeout)


def post_worker_init(worker: Any) -> None:
    """The web worker has built its app: settle the garbage collector (webhooks.core.heap)."""
    from webhooks.core import heap

    heap.settle()
