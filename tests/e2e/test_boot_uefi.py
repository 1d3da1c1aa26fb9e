"""A UEFI guest boots: Kova's test image (which carries syslinux for both
BIOS and UEFI, hack/build-test-image.sh) as an Image with
properties.firmware: uefi, built by the agent on the real libvirtd and run
under QEMU (software emulation) with OVMF.  Its console shows OVMF's boot
manager starting the disk's EFI loader, then the image's init; its UEFI
variable store lives in the Instance's directory and goes with it.  The BIOS
boot of the same image is tests/e2e/test_boot_burst.py."""

from __future__ import annotations

import uuid

from kova.dev.image import BOOTED_MARKER
from tests.fixtures.agents import domain_by_uuid, remove_domain, wait_for
from tests.fixtures.libvirt import wait_for_console
from tests.helpers import BOOT_TIMEOUT


def test_uefi_instance_boots(harness, test_image, libvirt_qemu_conn, tmp_path):
    harness.image("uefi", test_image, properties={"firmware": "uefi"})
    harness.agent(libvirt_uri="qemu:///system", domain_type="qemu")
    name = f"uefi-{uuid.uuid4().hex[:6]}"
    try:
        # 256 MiB: with 128, OVMF leaves syslinux.efi no room for the kernel.
        uid = harness.instance(name, "uefi", user_data="#cloud-config\n", resources={
            "vcpus": 1, "memoryMiB": 256, "diskGiB": 1})["metadata"]["uid"]
        harness.wait_phase(name, "Running", timeout=60)
        idir = tmp_path / "instances" / uid
        text = wait_for_console(idir / "console.log", lambda t: BOOTED_MARKER in t,
                                BOOT_TIMEOUT, interval=1.0)
        assert "BdsDxe: starting Boot" in text, text[-2000:]
        assert text.index("BdsDxe: starting Boot") < text.index(BOOTED_MARKER)
        assert (idir / "nvram.fd").stat().st_size > 0
        harness.delete(name)
        wait_for(lambda: harness.get(name) is None, 60, what=f"{name} deleted")
        assert domain_by_uuid(libvirt_qemu_conn, uid) is None
        assert not idir.exists()
    finally:
        remove_domain(libvirt_qemu_conn, f"{harness.ns}.{name}")
