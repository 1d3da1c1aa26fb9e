"""The agent boots Kova's test image under QEMU (software emulation) on the
local libvirtd (qemu:///system).  The agent runs as a separate process, as in
production, so that it can be killed with SIGKILL.

Boots are kept few (each takes ~10 s under TCG): one Instance, booted twice
(create, then stop/start), carries every check."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import libvirt  # noqa: E402  (libvirt-python: the "libvirt" extra, always installed)
import pytest

from kova.crds import names as contract
from kova.dev.image import userdata_from_console
from kova.dev.paths import cache_dir
from tests.fixtures.agents import free_port, remove_domain, wait_for
from tests.helpers import BOOT_TIMEOUT, stop_process


class AgentProcess:
    def __init__(self, harness, instance_dir: Path, log: Path, *extra_args: str,
                 env: dict | None = None) -> None:
        self.port = free_port()
        self.logf = open(log, "a")
        env = dict(os.environ, KOVA_HOST=harness.host, PYTHONUNBUFFERED="1",
                   # the test image's directories and the loopback HTTPS server
                   KOVA_AGENT_IMAGE_HOST_DIRS=f"{harness.tmp / 'images'} "
                                              f"{cache_dir() / 'images'} /var/lib/kova/images",
                   KOVA_AGENT_IMAGE_URL_ALLOWED_NETWORKS="127.0.0.0/8", **(env or {}))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "kova.cli", "agent", "run",
             "--libvirt-uri", "qemu:///system", "--domain-type", "qemu",
             "--instance-dir", str(instance_dir), "--kubeconfig", str(harness.kubeconfig),
             "--metrics-port", str(self.port), "--metrics-bind", "127.0.0.1",
             "--resync-seconds", "5", "--shutdown-timeout", "60", "--log-level", "info",
             *extra_args],
            stdout=self.logf, stderr=subprocess.STDOUT, env=env,
        )

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        stop_process(self.proc)
        self.logf.close()


def _qemu_pid(name: str) -> int | None:
    try:
        pid = int(Path(f"/run/libvirt/qemu/{name}.pid").read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if Path(f"/proc/{pid}").exists() else None


def _console(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except FileNotFoundError:
        return ""


@pytest.mark.reliability  # its kill -9 is the "Agent crash" row of docs/reliability.md
def test_boot_userdata_kill9_readopt_stop_start_delete(
    harness, libvirtd, libvirt_qemu_conn, test_image, tmp_path
):
    instance_dir = tmp_path / "instances"
    agent_log = tmp_path / "agent.log"
    harness.image("kova-test-e2e-" + uuid.uuid4().hex[:6], test_image)
    image = harness.images[-1]
    agent = AgentProcess(harness, instance_dir, agent_log)
    try:
        marker = f"KOVA-E2E-{uuid.uuid4().hex[:8]}"
        user_data = f"#cloud-config\nruncmd:\n  - echo {marker}\n"
        t0 = time.monotonic()
        obj = harness.instance("e2e", image, user_data=user_data,
                               resources={"vcpus": 1, "memoryMiB": 256, "diskGiB": 1})
        uid = obj["metadata"]["uid"]
        name = f"{harness.ns}.e2e"
        got = harness.wait_phase("e2e", "Running", timeout=60)
        t_running = time.monotonic() - t0
        console = Path(got["status"]["console"]["logPath"])
        assert console == instance_dir / uid / "console.log"
        text = wait_for(lambda: (t := _console(console)) and userdata_from_console(t) is not None
                        and "KOVA-READY" in t and t, BOOT_TIMEOUT, 0.2, "user-data on console")
        t_console = time.monotonic() - t0
        assert userdata_from_console(text) == user_data.rstrip("\n")
        assert f"KOVA-INSTANCE-ID: {uid}" in text
        assert "KOVA-HOSTNAME: e2e" in text
        print(f"\napply -> Running {t_running:.2f}s, -> user-data on console {t_console:.2f}s")

        # kill -9 the agent; the guest runs on, the status goes stale.
        pid = _qemu_pid(name)
        assert pid is not None
        agent.kill9()
        harness.custom.patch_namespaced_custom_object_status(
            contract.GROUP, contract.VERSION, harness.ns, "instances", "e2e",
            {"status": {"phase": "Stopped", "powerState": "Shutdown"}},
            _content_type="application/merge-patch+json")
        t1 = time.monotonic()
        agent = AgentProcess(harness, instance_dir, agent_log)
        harness.wait_phase("e2e", "Running", timeout=60)  # a fresh process: imports, watch, first resync
        t_corrected = time.monotonic() - t1
        print(f"status corrected {t_corrected:.2f}s after the agent restart")
        assert harness.get("e2e")["status"]["powerState"] == "Running"
        lost = 0 if _qemu_pid(name) == pid else 1
        assert lost == 0  # never restarted
        boots = _console(console).count("KOVA-TEST-IMAGE-BOOTED")
        assert boots == 1
        copies = sum(1 for d in libvirt_qemu_conn.listAllDomains(0) if d.UUIDString() == uid)
        assert copies == 1

        # Stop (ACPI power button, the guest powers off cleanly).
        t2 = time.monotonic()
        harness.patch("e2e", {"spec": {"runStrategy": "Halted"}})
        got = harness.wait_phase("e2e", "Stopped", timeout=60)
        print(f"stop took {time.monotonic() - t2:.2f}s")
        assert got["status"]["powerState"] == "Shutdown"
        assert "KOVA-POWEROFF" in _console(console)
        assert _qemu_pid(name) is None

        # Start again: a second boot, same disk, console log appended.
        harness.patch("e2e", {"spec": {"runStrategy": "Always"}})
        harness.wait_phase("e2e", "Running", timeout=60)
        wait_for(lambda: _console(console).count("KOVA-READY") == 2, BOOT_TIMEOUT, 0.2,
                 "second boot")

        # Delete: no domain, overlay, seed or console log left.
        harness.delete("e2e")
        wait_for(lambda: harness.get("e2e") is None, 30, 0.2, "instance deleted")
        with pytest.raises(libvirt.libvirtError):
            libvirt_qemu_conn.lookupByUUIDString(uid)
        assert not (instance_dir / uid).exists()
        assert _qemu_pid(name) is None
        from tests.reliability.record import record

        record(fault="Agent crash",
               injected="kill -9 of the compute agent under a running guest (real QEMU), "
                        "status made stale meanwhile, agent restarted",
               times=1, lost=lost, duplicated=copies - 1,
               overcommitted=None,
               result=f"same QEMU pid, guest booted once; status Running again "
                      f"{t_corrected:.1f}s after the restart",
               figures={"status_corrected_s": round(t_corrected, 2), "boots": boots})
    finally:
        agent.stop()
        # Never leave a guest behind, whatever failed.
        remove_domain(libvirt_qemu_conn, f"{harness.ns}.e2e")
        print(agent_log.read_text()[-4000:])


@pytest.mark.slow  # a second real boot: ~10 s on an idle machine, ~50 s at load 7
def test_boot_from_an_https_image_with_a_private_ca(
    harness, libvirtd, libvirt_qemu_conn, https_images, tmp_path
):
    """`kova agent run` with KOVA_AGENT_IMAGE_CA_FILE (as the Helm chart sets
    it) downloads the test image from an HTTPS server whose certificate a test
    CA issued, and the guest boots from it."""
    instance_dir = tmp_path / "instances"
    agent_log = tmp_path / "agent.log"
    image = "kova-test-https-" + uuid.uuid4().hex[:6]
    harness.image(image, url=https_images.url(), sha256=https_images.sha256)
    agent = AgentProcess(harness, instance_dir, agent_log,
                         env={"KOVA_AGENT_IMAGE_CA_FILE": str(https_images.ca)})
    try:
        marker = f"KOVA-HTTPS-{uuid.uuid4().hex[:8]}"
        user_data = f"#cloud-config\nruncmd:\n  - echo {marker}\n"
        uid = harness.instance("tls", image, user_data=user_data,
                               resources={"vcpus": 1, "memoryMiB": 256, "diskGiB": 1}
                               )["metadata"]["uid"]
        got = harness.wait_phase("tls", "Running", timeout=60)
        assert [p for p, _ in https_images.good.requests] == ["/kova-test.qcow2"]
        assert (instance_dir / "_base" / f"{https_images.sha256}.qcow2").exists()
        console = Path(got["status"]["console"]["logPath"])
        text = wait_for(lambda: (t := _console(console)) and "KOVA-READY" in t
                        and userdata_from_console(t) is not None and t,
                        BOOT_TIMEOUT, 0.2, "guest booted")
        assert userdata_from_console(text) == user_data.rstrip("\n")
        assert f"KOVA-INSTANCE-ID: {uid}" in text
        harness.delete("tls")
        wait_for(lambda: harness.get("tls") is None, 30, 0.2, "instance deleted")
        assert not (instance_dir / uid).exists()
    finally:
        agent.stop()
        remove_domain(libvirt_qemu_conn, f"{harness.ns}.tls")
        print(agent_log.read_text()[-4000:])
