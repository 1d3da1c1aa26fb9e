"""An Instance of an iso Image boots from it as a CD-ROM, as Nova's libvirt
driver does: the agent attaches the cached, verified ISO read-only, first in
the boot order, and gives the guest a blank qcow2 root disk of the
Instance's size, second.  The ISO is made here from Kova's test image
(``xorriso`` with an El Torito hard-disk-emulation boot image: SeaBIOS
boots the test image's MBR and syslinux from the CD), cached under
``~/.cache/kova/images``; the guest runs under QEMU on the real libvirtd.
Its console shows it booted (from the CD: the root disk is blank), that it
sees the ISO, and that the root disk reads as zeros and keeps what the
guest writes."""

from __future__ import annotations

import hashlib
import subprocess
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path

from kova.dev.image import BOOTED_MARKER
from kova.dev.paths import cache_dir
from tests.e2e.test_guest_network_filter import Console
from tests.fixtures.agents import domain_by_uuid, remove_domain, wait_for
from tests.fixtures.libvirt import wait_for_console
from tests.helpers import BOOT_TIMEOUT

LABEL = "KOVA-BOOT-ISO"
#: Where the guest writes its marker on the root disk (a 16-byte line of
#: ``qemu-io``'s dump).
OFFSET = 64 << 20


def bootable_iso(test_image: Path) -> Path:
    """The test image as a bootable ISO (built once per test image)."""
    key = hashlib.sha256(Path(test_image).resolve().name.encode()).hexdigest()[:12]
    iso = cache_dir() / "images" / f"kova-test-boot-{key}.iso"
    if iso.exists():
        return iso
    work = iso.with_name(f".{iso.name}.{uuid.uuid4().hex[:6]}")
    (work / "root").mkdir(parents=True)
    try:
        subprocess.run(["qemu-img", "convert", "-O", "raw", str(test_image),
                        str(work / "root" / "boot.img")], check=True)
        subprocess.run(["xorriso", "-as", "mkisofs", "-quiet", "-V", LABEL, "-b", "boot.img",
                        "-hard-disk-boot", "-o", str(work / "out.iso"), str(work / "root")],
                       check=True, capture_output=True)
        (work / "out.iso").replace(iso)
    finally:
        subprocess.run(["rm", "-rf", str(work)], check=False)
    return iso


def test_iso_image_boots_as_cdrom_with_a_blank_root_disk(harness, test_image,
                                                        libvirt_qemu_conn, tmp_path):
    iso = bootable_iso(test_image)
    image = f"iso-{uuid.uuid4().hex[:6]}"
    harness.image(image, iso, format="iso")
    harness.agent(libvirt_uri="qemu:///system", domain_type="qemu")
    name = f"iso-{uuid.uuid4().hex[:6]}"
    console = None
    try:
        uid = harness.instance(name, image, user_data="#cloud-config\n", resources={
            "vcpus": 1, "memoryMiB": 192, "diskGiB": 1})["metadata"]["uid"]
        harness.wait_phase(name, "Running", timeout=120)
        idir = tmp_path / "instances" / uid
        dom = domain_by_uuid(libvirt_qemu_conn, uid)
        root = ET.fromstring(dom.XMLDesc(0))
        disks = {d.get("device") + ":" + (d.find("source").get("file") or ""): d
                 for d in root.findall("devices/disk")}
        cached = Path((idir / "cdrom.iso").readlink())
        cd = disks[f"cdrom:{cached}"]
        assert cd.find("readonly") is not None and cd.find("boot").get("order") == "1"
        assert disks[f"disk:{idir / 'disk.qcow2'}"].find("boot").get("order") == "2"
        assert root.find("os/boot") is None
        assert cached.read_bytes() == iso.read_bytes()
        info = subprocess.run(["qemu-img", "info", "-U", "--output=json",
                               str(idir / "disk.qcow2")], check=True, capture_output=True,
                              text=True).stdout
        assert '"virtual-size": 1073741824' in info and "backing-filename" not in info, info

        log = idir / "console.log"
        wait_for_console(log, lambda t: "KOVA-SHELL: ttyS0" in t, BOOT_TIMEOUT, interval=1.0)
        assert BOOTED_MARKER in log.read_text(errors="replace")
        console = Console(libvirt_qemu_conn, dom, log)
        console.type("")
        # The guest sees the ISO on a CD-ROM drive (its volume label at byte 32808).
        assert console.ok(f"for d in /dev/sr*; do dd if=$d bs=1 skip=32808 count=13 "
                          f"2>/dev/null; echo; done | grep -q {LABEL}", timeout=60)
        # The root disk is blank ...
        assert console.ok('[ "$(dd if=/dev/vda bs=1M count=4 2>/dev/null | md5sum)" = '
                          '"$(dd if=/dev/zero bs=1M count=4 2>/dev/null | md5sum)" ]',
                          timeout=60)
        # ... and writable: a marker written in the guest is in the disk's file.
        mark = f"KOVAISO{uuid.uuid4().hex[:8]}"  # letters and digits: qemu-io shows others as "."
        assert console.ok(f"printf {mark} | dd of=/dev/vda bs=512 seek={OFFSET // 512} "
                          "conv=fsync 2>/dev/null && sync", timeout=60)
        # Stopped, QEMU has written everything it holds into the file.
        harness.patch(name, {"spec": {"runStrategy": "Halted"}})
        harness.wait_phase(name, "Stopped", timeout=120)
        dump = subprocess.run(["qemu-io", "-r", "-f", "qcow2", "-c", f"read -v {OFFSET} 16",
                               str(idir / "disk.qcow2")], capture_output=True, text=True)
        assert mark in dump.stdout, (dump.stdout, dump.stderr)

        harness.delete(name)
        wait_for(lambda: harness.get(name) is None, 60, what=f"{name} deleted")
        assert not idir.exists() and cached.exists()
    finally:
        if console is not None:
            console.close()
        remove_domain(libvirt_qemu_conn, f"{harness.ns}.{name}")
