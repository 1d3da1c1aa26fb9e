"""kova.log: the one log format of every component."""

from __future__ import annotations

import io
import json
import logging

from kova import log
from kova.log import JSONFormatter, about, object_ref


def test_json_log_lines_carry_the_fixed_keys_and_context():
    rec = logging.LogRecord("kova.operator", logging.WARNING, "f", 1, "moved %s", ("vm",), None)
    rec.__dict__.update(about({"kind": "Instance",
                               "metadata": {"namespace": "ns", "name": "vm", "uid": "u-1"}}))
    out = json.loads(JSONFormatter("operator", host="node-1").format(rec))
    assert list(out)[:5] == ["time", "level", "component", "logger", "message"]
    assert out["time"].endswith("Z") and out["level"] == "warning"
    assert (out["component"], out["message"], out["host"]) == ("operator", "moved vm", "node-1")
    assert (out["kind"], out["namespace"], out["name"], out["uid"]) == ("Instance", "ns", "vm",
                                                                       "u-1")
    assert object_ref("Host", None, "h") == {"kind": "Host", "object_name": "h"}


def test_setup_picks_text_on_a_terminal_and_json_otherwise():
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        for stream, is_json in ((io.StringIO(), True), (Tty(), False)):
            log.setup("agent", "info", "auto", stream=stream)
            logging.getLogger("kova.test").info("hello %s", "there")
            line = stream.getvalue().strip()
            assert "hello there" in line
            assert (line.startswith("{") and json.loads(line)["component"] == "agent") is is_json
    finally:
        root.handlers[:], _ = saved[0], root.setLevel(saved[1])
