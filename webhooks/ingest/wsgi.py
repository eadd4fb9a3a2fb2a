"""Connections after an error answer are closed, not kept alive.

An error can come before the body was read (413 over MAX_BODY_BYTES, 408, a provider
without a secret), and gunicorn's threaded worker drains at most 64 KB of an unread
body before giving up on a connection it has already announced as kept alive: the
client's next request on it then finds the connection gone ("server disconnected
without a response"). So an error answer to a request with a body tells gunicorn to
close (it then sends `Connection: close` itself). Providers open a new connection for
their retry anyway; successful answers keep their connections.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

Wsgi = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def close_after_errors(app: Wsgi) -> Wsgi:
    """Wrap a WSGI app so error answers to requests with a body close the connection."""

    def wrapped(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            if status[:1] in ("4", "5") and _has_body(environ):
                # gunicorn passes a bound method of its response object; other servers
                # (the test client) have nothing to close.
                close = getattr(getattr(start_response, "__self__", None), "force_close", None)
                if callable(close):
                    close()
            return start_response(status, headers, exc_info)

        return app(environ, start)

    return wrapped


def _has_body(environ: dict[str, Any]) -> bool:
    length = environ.get("CONTENT_LENGTH") or "0"
    chunked = "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower()
    return chunked or (length.isdigit() and int(length) > 0)
