"""`python -m webhooks.fakecio`: the fake Customer.io in the foreground, like the dev command."""

from __future__ import annotations

import sys

from webhooks.fakecio.server import (
    DEFAULT_API_KEY,
    DEFAULT_SITE_ID,
    FakeCustomerIO,
    serve_until_signalled,
)
from webhooks.fakehttp import bind_arguments, run_in_foreground


def main(argv: list[str] | None = None) -> int:
    """Parse the options, serve until SIGTERM or SIGINT, return the exit status."""
    parser = bind_arguments("python -m webhooks.fakecio", __doc__, default_port=9009)
    parser.add_argument("--site-id", default=DEFAULT_SITE_ID, help="site id the fake accepts")
    parser.add_argument("--api-key", default=DEFAULT_API_KEY, help="API key the fake accepts")
    args = parser.parse_args(argv)
    fake = FakeCustomerIO(args.host, args.port, args.site_id, args.api_key)
    return run_in_foreground(
        lambda announce: serve_until_signalled(fake, announce), args.host, args.port
    )


if __name__ == "__main__":
    sys.exit(main())
