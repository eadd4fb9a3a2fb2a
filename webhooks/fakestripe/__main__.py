"""`python -m webhooks.fakestripe`: the fake Stripe API in the foreground, like the dev command."""

from __future__ import annotations

import argparse
import sys

from webhooks.fakestripe.server import DEFAULT_API_KEY, FakeStripe, serve_until_signalled


def main(argv: list[str] | None = None) -> int:
    """Parse the options, serve until SIGTERM or SIGINT, return the exit status."""
    parser = argparse.ArgumentParser(prog="python -m webhooks.fakestripe", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind")
    parser.add_argument("--port", type=int, default=9010, help="port to bind (0: any free port)")
    parser.add_argument("--api-key", default=DEFAULT_API_KEY, help="API key the fake accepts")
    args = parser.parse_args(argv)
    fake = FakeStripe(args.host, args.port, args.api_key)
    try:
        # flush: a parent reading our stdout through a pipe must see the line at once.
        serve_until_signalled(fake, lambda line: print(line, flush=True))
    except OSError as exc:
        print(f"cannot listen on {args.host}:{args.port}: {exc.strerror}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
