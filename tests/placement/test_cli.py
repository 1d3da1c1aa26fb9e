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
