"""``kova placement`` commands."""

from __future__ import annotations

import socket
import sqlite3
import threading
import time
from urllib.parse import urlsplit

import sqlalchemy as sa
from click.testing import CliRunner

from kova.cli import main


def test_db_upgrade_and_serve_requires_auth_choice(tmp_path, monkeypatch):
    monkeypatch.setenv("KOVA_STATE", str(tmp_path))
    runner = CliRunner()
    result = runner.invoke(main, ["placement", "db", "upgrade"])
    assert result.exit_code == 0, result.output
    with sqlite3.connect(tmp_path / "placement.db") as conn:
        assert conn.execute("SELECT count(*) FROM resource_classes").fetchone()[0] >= 21
    result = runner.invoke(main, ["placement", "serve"])
    assert result.exit_code != 0 and "--no-auth" in result.output
    help_text = runner.invoke(main, ["placement", "serve", "--help"]).output
    for option in ("--database-url", "--host", "--port", "--workers", "--token-file",
                   "--no-auth"):
        assert option in help_text


def test_serve_refuses_conflicting_auth_options(tmp_path, monkeypatch):
    """Usage errors (exit 2) before anything is served: one auth mode only,
    a policy file only with an OpenStack auth strategy, a known strategy."""
    monkeypatch.setenv("KOVA_STATE", str(tmp_path))
    tokens = tmp_path / "tokens"
    tokens.write_text("admin a\n")
    runner = CliRunner()
    cases = [
        (["--no-auth", "--auth-strategy", "noauth2"], {}, "choose one of"),
        (["--token-file", str(tokens)], {"KOVA_PLACEMENT_AUTH_STRATEGY": "keystone"},
         "choose one of"),
        (["--token-file", str(tokens), "--policy-file", str(tmp_path / "p.yaml")], {},
         "--policy-file goes with --auth-strategy"),
        ([], {"KOVA_PLACEMENT_AUTH_STRATEGY": "noauth"}, "'noauth' is not one of"),
        # tokens over plain HTTP beyond loopback only when asked for
        (["--token-file", str(tokens), "--host", "0.0.0.0"], {}, "plain HTTP"),
        (["--token-file", str(tokens), "--host", "placement.example"], {}, "plain HTTP"),
        (["--auth-strategy", "keystone"], {"KOVA_PLACEMENT_HOST": "10.0.0.5"}, "plain HTTP"),
        # the agents' identity needs the operator's beside it
        (["--no-auth", "--k8s-agent", "kova-system:kova-agent"], {},
         "--k8s-agent goes with --k8s-admin or --token-file"),
    ]
    for args, env, message in cases:
        result = runner.invoke(main, ["placement", "serve", *args], env=env)
        assert result.exit_code == 2 and message in result.output, (args, result.output)
        assert "Traceback" not in result.output


def test_serve_waits_for_a_database_that_comes_up_later(pg_database):
    """Placement started beside its Postgres (the chart's bundled one) keeps
    retrying the migrations until the database answers, instead of exiting
    (and being restarted by the kubelet): here the database's port opens 2 s
    after the start, through a TCP relay to the real Postgres."""
    from kova.dev.postgres import sqlalchemy_url
    from kova.placement.cli import upgrade_when_reachable

    real = urlsplit(sqlalchemy_url(pg_database))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    relayed = real._replace(netloc=f"{real.username}:{real.password}@127.0.0.1:{port}").geturl()

    def relay() -> None:
        time.sleep(2.0)
        with socket.create_server(("127.0.0.1", port)) as srv:
            srv.settimeout(20)
            while True:
                try:
                    client, _ = srv.accept()
                except OSError:
                    return
                upstream = socket.create_connection((real.hostname, real.port or 5432))
                for a, b in ((client, upstream), (upstream, client)):
                    threading.Thread(target=_pump, args=(a, b), daemon=True).start()

    threading.Thread(target=relay, daemon=True).start()
    t0 = time.monotonic()
    upgrade_when_reachable(relayed, wait=30)
    assert time.monotonic() - t0 >= 2.0  # it did wait for the port
    engine = sa.create_engine(sqlalchemy_url(pg_database))
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM resource_classes")).scalar() >= 21
    engine.dispose()


def _pump(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def test_serve_gives_up_on_an_unreachable_database_with_a_clear_error(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here
    t0 = time.monotonic()
    result = CliRunner().invoke(main, [
        "placement", "serve", "--no-auth", "--database-wait", "1.5",
        "--database-url", f"postgresql+psycopg://kova:x@127.0.0.1:{port}/placement"])
    assert result.exit_code == 1, result.output
    assert "the database is not reachable" in result.output
    assert "waited 1.5s (--database-wait)" in result.output
    assert 1.5 <= time.monotonic() - t0 < 20


def test_worker_factory_refuses_to_run_without_authentication(tmp_path, monkeypatch, capfd):
    """The worker processes read their authentication from the environment
    ``serve`` sets: with none of it they refuse to start instead of
    accepting everyone; --no-auth (KOVA_PLACEMENT_NO_AUTH=1) is said, and
    logged as a warning."""
    import pytest

    from kova.placement import cli

    monkeypatch.setenv("KOVA_STATE", str(tmp_path))
    for name in (cli.ENV_TOKEN_FILE, cli.ENV_K8S_AUTH, cli.ENV_AUTH_STRATEGY, cli.ENV_NO_AUTH):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(cli.ENV_URL, f"sqlite:///{tmp_path}/p.db")
    runner = CliRunner()
    assert runner.invoke(main, ["placement", "db", "upgrade"]).exit_code == 0
    with pytest.raises(RuntimeError, match="no authentication configured"):
        cli._factory()
    monkeypatch.setenv(cli.ENV_NO_AUTH, "1")
    capfd.readouterr()
    app = cli._factory()  # sets up Placement's logging: to stderr
    try:
        assert "authentication is disabled" in capfd.readouterr().err
    finally:
        app.db.dispose()
