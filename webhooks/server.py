"""Embeds gunicorn so `webhooks serve` runs the real server with the package's config."""

from __future__ import annotations

from typing import Any

from gunicorn.app.base import BaseApplication

from webhooks import gunicorn_conf


class _Server(BaseApplication):  # type: ignore[misc]
    """gunicorn with webhooks.gunicorn_conf, overridden by command-line options."""

    def __init__(self, overrides: dict[str, Any]) -> None:
        self._overrides = overrides
        super().__init__()

    def load_config(self) -> None:
        # Every gunicorn setting the config module defines, so the Procfile's
        # `gunicorn -c python:webhooks.gunicorn_conf` and `webhooks serve` agree.
        settings = {
            name: getattr(gunicorn_conf, name)
            for name in self.cfg.settings
            if hasattr(gunicorn_conf, name) and name != "wsgi_app"
        }
        settings.update(self._overrides)
        for key, value in settings.items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        from webhooks.app import create_app

        return create_app()


def run_gunicorn(overrides: dict[str, Any]) -> None:
    """Run gunicorn in the foreground until it is stopped."""
    _Server(overrides).run()
