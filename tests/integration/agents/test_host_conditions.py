"""No silent failure on the Host: the agent's conditions HypervisorReachable
and PlacementRegistered name the cause -- its libvirtd stopped, Placement
stopped, Placement refusing the agent's token -- within seconds, with one
Warning Event each, and turn True again when the cause is fixed.  Real
components: the host's own private libvirtd (hack/start-libvirt-host.sh,
stopped with SIGTERM and started again), a real Placement (killed and
started again; with a token file that is fixed while the agent runs) and
the real API server."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
from pathlib import Path

import pytest

from kova.crds import names as contract
from tests.helpers import wait_for
from tests.reliability.scheduling import PlacementProcess

ROOT = Path(__file__).resolve().parents[3]


def host_cond(harness, ctype: str) -> dict | None:
    for c in ((harness.host_obj() or {}).get("status") or {}).get("conditions") or []:
        if c["type"] == ctype:
            return c
    return None


def wait_host_cond(harness, ctype: str, status: str, reason: str, timeout: float = 20) -> dict:
    return wait_for(lambda: (c := host_cond(harness, ctype)) and c["status"] == status
                    and c["reason"] == reason and c, timeout,
                    what=f"Host {ctype}={status} ({reason}): {host_cond(harness, ctype)}")


def host_warnings(harness, reason: str) -> list:
    return [e for e in harness.core.list_namespaced_event("default").items
            if e.involved_object.name == harness.host and e.involved_object.kind == "Host"
            and e.reason == reason and e.type == "Warning"]


class PrivateLibvirtd:
    """The host's own libvirtd and virtlogd (started here, stopped here)."""

    def __init__(self, root: Path, name: str) -> None:
        self.root, self.name = root, name
        self.uri = self.start()

    def start(self) -> str:
        return subprocess.run(
            ["bash", str(ROOT / "hack/start-libvirt-host.sh"), self.name, str(self.root)],
            check=True, capture_output=True, text=True).stdout.strip()

    def pid(self, daemon: str) -> int | None:
        f = self.root / self.name / f"{daemon}.pid"
        return int(f.read_text().strip()) if f.exists() and f.read_text().strip() else None

    def stop(self, daemon: str = "libvirtd") -> None:
        pid = self.pid(daemon)
        if pid is None:
            return
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        wait_for(lambda: not Path(f"/proc/{pid}").exists(), 20, what=f"{daemon} to exit")


@pytest.fixture
def private_libvirtd(tmp_path):
    d = PrivateLibvirtd(tmp_path / "libvirt", "h")
    yield d
    d.stop("libvirtd")
    d.stop("virtlogd")


def test_libvirtd_stopped_shows_on_the_host_and_clears(harness, private_libvirtd):
    harness.agent(libvirt_uri=private_libvirtd.uri, host_check_seconds=0.5)
    wait_host_cond(harness, contract.HOST_COND_HYPERVISOR, "True",
                   contract.HOST_REASON_CONNECTED)
    private_libvirtd.stop()
    cond = wait_host_cond(harness, contract.HOST_COND_HYPERVISOR, "False",
                          contract.HOST_REASON_LIBVIRT_UNREACHABLE, timeout=15)
    assert private_libvirtd.uri in cond["message"], cond
    wait_for(lambda: len(host_warnings(harness, contract.HOST_REASON_LIBVIRT_UNREACHABLE)) == 1,
             10, what="one Warning Event")
    private_libvirtd.start()
    wait_host_cond(harness, contract.HOST_COND_HYPERVISOR, "True",
                   contract.HOST_REASON_CONNECTED, timeout=20)
    assert len(host_warnings(harness, contract.HOST_REASON_LIBVIRT_UNREACHABLE)) == 1


def test_placement_refusing_then_stopped_shows_on_the_host_and_clears(harness, tmp_path):
    good, wrong = secrets.token_hex(16), secrets.token_hex(16)
    tokens = tmp_path / "tokens"
    tokens.write_text(f"admin {good}\n")
    placement = PlacementProcess(tmp_path, f"sqlite:///{tmp_path}/placement.db",
                                 auth=("--token-file", str(tokens)), token=good)
    try:
        harness.agent(placement_url=placement.url, placement_token=wrong,
                      placement_retry_seconds=0.5, host_check_seconds=0.5)
        cond = wait_host_cond(harness, contract.HOST_COND_PLACEMENT, "False",
                              contract.REASON_PLACEMENT_UNAUTHORIZED)
        assert "HTTP 401" in cond["message"] and wrong not in cond["message"], cond
        assert not (harness.host_obj()["status"].get("resourceProviderUUID"))
        # the token becomes valid: the registration goes through
        tokens.write_text(f"admin {good}\nadmin {wrong}\n")
        wait_host_cond(harness, contract.HOST_COND_PLACEMENT, "True",
                       contract.HOST_REASON_REGISTERED)
        rp = harness.host_obj()["status"]["resourceProviderUUID"]
        assert placement.http.get(f"/resource_providers/{rp}").status_code == 200
        # Placement goes away, then comes back
        placement.kill()
        cond = wait_host_cond(harness, contract.HOST_COND_PLACEMENT, "False",
                              contract.REASON_PLACEMENT_ERROR)
        assert placement.url in cond["message"] and "unreachable" in cond["message"], cond
        placement.start()
        wait_host_cond(harness, contract.HOST_COND_PLACEMENT, "True",
                       contract.HOST_REASON_REGISTERED)
        for reason in (contract.REASON_PLACEMENT_UNAUTHORIZED, contract.REASON_PLACEMENT_ERROR):
            assert len(host_warnings(harness, reason)) == 1, reason
        # the other fields of the agent's Host status survived every write
        status = harness.host_obj()["status"]
        assert status["capacity"]["vcpus"] >= 1 and status["resourceProviderUUID"] == rp
    finally:
        placement.stop()
