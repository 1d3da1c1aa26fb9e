"""Kova's bootable test image, built from Debian packages.

``ensure_test_image()`` runs ``hack/build-test-image.sh``, which builds (once per
script/kernel version, in a few seconds) a ~10 MiB qcow2 under
``$KOVA_CACHE/images/`` -- MBR + FAT16 partition with syslinux, Debian's kernel
and a busybox initramfs -- and returns its path.  Use it as the backing file of
a qcow2 overlay, never directly (it is shared).

On the serial console (ttyS0) the guest prints, in this order:

* ``KOVA-TEST-IMAGE-BOOTED`` -- init started;
* ``KOVA-SEED: <device> <fstype>`` (or ``KOVA-SEED: none``) -- the NoCloud seed
  (ISO 9660 labelled ``cidata`` on any block device, or vfat ``CIDATA``);
* ``KOVA-HOSTNAME: …``, ``KOVA-INSTANCE-ID: …`` -- from meta-data;
* ``KOVA-USERDATA-BEGIN``, the user-data verbatim, ``KOVA-USERDATA-END``;
* ``KOVA-READY`` -- acpid listens, so an ACPI shutdown (``virsh shutdown``) is
  honoured from here on (a power button pressed earlier is lost: retry);
* ``KOVA-GUEST-AGENT: started`` -- the QEMU guest agent (Debian's qemu-ga)
  runs on the ``org.qemu.guest_agent.0`` channel; ``KOVA-GUEST-AGENT: off``
  when the user-data has a line ``kova-guest-agent: off``; later
  ``KOVA-FSFREEZE: freeze`` / ``thaw`` from its fsfreeze hook;
* ``KOVA-NETWORK-CONFIG: <nic> <mac> dhcp4=<yes|no>`` -- if the seed has a
  ``network-config``: the NIC whose MAC it names (``none`` if no NIC has it);
* ``KOVA-DHCP: <nic> <addr>/<prefix>`` -- later, when that NIC (without a
  network-config: ``eth0``) got a DHCP lease (requested with the hostname);
* ``KOVA-POWEROFF`` -- on the power button, right before ``poweroff -f``.

Under QEMU software emulation (``type='qemu'``) ``KOVA-READY`` appears about
6-8 s after start on an idle 2-core machine (most of it is the kernel's xz
decompression).  The seed CD-ROM may sit on IDE (``pc``), SATA (``q35``) or
virtio-scsi; disks on virtio-blk.
"""

from __future__ import annotations

import os
from pathlib import Path

from kova.dev.paths import cache_dir, run_hack

BOOTED_MARKER = "KOVA-TEST-IMAGE-BOOTED"
USERDATA_BEGIN = "KOVA-USERDATA-BEGIN"
USERDATA_END = "KOVA-USERDATA-END"
READY_MARKER = "KOVA-READY"
GUEST_AGENT_STARTED = "KOVA-GUEST-AGENT: started"
GUEST_AGENT_OFF = "KOVA-GUEST-AGENT: off"
POWEROFF_MARKER = "KOVA-POWEROFF"


def image_link() -> Path:
    """The stable symlink to the current build (may not exist yet)."""
    return cache_dir() / "images" / "kova-test.qcow2"


def ensure_test_image(rebuild: bool = False) -> Path:
    """Build the test image if needed; return the path of the qcow2 (not the link)."""
    env = dict(os.environ, KOVA_CACHE=str(cache_dir()))
    if rebuild:
        env["KOVA_REBUILD"] = "1"
    out = run_hack("build-test-image.sh", env=env)
    path = Path(out) if out else None
    if path is None or not path.is_file():
        raise RuntimeError(f"hack/build-test-image.sh printed no image path (last line: {out!r})")
    return path


def userdata_from_console(text: str) -> str | None:
    """The user-data the guest printed between the markers, or None if incomplete."""
    begin = text.find(USERDATA_BEGIN + "\n")
    if begin < 0:
        begin = text.find(USERDATA_BEGIN + "\r\n")
    if begin < 0:
        return None
    start = text.index("\n", begin) + 1
    end = text.find(USERDATA_END, start)
    if end < 0:
        return None
    return text[start:end].replace("\r\n", "\n").rstrip("\n")
