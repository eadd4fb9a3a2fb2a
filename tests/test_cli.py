"""The `webhooks` command line."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy.engine import Engine

from tests.conftest import count_rows
from tests.integration.service import run_cli, service_env
from webhooks import __version__
from webhooks.cli import main
from webhooks.storage import migrate


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> CliRunner:
    """A CLI runner in an empty directory, so no developer .env leaks in."""
    monkeypatch.chdir(tmp_path)
    return CliRunner()


def test_version(runner: CliRunner) -> None:
    result = runner.invoke(main, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"webhooks, version {__version__}"


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ([], "serve"),
        (["serve"], "--workers"),
        (["db"], "upgrade"),
        (["db", "upgrade"], "schema"),
        (["db", "current"], "revision"),
        (["dev"], "sign"),
        (["dev", "sign"], "standard input"),
        (["status"], "--max-backlog-age"),
        (["dead-letters"], "retry"),
        (["waiting"], "release"),
        (["replay"], "--since"),
        (["purge"], "--older-than"),
        (["export-person"], "PERSON"),
        (["data-requests"], "export"),
        (["trace"], "REF"),
        (["simulate"], "PROVIDER"),
        (["backfill"], "--attributes-only"),
        (["reconcile"], "--since"),
        (["register"], "--url"),
    ],
)
def test_every_command_has_help(runner: CliRunner, args: list[str], expected: str) -> None:
    result = runner.invoke(main, [*args, "--help"])
    assert result.exit_code == 0
    assert expected in result.output


def test_db_upgrade_then_current(runner: CliRunner, database_url: str) -> None:
    env = {"DATABASE_URL": database_url}
    before = runner.invoke(main, ["db", "current"], env=env)
    assert before.output.startswith("empty (outdated")
    result = runner.invoke(main, ["db", "upgrade"], env=env)
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"database at {migrate.head_revision()} (was empty)"
    assert count_rows(database_url) == 0
    again = runner.invoke(main, ["db", "upgrade"], env=env)
    assert again.exit_code == 0
    after = runner.invoke(main, ["db", "current"], env=env)
    assert after.output.startswith(f"{migrate.head_revision()} (current")


def test_invalid_configuration_exits_with_the_variable_named(runner: CliRunner) -> None:
    result = runner.invoke(main, ["db", "upgrade"], env={"STRIPE_WEBHOOK_TOLERANCE": "abc"})
    assert result.exit_code == 1
    assert "STRIPE_WEBHOOK_TOLERANCE" in result.output


def test_serve_refuses_to_start_on_bad_configuration(tmp_path: Path) -> None:
    env = service_env(f"sqlite:///{tmp_path / 'x.db'}", STRIPE_WEBHOOK_SECRET="sk_live_oops")
    result = run_cli(["serve", "--port", "1"], env, tmp_path)
    assert result.returncode == 1
    assert "STRIPE_WEBHOOK_SECRET" in result.stderr
    assert "sk_live_oops" not in result.stderr + result.stdout


def test_unreachable_database_is_a_clear_error(runner: CliRunner) -> None:
    env = {"DATABASE_URL": "postgresql+psycopg://nobody@127.0.0.1:1/none"}
    result = runner.invoke(main, ["db", "upgrade"], env=env)
    assert result.exit_code == 1
    assert "migration failed: OperationalError" in result.output


def test_dev_sign_produces_headers_the_service_accepts(runner: CliRunner) -> None:
    from webhooks.providers.shopify.signature import ShopifyReceiver
    from webhooks.providers.stripe.signature import StripeReceiver

    body = b'{"id": "evt_cli", "type": "customer.created"}'
    env = {"STRIPE_WEBHOOK_SECRET": "whsec_cli", "SHOPIFY_WEBHOOK_SECRET": "shp_cli"}
    stripe_header = runner.invoke(main, ["dev", "sign", "stripe"], input=body, env=env)
    assert stripe_header.exit_code == 0
    assert stripe_header.output.startswith("stripe-signature: t=")
    StripeReceiver(["whsec_cli"]).verify(body, _header_lines(stripe_header.output))
    shopify_header = runner.invoke(main, ["dev", "sign", "shopify"], input=body, env=env)
    ShopifyReceiver(["shp_cli"]).verify(body, _header_lines(shopify_header.output))


def _header_lines(output: str) -> dict[str, str]:
    """`Name: value` lines (what `dev sign` prints) as lower-cased headers."""
    pairs = (line.split(": ", 1) for line in output.splitlines() if line)
    return {name.lower(): value for name, value in pairs}


def test_dev_sign_without_a_secret_says_which_variable(runner: CliRunner) -> None:
    result = runner.invoke(main, ["dev", "sign", "shopify"], input=b"{}", env={})
    assert result.exit_code == 1
    assert "SHOPIFY_WEBHOOK_SECRET" in result.output


def test_serve_uses_the_packaged_gunicorn_config() -> None:
    from webhooks import gunicorn_conf
    from webhooks.server import _Server

    server = _Server({"bind": "127.0.0.1:9999", "workers": 3})
    assert server.cfg.bind == ["127.0.0.1:9999"]
    assert server.cfg.workers == 3
    assert server.cfg.timeout == gunicorn_conf.timeout
    assert server.cfg.control_socket_disable is True
    assert server.cfg.on_starting is gunicorn_conf.on_starting
    assert server.cfg.post_worker_init is gunicorn_conf.post_worker_init


def test_worker_settles_the_heap_after_start_up_before_it_runs(
    runner: CliRunner, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from webhooks.core import heap
    from webhooks.worker import Worker

    calls: list[str] = []
    monkeypatch.setattr(heap, "settle", lambda: calls.append("settle"))
    monkeypatch.setattr(Worker, "run", lambda self: calls.append("run"))
    monkeypatch.setattr("webhooks.worker.install_signal_handlers", lambda runner: None)
    env = {"DATABASE_URL": f"sqlite:///{tmp_path / 'w.db'}", "CUSTOMERIO_SITE_ID": ""}
    result = runner.invoke(main, ["worker"], env=env)
    assert result.exit_code == 0, result.output
    # The worker's engine, settings and client exist before the freeze; the loop after.
    assert calls == ["settle", "run"]


def test_worker_runs_beside_its_wal_checkpoint_thread_on_sqlite(
    runner: CliRunner, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The worker's commits never checkpoint (its engine owns its checkpoints) and
    the thread runs for exactly as long as the worker does."""
    from webhooks.storage import checkpoint
    from webhooks.worker import Worker

    calls: list[str] = []
    real_background = checkpoint.background

    @contextlib.contextmanager
    def background(engine: Engine) -> Iterator[object]:
        with engine.connect() as conn:
            pages = conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar_one()
        calls.append(f"checkpoints start, autocheckpoint={pages}")
        with real_background(engine) as checkpointer:
            yield checkpointer
        calls.append("checkpoints stop")

    monkeypatch.setattr(checkpoint, "background", background)
    monkeypatch.setattr(Worker, "run", lambda self: calls.append("run"))
    monkeypatch.setattr("webhooks.worker.install_signal_handlers", lambda runner: None)
    env = {"DATABASE_URL": f"sqlite:///{tmp_path / 'w.db'}", "CUSTOMERIO_SITE_ID": ""}
    result = runner.invoke(main, ["worker"], env=env)
    assert result.exit_code == 0, result.output
    assert calls == ["checkpoints start, autocheckpoint=0", "run", "checkpoints stop"]
