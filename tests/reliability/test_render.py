"""The reliability page renderer and the record format."""

from __future__ import annotations

import json

from tests.reliability import record as rec
from tests.reliability.render import main, render


def test_record_then_render(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("KOVA_RELIABILITY_DIR", str(tmp_path))
    path = rec.record("Racing schedulers", "2 operators | 5 Instances", 1, lost=0, duplicated=0,
                      overcommitted=None, result="all scheduled once",
                      figures={"seconds": 1.5}, test_id="tests/x.py::test_y")
    data = json.loads(path.read_text())
    assert data["fault"] == "Racing schedulers" and data["overcommitted"] is None
    text = render([data])
    row = [line for line in text.splitlines() if line.startswith("| Racing")][0]
    assert "2 operators \\| 5 Instances" in row and "| n/a |" in row and "seconds: 1.5" in row
    assert main(["render", str(tmp_path)]) == 0
    assert "tests/x.py::test_y" in capsys.readouterr().out


def test_render_refuses_empty_dir(tmp_path, capsys):
    assert main(["render", str(tmp_path)]) == 1
    assert "no records" in capsys.readouterr().err
