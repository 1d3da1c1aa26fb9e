"""``kubectl kova eject`` of a QEMU guest booted from an iso Image, through
the real kube-apiserver's aggregator, ``kova api serve`` and the agent on
the real libvirtd.

The guest boots the bootable ISO of test_boot_iso.py, "installs" itself --
it copies the test image from the CD onto its blank root disk, as an
installer would -- and the user ejects the CD while it runs: the guest sees
an empty drive at once (no volume label, a read of it fails), the
live domain's drive has no ``<source>``, the definition has the root disk
first in the boot order, ``status.cdrom`` records it, the ``cdrom.iso`` link
is gone (the cached ISO stays, for the cache to evict).  A hard restart
keeps it ejected: the guest boots from the root disk the installer wrote,
and its CD drive is still empty.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import libvirt

from kova.dev.image import BOOTED_MARKER
from tests.e2e.test_boot_iso import LABEL, bootable_iso
from tests.e2e.test_guest_network_filter import Console
from tests.fixtures.agents import domain_by_uuid, remove_domain
from tests.fixtures.libvirt import wait_for_console
from tests.fixtures.vm import plugin
from tests.helpers import BOOT_TIMEOUT, disk_boot_orders, wait_for

SHELL = "KOVA-SHELL: ttyS0"


def _label_on(dev: str) -> str:
    return f'[ "$(dd if=/dev/{dev} bs=1 skip=32808 count=13 2>/dev/null)" = {LABEL} ]'


def _readable(dev: str) -> str:
    """The drive gives a sector (an empty one fails: no medium)."""
    return f"dd if=/dev/{dev} of=/dev/null bs=2048 count=1"


def test_eject_a_running_iso_guest_and_restart_it_from_its_root_disk(
        harness, test_image, libvirt_qemu_conn, kova_api, make_user, namespace, tmp_path):
    iso = bootable_iso(test_image)
    image = f"iso-{uuid.uuid4().hex[:6]}"
    harness.image(image, iso, format="iso")
    pki = kova_api.pki
    harness.agent(libvirt_uri="qemu:///system", domain_type="qemu",
                  stream_cert_file=str(pki.agent_crt), stream_key_file=str(pki.agent_key),
                  stream_client_ca_file=str(pki.ca_crt), stream_port=0,
                  stream_bind="127.0.0.1")
    editor = make_user("editor", "kova-edit", namespace)
    name = f"ej-{uuid.uuid4().hex[:6]}"
    console = None
    try:
        uid = harness.instance(name, image, user_data="#cloud-config\n", resources={
            "vcpus": 1, "memoryMiB": 192, "diskGiB": 1})["metadata"]["uid"]
        harness.wait_phase(name, "Running", timeout=120)
        idir = tmp_path / "instances" / uid
        cached = Path((idir / "cdrom.iso").readlink())
        dom = domain_by_uuid(libvirt_qemu_conn, uid)
        assert disk_boot_orders(dom.XMLDesc(0))[f"cdrom:{cached}"] == "1"
        log = idir / "console.log"
        wait_for_console(log, lambda t: SHELL in t, BOOT_TIMEOUT, interval=1.0)
        console = Console(libvirt_qemu_conn, dom, log)
        console.type("")
        (dev,) = [d for d in ("sr0", "sr1") if console.ok(_label_on(d), timeout=60)]
        assert console.ok(_readable(dev), timeout=60)
        # The "installer": the test image from the CD onto the blank root disk.
        assert console.ok(f"mkdir -p /mnt/cd && mount -t iso9660 -o ro /dev/{dev} /mnt/cd && "
                          "dd if=$(ls /mnt/cd/* | grep -i boot.img) of=/dev/vda bs=1M "
                          "conv=fsync && umount /mnt/cd", timeout=300)

        out = plugin(editor, "eject", name)
        assert out.returncode == 0, (out.stdout, out.stderr)
        assert "ejected the CD-ROM" in out.stdout and "powerState Running" in out.stdout
        # the guest sees its drive empty at once
        assert not console.ok(_label_on(dev), timeout=60)
        assert not console.ok(_readable(dev), timeout=60)
        live = disk_boot_orders(dom.XMLDesc(0))
        assert "cdrom:" in live and f"cdrom:{cached}" not in live, live
        config = disk_boot_orders(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
        assert config["disk"] == "1" and config["cdrom:"] is None, config
        status = harness.get(name)["status"]
        assert status["cdrom"]["ejected"] is True
        assert status["actions"][-1]["action"] == "eject"
        assert status["actions"][-1]["result"] == "Success"
        assert not (idir / "cdrom.iso").is_symlink() and cached.exists()
        probes = console.n  # the log keeps the first boot's answers: new tags go on
        console.close()
        console = None

        # A hard restart starts the definition: the root disk boots.
        text = log.read_text(errors="replace")
        booted, shells = text.count(BOOTED_MARKER), text.count(SHELL)
        out = plugin(editor, "restart", name)
        assert out.returncode == 0, (out.stdout, out.stderr)
        wait_for_console(log, lambda t: t.count(BOOTED_MARKER) > booted
                         and t.count(SHELL) > shells, BOOT_TIMEOUT, interval=1.0)
        dom = domain_by_uuid(libvirt_qemu_conn, uid)
        live = disk_boot_orders(dom.XMLDesc(0))
        assert live["disk"] == "1" and live["cdrom:"] is None, live
        assert str(cached) not in dom.XMLDesc(0)
        console = Console(libvirt_qemu_conn, dom, log)
        console.n = probes
        console.type("")
        assert not any(console.ok(_label_on(d), timeout=60) for d in ("sr0", "sr1"))
        assert not console.ok(_readable(dev), timeout=60)
        assert harness.get(name)["status"]["cdrom"]["ejected"] is True
    finally:
        if console is not None:
            console.close()
        # deleted first: the agent, still running, would define again a domain
        # of an Instance that is still there
        if harness.get(name) is not None:
            harness.delete(name)
            wait_for(lambda: harness.get(name) is None, 120, what=f"{name} deleted")
        remove_domain(libvirt_qemu_conn, f"{harness.ns}.{name}")
