"""Every Kova component logs in the one documented format (docs/development.md,
"Logs"; ``kova.log``): run as their commands run them in a pod -- stderr not
a terminal -- Placement (two workers), the operator, the compute agent and the
API component write only JSON lines, each starting with ``time`` (RFC 3339,
UTC, milliseconds), ``level``, ``component``, ``logger``, ``message``, with
no keys beyond the documented ones, and the lines about an Instance name it
by ``kind``, ``namespace``, ``name`` and ``uid``."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import httpx

from kova.log import CONTEXT, LEVELS, ORDER
from tests.fixtures.agents import operator_process
from tests.helpers import PlacementServer, stop_process, wait_for

TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def parse(text: str, component: str) -> list[dict]:
    """Every line of ``text`` as Kova's JSON log record of ``component``;
    fails naming the first line that is not."""
    records = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except ValueError:
            raise AssertionError(f"{component} line {n} is not JSON: {line!r}") from None
        assert isinstance(rec, dict), (component, line)
        assert list(rec)[: len(ORDER)] == list(ORDER), (component, line)
        assert rec["component"] == component, (component, line)
        assert TIME.match(rec["time"]), (component, line)
        assert rec["level"] in LEVELS, (component, line)
        assert isinstance(rec["message"], str) and isinstance(rec["logger"], str), line
        extra = set(rec) - set(ORDER) - set(CONTEXT)
        assert not extra, f"{component} line {n} has undocumented keys {extra}: {line}"
        records.append(rec)
    assert records, f"no log lines from {component}"
    return records


def test_every_component_logs_the_documented_json(harness, small_image, kova_api, tmp_path):
    placement = PlacementServer(tmp_path, ("--workers", "2", "--log-level", "info"))
    agent_log = tmp_path / "agent.log"
    try:
        with open(agent_log, "a") as log:
            agent = subprocess.Popen(
                [sys.executable, "-m", "kova.cli", "agent", "run", "--libvirt-uri",
                 "test:///default", "--instance-dir", str(tmp_path / "instances"),
                 "--kubeconfig", str(harness.kubeconfig), "--placement-url", placement.url,
                 "--metrics-port", "0", "--resync-seconds", "2", "--log-level", "debug",
                 "--image-host-dir", str(small_image.parent)],
                stdout=log, stderr=subprocess.STDOUT,
                env=dict(os.environ, KOVA_HOST=harness.host, PYTHONUNBUFFERED="1"))
        try:
            with operator_process(harness, placement, tmp_path, "--log-level", "debug") as op:
                harness.image("img", small_image)
                uid = harness.instance("vm", "img", schedule=False)["metadata"]["uid"]
                harness.wait_phase("vm", "Running", timeout=60)
                # a request Placement refuses, for its error log line
                assert httpx.get(f"{placement.url}/resource_providers/nope",
                                 timeout=10).status_code == 404
                harness.delete("vm")
                wait_for(lambda: harness.get("vm") is None, 30, what="vm deleted")
        finally:
            stop_process(agent)
    finally:
        placement.stop()

    operator = parse(Path(op.log_path).read_text(), "operator")
    agent_records = parse(agent_log.read_text(), "agent")
    parse(placement.log_path.read_text(), "placement")
    parse(kova_api.log(), "api")

    about_vm = {"kind": "Instance", "namespace": harness.ns, "name": "vm", "uid": uid}
    for component, records in (("operator", operator), ("agent", agent_records)):
        assert any(about_vm.items() <= r.items() for r in records), (
            f"no {component} line names the Instance by kind/namespace/name/uid")
    assert all(r.get("host") == harness.host for r in agent_records), \
        "every agent line carries its host"
