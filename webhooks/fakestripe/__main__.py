"""`python -m webhooks.fakestripe`: the fake Stripe API in the foreground, like the dev command."""

from __future__ import annotations

import sys

from webhooks.fakehttp import bind_arguments, run_in_foreground
from webhooks.fakestripe.server import DEFAULT_API_KEY, FakeStripe, serve_until_signalled


def main(argv: list[str] | None = None) -> int:
    """Parse the options, serve until SIGTERM or SIGINT, return the exit status."""
    parser = bind_arguments("python -m webhooks.fakestripe", __doc__, default_port=9010)
    parser.add_argument("--api-key", default=DEFAULT_API_KEY, help="API key the fake accepts")
    args = parser.parse_args(argv)
    fake = FakeStripe(args.host, args.port, args.api_key)
    return run_in_foreground(
        lambda announce: serve_until_signalled(fake, announce), args.host, args.port
    )


if __name__ == "__main__":
    sys.exit(main())
