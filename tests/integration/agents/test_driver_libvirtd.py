"""The libvirt driver against a real libvirtd (qemu:///system, QEMU under TCG):
the second connection that carries the long operations."""

from __future__ import annotations

import subprocess
import threading
import time

from kova.agents.virt.domain import build_domain_xml


def _define(drv, made, make_spec, test_image, tmp_path):
    spec = make_spec(seed_path=None)
    disk = tmp_path / f"{spec.meta.uid}.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b",
                    str(test_image), str(disk)], check=True)
    spec = make_spec(uid=spec.meta.uid, name=spec.meta.name, seed_path=None,
                     disk_path=str(disk), console_log=str(tmp_path / f"{spec.meta.uid}.log"))
    drv.define(build_domain_xml(spec))
    made.append(spec.meta.uid)
    return spec.meta.uid


def test_long_operations_use_their_own_connection(qemu_driver, make_spec, test_image, tmp_path):
    drv, made = qemu_driver
    uids = [_define(drv, made, make_spec, test_image, tmp_path) for _ in range(5)]
    assert drv.ops_conn is not drv.conn
    # Five starts in flight fill libvirtd's per-client request slots
    # (max_client_requests = 5) of the operations connection; a state read on
    # the query connection is answered while they are (on one connection it
    # would queue behind them).
    finished: list[float] = []

    def start(uid: str) -> None:
        drv.start(uid)
        finished.append(time.monotonic())

    threads = [threading.Thread(target=start, args=(u,)) for u in uids]
    for t in threads:
        t.start()
    time.sleep(0.1)
    states = [drv.state(u) for u in uids]
    answered = time.monotonic()
    for t in threads:
        t.join(120)
    assert len(finished) == 5
    assert all(s is not None for s in states)
    assert answered < min(finished), "the state read waited for a start to finish"
    assert all(drv.state(u).running for u in uids)


def test_operations_connection_is_reopened(qemu_driver, make_spec, test_image, tmp_path):
    drv, made = qemu_driver
    uid = _define(drv, made, make_spec, test_image, tmp_path)
    drv.ops_conn.close()  # behind the driver's back, as when libvirtd restarts
    assert drv.start(uid) is True
    assert drv.state(uid).running
    assert drv.destroy(uid) is True
    assert not drv.state(uid).running


def test_uefi_host_and_domain(qemu_driver, make_spec, test_image, tmp_path):
    """With OVMF installed (hack/install-system-packages.sh), libvirt's domain
    capabilities offer the EFI firmware, so the host reports
    COMPUTE_FIRMWARE_UEFI next to _BIOS; a UEFI domain gets the OVMF loader
    and its own variable store in the Instance's directory, whose firmware
    runs (its boot manager writes to the serial console), and undefining the
    domain removes the variable store."""
    from kova.agents.virt import traits

    drv, made = qemu_driver
    info = drv.host_info("qemu", "pc")
    assert info.firmwares == ("bios", "uefi")
    assert {"COMPUTE_FIRMWARE_BIOS", "COMPUTE_FIRMWARE_UEFI"} <= set(traits.host_traits(info))

    disk, nvram, log = (tmp_path / "disk.qcow2", tmp_path / "nvram.fd", tmp_path / "console.log")
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b",
                    str(test_image), str(disk)], check=True)
    spec = make_spec(seed_path=None, disk_path=str(disk), console_log=str(log),
                     firmware="uefi", nvram_path=str(nvram), vnc=False)
    drv.define(build_domain_xml(spec))
    made.append(spec.meta.uid)
    assert drv.start(spec.meta.uid) is True
    # libvirt resolves the firmware at the start: the running domain's XML.
    xml = drv.conn.lookupByUUIDString(spec.meta.uid).XMLDesc(0)
    assert "<loader readonly='yes' type='pflash'" in xml and "/usr/share/OVMF/" in xml, xml
    assert "<nvram template='/usr/share/OVMF/" in xml and f">{nvram}</nvram>" in xml, xml
    assert nvram.exists()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and "BdsDxe" not in (
            log.read_text(errors="replace") if log.exists() else ""):
        time.sleep(1)
    assert "BdsDxe" in log.read_text(errors="replace"), log.read_text(errors="replace")[-2000:]
    drv.undefine(spec.meta.uid)
    made.remove(spec.meta.uid)
    assert not nvram.exists()
