"""The real OpenStack client (osc-placement) against Kova's Placement.

Needs python-openstackclient + osc-placement in their own virtualenv under
``$KOVA_CACHE/osc-placement``, which ``hack/install-osc-placement.sh`` (run by
``hack/setup.sh``) installs; the test fails, never skips, when it is missing.  The service runs in a
real uvicorn server on a free port, with token auth.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest
import uvicorn

from kova.placement.app import create_app
from kova.placement.auth import StaticTokenAuth

OSC = Path(os.environ.get("KOVA_CACHE", Path.home() / ".cache" / "kova")) / \
    "osc-placement" / "bin" / "openstack"



@pytest.fixture(scope="module", autouse=True)
def _osc_installed() -> None:
    assert OSC.exists(), f"{OSC} missing: run hack/install-osc-placement.sh"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    d = tmp_path_factory.mktemp("osc")
    tokens = d / "tokens"
    tokens.write_text("admin adm1n\nreader r3ad\n")
    app = create_app(f"sqlite:///{d}/p.db", auth=StaticTokenAuth(tokens))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                        log_level="warning", lifespan="off"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.time() + 20
    while not srv.started and time.time() < deadline:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(10)
    app.db.dispose()


def osc(url, *args, token="adm1n", version="1.39", check=True):
    cmd = [str(OSC), "--os-auth-type", "admin_token", "--os-endpoint", url,
           "--os-token", token, "--os-placement-api-version", version, *args]
    env = {k: v for k, v in os.environ.items() if not k.startswith("OS_")}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    if check:
        assert proc.returncode == 0, proc.stderr + proc.stdout
    return proc


def test_resource_provider_commands(server):
    rp = json.loads(osc(server, "resource", "provider", "create", "osc-host-1",
                        "-f", "json").stdout)
    assert rp["name"] == "osc-host-1" and rp["generation"] == 0
    listed = json.loads(osc(server, "resource", "provider", "list", "-f", "json").stdout)
    assert [p["uuid"] for p in listed] == [rp["uuid"]]
    inv = json.loads(osc(server, "resource", "provider", "inventory", "set", rp["uuid"],
                         "--resource", "VCPU=8", "--resource", "VCPU:max_unit=4",
                         "--resource", "MEMORY_MB=4096", "-f", "json").stdout)
    by_class = {row["resource_class"]: row for row in inv}
    assert by_class["VCPU"]["total"] == 8 and by_class["VCPU"]["max_unit"] == 4
    osc(server, "resource", "provider", "trait", "set", rp["uuid"],
        "--trait", "HW_CPU_X86_AVX2")
    cands = json.loads(osc(server, "allocation", "candidate", "list", "--resource", "VCPU=2",
                           "--required", "HW_CPU_X86_AVX2", "-f", "json").stdout)
    assert len(cands) == 1 and rp["uuid"] in json.dumps(cands[0])
    usage = json.loads(osc(server, "resource", "provider", "usage", "show", rp["uuid"],
                           "-f", "json").stdout)
    assert {u["resource_class"]: u["usage"] for u in usage} == {"VCPU": 0, "MEMORY_MB": 0}


def test_tokens_are_enforced(server):
    proc = osc(server, "resource", "provider", "list", token="wrong", check=False)
    assert proc.returncode != 0 and "401" in proc.stderr + proc.stdout
    assert osc(server, "resource", "provider", "list", token="r3ad").returncode == 0
    proc = osc(server, "resource", "provider", "create", "nope", token="r3ad", check=False)
    assert proc.returncode != 0 and "403" in proc.stderr + proc.stdout
