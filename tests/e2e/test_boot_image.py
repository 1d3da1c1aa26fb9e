"""Boot Kova's test image under QEMU (software emulation) through libvirtd.

The guest must print its boot marker and the user-data of its NoCloud seed on
the serial console, and power off on an ACPI shutdown request.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from xml.sax.saxutils import escape

import libvirt  # noqa: E402  (libvirt-python: the "libvirt" extra, always installed)
import pytest

from kova.dev.image import BOOTED_MARKER, POWEROFF_MARKER, READY_MARKER, userdata_from_console
from tests.fixtures.libvirt import make_overlay, wait_for_console
from tests.helpers import BOOT_TIMEOUT

# The seed CD-ROM's bus for each machine type (the image has drivers for all).
CDROM_BUS = {"pc": ("ide", "hdc"), "q35": ("sata", "sda")}


def domain_xml(name: str, disk: Path, seed: Path, serial_log: Path, machine: str = "pc") -> str:
    bus, dev = CDROM_BUS[machine]
    return f"""
<domain type='qemu'>
  <name>{escape(name)}</name>
  <uuid>{uuid.uuid4()}</uuid>
  <memory unit='MiB'>256</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='{machine}'>hvm</type>
    <boot dev='hd'/>
  </os>
  <features><acpi/><apic/></features>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='{escape(str(disk))}'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <disk type='file' device='cdrom'>
      <driver name='qemu' type='raw'/>
      <source file='{escape(str(seed))}'/>
      <target dev='{dev}' bus='{bus}'/>
      <readonly/>
    </disk>
    <serial type='file'>
      <source path='{escape(str(serial_log))}'/>
      <target port='0'/>
    </serial>
    <console type='file'>
      <source path='{escape(str(serial_log))}'/>
      <target type='serial' port='0'/>
    </console>
    <memballoon model='none'/>
  </devices>
</domain>"""


@pytest.fixture
def boot_domain(libvirt_qemu_conn, test_image: Path, nocloud_seed, tmp_path: Path, request):
    """Factory: define and start a domain; destroyed and undefined afterwards."""
    created = []

    def boot(user_data: str, instance_id: str, machine: str = "pc"):
        name = f"kova-e2e-{uuid.uuid4().hex[:10]}"
        disk = make_overlay(test_image, tmp_path / f"{name}.qcow2")
        seed = nocloud_seed(f"instance-id: {instance_id}\nlocal-hostname: {name}\n", user_data)
        log = tmp_path / f"{name}.serial.log"
        dom = libvirt_qemu_conn.defineXML(domain_xml(name, disk, seed, log, machine))
        created.append(dom)
        started = time.monotonic()
        dom.create()
        return dom, log, started

    yield boot

    for dom in created:
        try:
            if dom.isActive():
                dom.destroy()
        except libvirt.libvirtError:
            pass
        try:
            dom.undefine()
        except libvirt.libvirtError:
            pass


@pytest.mark.parametrize("machine", ["pc", "q35"])
def test_boot_prints_marker_and_userdata(boot_domain, machine: str) -> None:
    token = f"kova-token-{uuid.uuid4().hex}"
    instance_id = f"iid-{uuid.uuid4().hex[:12]}"
    user_data = f"#cloud-config\n# {token}\nruncmd:\n  - echo {token}\n"

    dom, log, started = boot_domain(user_data, instance_id, machine)

    text = wait_for_console(log, lambda t: BOOTED_MARKER in t, BOOT_TIMEOUT)
    booted = time.monotonic() - started
    text = wait_for_console(log, lambda t: READY_MARKER in t, BOOT_TIMEOUT - booted)
    ready = time.monotonic() - started
    print(f"\n[{machine}] {BOOTED_MARKER} after {booted:.1f}s, {READY_MARKER} after {ready:.1f}s")

    assert token in text
    assert userdata_from_console(text) == user_data.rstrip("\n")
    assert f"KOVA-INSTANCE-ID: {instance_id}" in text
    assert dom.isActive()


def test_acpi_shutdown_powers_off(boot_domain) -> None:
    dom, log, _ = boot_domain("#cloud-config\n", "iid-shutdown")
    wait_for_console(log, lambda t: READY_MARKER in t, BOOT_TIMEOUT)

    # A power button pressed before the guest's acpid listens is lost: retry.
    start = time.monotonic()
    deadline = start + 30
    attempts = 0
    while dom.isActive() and time.monotonic() < deadline:
        attempts += 1
        try:
            dom.shutdown()
        except libvirt.libvirtError:
            if not dom.isActive():
                break
            raise
        for _ in range(25):
            if not dom.isActive():
                break
            time.sleep(0.2)
    assert not dom.isActive(), "guest did not power off on ACPI shutdown"
    print(f"\nACPI shutdown: off {time.monotonic() - start:.1f}s after the first request "
          f"({attempts} request(s))")
    assert POWEROFF_MARKER in log.read_text(errors="replace")
