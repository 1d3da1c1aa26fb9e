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


def test_json_lines_keep_only_the_documented_keys():
    """What libraries attach to records stays out (kopf attaches its
    OperatorSettings, which is not even JSON-serialisable); kopf's reference
    to the object becomes kind/namespace/name/uid."""

    class Opaque:
        def __deepcopy__(self, memo):
            raise TypeError("cannot copy")

    rec = logging.LogRecord("kopf.objects", logging.INFO, "f", 1, "Handler succeeded.", (), None)
    rec.__dict__.update({"k8s_skip": False, "settings": Opaque(), "anything": 1,
                         "k8s_ref": {"apiVersion": "kova.dev/v1alpha1", "kind": "Instance",
                                     "name": "vm", "uid": "u-2", "namespace": "ns"}})
    out = json.loads(JSONFormatter("operator").format(rec))
    assert out == {"time": out["time"], "level": "info", "component": "operator",
                   "logger": "kopf.objects", "message": "Handler succeeded.",
                   "kind": "Instance", "namespace": "ns", "name": "vm", "uid": "u-2"}
    try:
        raise ValueError("boom")
    except ValueError:
        import sys

        rec = logging.LogRecord("kova.x", logging.ERROR, "f", 1, "failed", (), sys.exc_info())
    out = json.loads(JSONFormatter("agent", host="h").format(rec))
    assert set(out) == {*log.ORDER, "host", "exception"} and "ValueError: boom" in out["exception"]


def test_bound_fields_go_into_every_line_of_the_block():
    stream = io.StringIO()
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        log.setup("agent", "info", "json", stream=stream, host="h")
        with log.bound(**about({"kind": "Instance",
                                "metadata": {"namespace": "ns", "name": "vm", "uid": "u-3"}})):
            logging.getLogger("kova.agents.x").info("building")
            logging.getLogger("kova.agents.x").info("other", extra=object_ref("Instance", "ns",
                                                                               "vm2"))
        logging.getLogger("kova.agents.x").info("after")
        first, second, after = (json.loads(line) for line in stream.getvalue().splitlines())
        assert (first["kind"], first["namespace"], first["name"], first["uid"], first["host"]) \
            == ("Instance", "ns", "vm", "u-3", "h")
        assert second["name"] == "vm2"  # the call's own fields win
        assert "name" not in after and "uid" not in after
    finally:
        root.handlers[:], _ = saved
        root.setLevel(saved[1])
