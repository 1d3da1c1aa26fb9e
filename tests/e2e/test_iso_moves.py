"""An Instance booted from an iso Image keeps its CD-ROM when it moves:
the bootable ISO of ``test_boot_iso`` as an Image of format iso, on a
two-host stack whose agents each drive a libvirtd of the two-host test bed
(each its own Instance directory and image cache), moved by a kova-edit
user with ``kubectl kova migrate``.

The guest boots from the CD (its root disk is blank) and writes a marker
onto its root disk.  Then:

1. a cold migration (the guest running): the destination fetched the ISO
   into its own cache and verified it; its domain's CD-ROM names that
   cached file (never the source's), first in the boot order; the guest
   boots there from the CD again, sees it, and reads the marker from the
   disk that moved; after the confirm nothing of the Instance is left on
   the source;
2. a live migration back: the destination prepared its own cached copy of
   the ISO before the guest came, the CD-ROM's path was rewritten to it,
   the guest (not rebooted) still reads the CD and the marker; nothing is
   left on the source;
3. a cold migration to a host that cannot use the ISO (its cached copy
   gone, as the cache evicts an ISO no Instance there uses, and the
   Image's file replaced by one that is no ISO): the guest keeps running on its host, a
   ``DestinationNotReady`` Warning Event says why, the move waits at step
   Moving; once the file is an ISO again the move goes through, and its
   revert brings the guest back with its own CD-ROM.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import libvirt
import pytest

from kova.dev.twohost import TwoHosts
from tests.e2e.test_access import Session
from tests.e2e.test_boot_iso import LABEL, bootable_iso
from tests.e2e.test_cold_migration import SECTOR, booted_guest, on_console
from tests.helpers import disk_boot_orders, wait_for
from tests.support.stacks import BedStack, bed_stack, temp_namespace

SHELL = "KOVA-SHELL: ttyS0"
#: The guest's count of CD-ROM drives showing the ISO's volume label.
SEES_CD = (f"echo CDS=$(for d in /dev/sr*; do dd if=$d bs=1 skip=32808 count=13 "
           f"2>/dev/null; echo; done | grep -c {LABEL})")
READ_MARK = (f"echo GOT=$(dd if=/dev/vda bs=512 skip={SECTOR} count=1 2>/dev/null "
             "| head -c 22)")


@pytest.fixture(scope="module")
def ns(kubectl):
    with temp_namespace(kubectl, "isomove-e2e") as name:
        yield name


@pytest.fixture(scope="module")
def stack(k8s, kova_crds, kova_api, libvirtd, two_hosts: TwoHosts, test_image, ns,
          tmp_path_factory):
    with bed_stack(k8s, kova_api, two_hosts, ns, tmp_path_factory.mktemp("isomove-stack"), "im",
                   operator_args=["--resize-confirm-window", "0"]) as started:
        yield started


@pytest.fixture(scope="module")
def iso(test_image, ns) -> Iterator[Path]:
    """This module's copy of the bootable ISO (the last test spoils it for a
    while), in the agents' image directory."""
    shared = bootable_iso(test_image)
    own = shared.with_name(f"kova-test-isomove-{ns}.iso")
    shutil.copyfile(shared, own)
    try:
        yield own
    finally:
        own.unlink(missing_ok=True)


@pytest.fixture(scope="module")
def vm(stack, kova_api, iso, k8s, kubectl, ns) -> Iterator[Session]:
    with booted_guest(k8s, kubectl, ns, stack.root, iso, "im", "iso-mover",
                      image_format="iso") as session:
        yield session


def instance_dir(stack: BedStack, host: str, uid: str) -> Path:
    return stack.root / "instances" / host / uid


def cdroms(stack: BedStack, host: str, uid: str) -> dict[str, str | None] | None:
    """The CD-ROMs of ``uid``'s domain on ``host``: source file -> boot
    order (None: no domain there)."""
    conn = libvirt.open(stack.libvirt_uris[host])
    try:
        try:
            xml = conn.lookupByUUIDString(uid).XMLDesc(0)
        except libvirt.libvirtError:
            return None
    finally:
        conn.close()
    return {d.find("source").get("file"): (d.find("boot").get("order")
                                           if d.find("boot") is not None else None)
            for d in ET.fromstring(xml).findall("devices/disk[@device='cdrom']")}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def assert_cd_from_own_cache(stack: BedStack, host: str, uid: str, iso: Path) -> Path:
    """``host``'s domain boots from its own cached copy of ``iso`` (linked
    as the Instance's cdrom.iso there); that file."""
    cached = Path((instance_dir(stack, host, uid) / "cdrom.iso").readlink())
    assert cached.is_relative_to(stack.root / "instances" / host), cached
    assert sha256(cached) == sha256(iso)
    cds = cdroms(stack, host, uid)
    assert cds is not None and cds.get(str(cached)) == "1", cds
    other = [h for h in stack.hosts if h != host][0]
    assert not any(p.startswith(str(stack.root / "instances" / other)) for p in cds), cds
    return cached


def where(vm: Session, stack: BedStack) -> tuple[str, str, str]:
    obj = vm.obj()
    uid, host = obj["metadata"]["uid"], obj["status"]["host"]
    return uid, host, next(h for h in stack.hosts if h != host)


def test_cold_migration_fetches_the_iso_on_the_destination(stack, vm, iso, kubectl) -> None:
    uid, source, dest = where(vm, stack)
    assert_cd_from_own_cache(stack, source, uid, iso)
    assert on_console(vm, SEES_CD, r"CDS=(\d+)") == "1"
    marker = f"KOVA-DISK-{uuid.uuid4().hex[:12]}"
    wrote = on_console(vm, f"echo {marker} | dd of=/dev/vda bs=512 seek={SECTOR} conv=fsync "
                       "2>/dev/null && echo WROTE=$?", r"WROTE=(\d+)")
    assert wrote == "0"

    code, out, err = vm.kova("migrate", "vm", "--timeout", "300", timeout=360)
    assert code == 0, (out, err)
    obj = vm.obj()
    mig = obj["status"]["migration"]
    assert (mig["step"], mig["mode"], mig["destHost"]) == ("Verify", "cold", dest), mig
    assert_cd_from_own_cache(stack, dest, uid, iso)
    img = json.loads(kubectl("get", "image", obj["spec"]["imageRef"]["name"], "-o",
                             "json").stdout)
    assert dest in (img["status"].get("cachedOn") or []), img["status"]

    vm.wait_log(SHELL)  # the destination's console log: booted from the CD again
    assert on_console(vm, SEES_CD, r"CDS=(\d+)") == "1"
    assert on_console(vm, READ_MARK, r"GOT=(KOVA-DISK-[0-9a-f]{12})") == marker

    code, out, err = vm.kova("resize", "vm", "--confirm")
    assert code == 0, (out, err)
    wait_for(lambda: cdroms(stack, source, uid) is None, 60, 1.0,
             "the source's kept copy removed after the confirm")
    wait_for(lambda: not instance_dir(stack, source, uid).exists(), 60, 1.0,
             "the source's Instance directory removed")


def test_live_migration_points_the_cdrom_at_the_destinations_cache(stack, vm, iso) -> None:
    uid, source, dest = where(vm, stack)
    vm.wait_power("Running")
    marker = on_console(vm, READ_MARK, r"GOT=(KOVA-DISK-[0-9a-f]{12})")
    alive = f"KOVA-MEM-{uuid.uuid4().hex[:12]}"  # in the guest's memory only
    assert on_console(vm, f"echo {alive} > /live-mark && echo PUT=$?", r"PUT=(\d+)") == "0"

    code, out, err = vm.kova("migrate", "vm", "--live", "--timeout", "300", timeout=360)
    assert code == 0, (out, err)
    obj = vm.obj()
    assert obj["status"]["host"] == dest and "migration" not in obj["status"], obj["status"]
    assert_cd_from_own_cache(stack, dest, uid, iso)
    # the same guest, not booted again: it still reads the CD and its disk
    assert on_console(vm, "echo MEM=$(cat /live-mark)", r"MEM=(KOVA-MEM-[0-9a-f]{12})") == alive
    assert on_console(vm, SEES_CD, r"CDS=(\d+)") == "1"
    assert on_console(vm, READ_MARK, r"GOT=(KOVA-DISK-[0-9a-f]{12})") == marker
    assert cdroms(stack, source, uid) is None
    assert not instance_dir(stack, source, uid).exists()


def events(kubectl, ns: str, reason: str) -> list[dict]:
    out = kubectl("-n", ns, "get", "events", "--field-selector", f"reason={reason}", "-o",
                  "json").stdout
    return json.loads(out)["items"]


def test_a_destination_that_cannot_use_the_iso_leaves_the_guest_running(
        stack, vm, iso, kubectl, ns) -> None:
    uid, source, dest = where(vm, stack)
    cached = Path((instance_dir(stack, source, uid) / "cdrom.iso").readlink())
    base = stack.root / "instances" / dest / "_base"
    for leftover in (base / cached.name, base / f"{cached.name}.json"):
        leftover.unlink(missing_ok=True)  # what the cache's eviction does
    # Replaced by a rename, as an Image's file must be (the caches hard-link it)
    kept = iso.with_name(f"{iso.name}.kept")
    os.rename(iso, kept)
    junk = iso.with_name(f".{iso.name}.junk")
    junk.write_bytes(b"not an ISO 9660 image\n" * 4096)
    os.replace(junk, iso)
    try:
        vm.kova("migrate", "vm", "--timeout", "30", timeout=120)  # it waits, then gives up
        seen = wait_for(lambda: events(kubectl, ns, "DestinationNotReady"), 120, 2.0,
                        "a DestinationNotReady Event")
        message = seen[-1]["message"]
        assert "cannot use the Instance's ISO" in message and "ImageInvalid" in message, message
        assert "keeps running" in message, message
        obj = vm.obj()
        assert obj["status"]["host"] == source and obj["status"]["migration"]["step"] == "Moving"
        assert obj["status"]["powerState"] == "Running", obj["status"]
        assert cdroms(stack, dest, uid) is None
        assert on_console(vm, SEES_CD, r"CDS=(\d+)") == "1"  # still up, with its CD
    finally:
        os.replace(kept, iso)
    # the agent tries again (back-off of at most 30 s): now it goes through
    wait_for(lambda: (vm.obj()["status"].get("migration") or {}).get("step") == "Verify",
             300, 2.0, "the move at step Verify")
    assert_cd_from_own_cache(stack, dest, uid, iso)

    code, out, err = vm.kova("resize", "vm", "--revert")
    assert code == 0, (out, err)
    wait_for(lambda: "migration" not in (o := vm.obj())["status"]
             and o["status"]["host"] == source, 180, 1.0, "the move reverted")
    vm.wait_power("Running")
    assert_cd_from_own_cache(stack, source, uid, iso)
    wait_for(lambda: cdroms(stack, dest, uid) is None
             and not instance_dir(stack, dest, uid).exists(), 60, 1.0,
             "the destination's copy removed by the revert")


def has_domain(stack: BedStack, host: str, uid: str) -> bool:
    conn = libvirt.open(stack.libvirt_uris[host])
    try:
        conn.lookupByUUIDString(uid)
        return True
    except libvirt.libvirtError:
        return False
    finally:
        conn.close()


def disks(stack: BedStack, host: str, uid: str, flags: int = 0) -> dict[str, str | None]:
    """Every disk of ``uid``'s domain on ``host``: ``disk`` or ``cdrom:<file or
    empty>`` -> boot order."""
    conn = libvirt.open(stack.libvirt_uris[host])
    try:
        return disk_boot_orders(conn.lookupByUUIDString(uid).XMLDesc(flags))
    finally:
        conn.close()


def test_an_ejected_cdrom_stays_empty_through_live_and_cold_migration(stack, vm, iso) -> None:
    """Last of the module: the guest ejects its CD (kubectl kova eject), then
    moves live and cold; no host links or fetches the ISO for it again, and
    each definition has the empty drive with the root disk first."""
    uid, source, dest = where(vm, stack)
    vm.wait_power("Running")
    assert on_console(vm, SEES_CD, r"CDS=(\d+)") == "1"
    code, out, err = vm.kova("eject", "vm")
    assert code == 0 and "ejected the CD-ROM" in out, (out, err)
    assert on_console(vm, SEES_CD, r"CDS=(\d+)") == "0"
    assert vm.obj()["status"]["cdrom"]["ejected"] is True
    assert not (instance_dir(stack, source, uid) / "cdrom.iso").is_symlink()
    inactive = disks(stack, source, uid, libvirt.VIR_DOMAIN_XML_INACTIVE)
    assert inactive["disk"] == "1" and inactive["cdrom:"] is None, inactive

    code, out, err = vm.kova("migrate", "vm", "--live", "--timeout", "300", timeout=360)
    assert code == 0, (out, err)
    assert vm.obj()["status"]["host"] == dest
    live = disks(stack, dest, uid)
    assert "cdrom:" in live and not any(k.startswith("cdrom:/") and "seed" not in k
                                        for k in live), live
    inactive = disks(stack, dest, uid, libvirt.VIR_DOMAIN_XML_INACTIVE)
    assert inactive["disk"] == "1" and inactive["cdrom:"] is None, inactive
    assert not (instance_dir(stack, dest, uid) / "cdrom.iso").exists()
    assert on_console(vm, SEES_CD, r"CDS=(\d+)") == "0"  # the same guest, still empty

    # Cold, back: the destination defines the domain from the record.
    code, out, err = vm.kova("migrate", "vm", "--timeout", "300", timeout=360)
    assert code == 0, (out, err)
    back = disks(stack, source, uid)
    assert back["disk"] == "1" and back["cdrom:"] is None, back
    assert not (instance_dir(stack, source, uid) / "cdrom.iso").exists()
    code, out, err = vm.kova("resize", "vm", "--confirm")
    assert code == 0, (out, err)
    # the copy kept on the other host goes with the confirm (the module's
    # teardown stops the agents soon after: a copy left would outlive it)
    wait_for(lambda: not has_domain(stack, dest, uid)
             and not instance_dir(stack, dest, uid).exists(), 60, 1.0,
             "the kept copy removed by the confirm")
