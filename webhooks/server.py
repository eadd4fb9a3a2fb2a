"""Embeds gunicorn so `webhooks serve` runs the real server with the package's config."""

from __future__ import annotations

from typing import Any

from gunicorn.app.base import BaseApplication

from webhooks import gunicorn_conf

_CONFIG_NAMES = (
    "bind",
    "workers",
    "worker_class",
    "timeout",
    "graceful_timeout",
    "keepalive",
    "accesslog",
    "errorlog",
    "loglevel",
    "on_starting",
)


class _Server(BaseApplication):  # type: ignore[misc]
    """gunicorn with webhooks.gunicorn_conf, overridden by command-line options."""

    def __init__(self, overrides: dict[str, Any]) -> None:
        self._overrides = overrides
        super().__init__()

    def load_config(self) -> None:
        settings = {name: getattr(gunicorn_conf, name) for name in _CONFIG_NAMES}
        settings.update(self._overrides)
        for key, value in settings.items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        from webhooks.app import create_app

        return create_app()


def run_gunicorn(overrides: dict[str, Any]) -> None:
    """Run gunicorn in the foreground until it is stopped."""
    _Server(overrides).run()
