"""``kova placement`` commands."""

from __future__ import annotations

import sqlite3

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
    ]
    for args, env, message in cases:
        result = runner.invoke(main, ["placement", "serve", *args], env=env)
        assert result.exit_code == 2 and message in result.output, (args, result.output)
        assert "Traceback" not in result.output
