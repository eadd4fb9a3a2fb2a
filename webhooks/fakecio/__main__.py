"""`python -m webhooks.fakecio`: the fake Customer.io in the foreground, like the dev command."""

from __future__ import annotations

import argparse
import sys

from webhooks.fakecio.server import (
    DEFAULT_API_KEY,
    DEFAULT_SITE_ID,
    FakeCustomerIO,
    serve_until_signalled,
)


def main(argv: list[str] | None = None) -> int:
    """Parse the options, serve until SIGTERM or SIGINT, return the exit status."""
    parser = argparse.ArgumentParser(prog="python -m webhooks.fakecio", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind")
    parser.add_argument("--port", type=int, default=9009, help="port to bind (0: any free port)")
    parser.add_argument("--site-id", default=DEFAULT_SITE_ID, help="site id the fake accepts")
    parser.add_argument("--api-key", default=DEFAULT_API_KEY, help="API key the fake accepts")
    args = parser.parse_args(argv)
    fake = FakeCustomerIO(args.host, args.port, args.site_id, args.api_key)
    try:
        # flush: a parent reading our stdout through a pipe must see the line at once.
        serve_until_signalled(fake, lambda line: print(line, flush=True))
    except OSError as exc:
        print(f"cannot listen on {args.host}:{args.port}: {exc.strerror}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
