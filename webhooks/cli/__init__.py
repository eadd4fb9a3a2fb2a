"""The `webhooks` command: serve, db upgrade and friends."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile

import click

from webhooks import __version__
from webhooks.config import Settings, load_settings
from webhooks.errors import ConfigError

WORKER_NICENESS = 10


def _settings() -> Settings:
    try:
        return load_settings()
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="webhooks")
def main() -> None:
    """Verified, store-then-ack Stripe and Shopify webhook receiver."""


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to bind.")
@click.option("--port", default=8000, show_default=True, envvar="PORT", help="Port to bind.")
@click.option(
    "--workers",
    default=2,
    show_default=True,
    envvar="WEB_CONCURRENCY",
    help="gunicorn worker processes.",
)
def serve(host: str, port: int, workers: int) -> None:
    """Run the service under gunicorn (the embedded SQLite database is migrated first)."""
    from webhooks.server import run_gunicorn

    _settings()  # fail fast with a message naming the variable, before any fork
    # One metrics directory for gunicorn's workers and the delivery worker, made
    # before any of them imports prometheus_client (webhooks.core.metrics).
    own_metrics_dir = not os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if own_metrics_dir:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="webhooks-metrics-")
    # The embedded default is a complete service: one delivery worker beside gunicorn,
    # restarted by a supervisor process when it dies (webhooks.supervisor). Both stop
    # by themselves if this process disappears (WEBHOOKS_PARENT_PID).
    env = {**os.environ, "WEBHOOKS_PARENT_PID": str(os.getpid())}
    supervisor = subprocess.Popen([sys.executable, "-m", "webhooks", "supervise"], env=env)
    try:
        run_gunicorn({"bind": f"{host}:{port}", "workers": workers}, on_stop=supervisor.terminate)
    finally:
        supervisor.terminate()
        try:
            supervisor.wait(timeout=40)
        except subprocess.TimeoutExpired:
            supervisor.kill()
        if own_metrics_dir:
            shutil.rmtree(os.environ["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True)


@main.command(hidden=True)
def supervise() -> None:
    """Run `webhooks worker` and restart it when it dies (started by `serve`)."""
    from webhooks.logging import configure_logging
    from webhooks.supervisor import Supervisor, install_signal_handlers

    settings = _settings()
    configure_logging(settings.log_level, settings.log_format)
    parent = int(os.environ.get("WEBHOOKS_PARENT_PID", "0"))
    supervisor = Supervisor(dict(os.environ), parent_pid=parent)
    install_signal_handlers(supervisor)
    supervisor.run()


@main.command()
def worker() -> None:
    """Map stored webhooks and deliver them to Customer.io until SIGTERM."""
    from webhooks.core import heap
    from webhooks.logging import configure_logging
    from webhooks.storage import checkpoint, migrate
    from webhooks.storage.db import create_db_engine
    from webhooks.worker import Worker, customerio_client, install_signal_handlers

    settings = _settings()
    configure_logging(settings.log_level, settings.log_format)
    if os.environ.get("WEBHOOKS_PARENT_PID"):
        # Beside gunicorn on one host, acknowledging webhooks comes first: the worker
        # takes the CPU that is left (its backlog waits; a provider's retry would not).
        os.nice(WORKER_NICENESS)
    if settings.is_sqlite:
        migrate.ensure_current(settings.database_url, settings.database_timeout)
    # SQLite: the WAL is checkpointed by a thread of the worker, not in its commits.
    options = settings.engine_options()
    engine = create_db_engine(settings.database_url, **options, own_checkpoints=True)
    cio = customerio_client(settings)
    runner = Worker(engine, settings, cio)
    install_signal_handlers(runner)
    heap.settle()  # after start-up: see webhooks.core.heap
    try:
        with checkpoint.background(engine):
            runner.run()
    finally:
        if cio is not None:
            cio.close()
        engine.dispose()


@main.group()
def db() -> None:
    """Database schema commands."""


@db.command()
def upgrade() -> None:
    """Create or migrate the schema to the version this code needs."""
    from webhooks.storage import migrate
    from webhooks.storage.db import create_db_engine

    settings = _settings()
    engine = create_db_engine(settings.database_url, **settings.engine_options())
    try:
        before = migrate.current_revision(engine)
        migrate.upgrade(engine)
        after = migrate.current_revision(engine)
    except Exception as exc:
        raise click.ClickException(f"migration failed: {type(exc).__name__}: {exc}") from None
    finally:
        engine.dispose()
    click.echo(f"database at {after} (was {before or 'empty'})")


@db.command()
def current() -> None:
    """Print the schema revision of the database and whether it is current."""
    from webhooks.storage import migrate
    from webhooks.storage.db import create_db_engine

    settings = _settings()
    engine = create_db_engine(settings.database_url, **settings.engine_options())
    try:
        revision = migrate.current_revision(engine)
    except Exception as exc:
        raise click.ClickException(f"cannot read the schema: {type(exc).__name__}") from None
    finally:
        engine.dispose()
    state = "current" if revision == migrate.head_revision() else "outdated"
    click.echo(f"{revision or 'empty'} ({state}; code expects {migrate.head_revision()})")


@main.command()
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["markdown", "json-schema"]),
    default="markdown",
    show_default=True,
    help="Markdown reference (docs/taxonomy.md) or JSON Schema (docs/taxonomy.schema.json).",
)
def taxonomy(fmt: str) -> None:
    """Print the canonical event taxonomy, generated from the code."""
    from mappers.taxonomy_doc import ProviderDocs, render_json_schema, render_markdown
    from webhooks.providers import registry

    specs = registry.specs()
    if fmt == "markdown":
        docs = [ProviderDocs(spec.name, spec.title, spec.docs) for spec in specs]
        click.echo(render_markdown(docs), nl=False)
    else:
        click.echo(render_json_schema([spec.name for spec in specs]), nl=False)


@main.group()
def dev() -> None:
    """Tools for local development and manual testing."""


@dev.command()
@click.argument("provider")
@click.option("--secret", help="Signing secret (default: the first one configured).")
def sign(provider: str, secret: str | None) -> None:
    """Print the headers that sign the body read from standard input, as PROVIDER does.

    PROVIDER is a registered provider's name (`stripe`, `shopify`, `app`). One
    `Name: value` line per header, as `curl -H @FILE` reads them.
    """
    from webhooks.errors import UnknownProvider
    from webhooks.providers import registry

    try:
        spec = registry.get(provider)
    except UnknownProvider as exc:
        raise click.BadParameter(str(exc), param_hint="PROVIDER") from None
    if secret is None:
        configured = _settings().provider(spec.name).secrets()
        if not configured:
            raise click.ClickException(f"no {spec.env_prefix}WEBHOOK_SECRET configured")
        secret = configured[0]
    body = sys.stdin.buffer.read()
    for name, value in spec.sign(body, secret).items():
        click.echo(f"{name}: {value}")


@dev.command("fake-customerio")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to bind.")
@click.option("--port", default=9009, show_default=True, help="Port to bind (0: any free port).")
@click.option("--site-id", default="fake-site", show_default=True, help="Site id it accepts.")
@click.option("--api-key", default="fake-key", show_default=True, help="API key it accepts.")
def fake_customerio(host: str, port: int, site_id: str, api_key: str) -> None:
    """Run a fake Customer.io Track API until SIGTERM or Ctrl-C (control API under /_fake/)."""
    from webhooks.fakes.customerio.server import FakeCustomerIO, serve_until_signalled

    try:
        serve_until_signalled(FakeCustomerIO(host, port, site_id, api_key), click.echo)
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {host}:{port}: {exc.strerror}") from None


@dev.command("fake-stripe")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to bind.")
@click.option("--port", default=9010, show_default=True, help="Port to bind (0: any free port).")
@click.option("--api-key", default="sk_test_fake", show_default=True, help="API key it accepts.")
def fake_stripe(host: str, port: int, api_key: str) -> None:
    """Run a fake Stripe API (line items, customers, events, webhook endpoints) until
    SIGTERM or Ctrl-C.

    Point the worker at it with STRIPE_API_BASE=http://HOST:PORT and the same
    STRIPE_API_KEY; load objects and faults through its control API under /_fake/.
    """
    from webhooks.fakes.stripe.server import FakeStripe, serve_until_signalled

    try:
        serve_until_signalled(FakeStripe(host, port, api_key), click.echo)
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {host}:{port}: {exc.strerror}") from None


def _register_operator_commands() -> None:
    from webhooks.cli.ops import (
        backfill,
        data_requests,
        dead_letters,
        export_person,
        purge,
        reconcile,
        register,
        replay,
        simulate,
        status,
        trace,
        waiting,
    )

    main.add_command(status)
    main.add_command(dead_letters)
    main.add_command(waiting)
    main.add_command(purge)
    main.add_command(export_person)
    main.add_command(data_requests)
    main.add_command(replay)
    main.add_command(trace)
    main.add_command(simulate)
    main.add_command(backfill)
    main.add_command(reconcile)
    main.add_command(register)


_register_operator_commands()
