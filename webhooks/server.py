"""Embeds gunicorn so `webhooks serve` runs the real server with the package's config."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from gunicorn.app.base import BaseApplication
from gunicorn.arbiter import Arbiter

from webhooks import gunicorn_conf


class _Arbiter(Arbiter):  # type: ignore[misc]
    """gunicorn's master, telling `on_stop` when it starts to stop."""

    on_stop: Callable[[], None] | None = None

    def stop(self, graceful: bool = True) -> None:
        if self.on_stop is not None:
            # The delivery worker stops while the web workers drain, not after them.
            self.on_stop()
        super().stop(graceful)


class _Server(BaseApplication):  # type: ignore[misc]
    """gunicorn with webhooks.gunicorn_conf, overridden by command-line options."""

    def __init__(
        self, overrides: dict[str, Any], on_stop: Callable[[], None] | None = None
    ) -> None:
        self._overrides = overrides
        self._on_stop = on_stop
        super().__init__()

    def run(self) -> None:
        arbiter = _Arbiter(self)
        arbiter.on_stop = self._on_stop
        try:
            arbiter.run()
        except RuntimeError as exc:  # as gunicorn's own run(): a config it cannot use
            print(f"\nError: {exc}\n", file=sys.stderr)
            sys.exit(1)

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


def run_gunicorn(overrides: dict[str, Any], on_stop: Callable[[], None] | None = None) -> None:
    """Run gunicorn in the foreground until it is stopped; `on_stop` is called when it
    begins to stop (a signal, or its workers failing to boot)."""
    _Server(overrides, on_stop).run()
