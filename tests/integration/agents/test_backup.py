"""The copy of a running guest's disk for a snapshot (libvirt's backup API,
:mod:`kova.agents.virt.backup`) against a real libvirtd and QEMU: the copy
is a standalone qcow2 of the whole chain, the guest is never paused, and a
backup job left running by an agent killed midway is aborted by the next
agent's start with nothing half-made left."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import libvirt
import libvirt_qemu

from kova.agents.instance.snapshot import clean_up_after_restart
from kova.agents.virt.backup import push_backup
from kova.agents.virt.domain import build_domain_xml
from kova.agents.virt.driver import LibvirtDriver, start_event_loop
from tests.helpers import wait_for

MiB = 1 << 20
#: Where the tests write a pattern into the overlay before the guest starts:
#: past the test image's own data (33 MiB), inside the 1 GiB overlay.
MARK_AT = 100 * MiB


def _running_guest(drv, made, make_spec, test_image, tmp_path, mark_mib: int) -> tuple[str, Path]:
    """A running domain on a 1 GiB overlay of the test image holding
    ``mark_mib`` MiB of the byte 0x5a at :data:`MARK_AT`."""
    spec = make_spec(seed_path=None)
    disk = Path(spec.disk_path)
    disk.parent.mkdir(parents=True)
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b",
                    str(Path(test_image).resolve()), str(disk), "1G"], check=True)
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", f"write -P 0x5a {MARK_AT} {mark_mib}M",
                    str(disk)], check=True, capture_output=True)
    drv.define(build_domain_xml(spec))
    made.append(spec.meta.uid)
    drv.start(spec.meta.uid)
    return spec.meta.uid, disk


def _info(path: Path) -> dict:
    out = subprocess.run(["qemu-img", "info", "-U", "--output=json", str(path)], check=True,
                         capture_output=True, text=True)
    return json.loads(out.stdout)


def _has_mark(path: Path, mark_mib: int) -> bool:
    out = subprocess.run(["qemu-io", "-r", "-U", "-f", "qcow2", "-c",
                          f"read -P 0x5a {MARK_AT} {mark_mib}M", str(path)],
                         capture_output=True, text=True)
    return out.returncode == 0 and "Pattern verification failed" not in out.stdout


def test_copy_of_a_running_guest_is_a_standalone_qcow2_without_a_pause(
        qemu_driver, make_spec, test_image, tmp_path):
    drv, made = qemu_driver
    uid, disk = _running_guest(drv, made, make_spec, test_image, tmp_path, 8)
    start_event_loop()
    events: list[tuple[str, str]] = []
    watcher = LibvirtDriver(drv.uri, on_event=lambda u, e, _d: events.append((u, e)))
    _ = watcher.conn
    copy = disk.with_name("snapshot-test.qcow2")
    seen: list[tuple[int, int]] = []
    stats = push_backup(drv, uid, disk, copy, on_progress=lambda d, t: seen.append((d, t)))
    assert stats["success"] and stats["disk_total"] == 1 << 30
    # The running job's bytes, as the snapshot's progress shows them.
    assert all(0 <= d <= t == 1 << 30 for d, t in seen), seen[-5:]
    info = _info(copy)
    assert info["format"] == "qcow2" and info["virtual-size"] == 1 << 30
    assert "backing-filename" not in info and "full-backing-filename" not in info
    assert _has_mark(copy, 8)  # the overlay's data
    # ... and the test image's, through the backing chain: the copy reads
    # as the image up to the mark.
    base = subprocess.run(["qemu-img", "compare", "-U", "-f", "qcow2", "-F", "qcow2",
                           str(Path(test_image).resolve()), str(copy)],
                          capture_output=True, text=True)
    assert f"Content mismatch at offset {MARK_AT}!" in base.stdout, (base.stdout, base.stderr)
    assert drv.state(uid).running
    watcher.close()
    assert (uid, "Suspended") not in events, events


def test_backup_job_of_a_killed_agent_is_aborted_at_the_next_start(
        qemu_driver, make_spec, test_image, tmp_path):
    drv, made = qemu_driver
    uid, disk = _running_guest(drv, made, make_spec, test_image, tmp_path, 256)
    copy = disk.with_name("snapshot-dead.qcow2")
    # An agent process copying the disk ...
    agent = subprocess.Popen([sys.executable, "-c", (
        "import sys; from pathlib import Path; "
        "from kova.agents.virt.driver import LibvirtDriver; "
        "from kova.agents.virt.backup import push_backup; "
        f"push_backup(LibvirtDriver({drv.uri!r}), {uid!r}, Path({str(disk)!r}), "
        f"Path({str(copy)!r}))")])
    dom = drv.conn.lookupByUUIDString(uid)
    try:
        def job() -> str | None:
            jobs = json.loads(libvirt_qemu.qemuMonitorCommand(
                dom, '{"execute": "query-block-jobs"}', 0))["return"]
            return next((j["device"] for j in jobs if j["type"] == "backup"), None)

        wait_for(lambda: job() is not None, 60, 0.01, "the backup job")
        # ... slowed down (QEMU's own rate limit; a test-only monitor command)
        # so that it is surely still running when the agent is gone:
        libvirt_qemu.qemuMonitorCommand(dom, json.dumps({
            "execute": "block-job-set-speed",
            "arguments": {"device": job(), "speed": 1 << 20}}), 0)
        os.kill(agent.pid, signal.SIGKILL)
        agent.wait(30)
    finally:
        if agent.poll() is None:
            agent.kill()
    time.sleep(0.5)
    assert dom.jobStats(0).get("operation") == libvirt.VIR_DOMAIN_JOB_OPERATION_BACKUP
    assert copy.exists()

    # The next agent's start.
    ctx = SimpleNamespace(driver=drv, host="h1", instance_dir=tmp_path)
    clean_up_after_restart(ctx)  # type: ignore[arg-type]
    assert dom.jobInfo()[0] == libvirt.VIR_DOMAIN_JOB_NONE
    assert not copy.exists()
    # The guest runs on, on its disk as it was; a new copy works.
    assert drv.state(uid).running
    check = subprocess.run(["qemu-img", "check", "-U", str(disk)], capture_output=True,
                           text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    again = disk.with_name("snapshot-again.qcow2")
    assert push_backup(drv, uid, disk, again)["success"]
    assert _has_mark(again, 256)
