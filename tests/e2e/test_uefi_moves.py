"""A UEFI guest's variable store moves with it: Kova's test image as an
Image with ``properties.firmware: uefi`` under QEMU with OVMF, on a
two-host stack whose agents each drive a libvirtd of the two-host test bed
(each its own Instance directory), moved by a kova-edit user with
``kubectl kova migrate``.

At its first boot OVMF writes its boot entries and other variables into the
Instance's ``nvram.fd`` (libvirt made it from the firmware's template), so
the store differs from the template.  Then:

1. the guest stopped, a cold migration: the destination's store is the
   source's byte for byte (sha256) before anything started there; after the
   confirm the source's copy is gone with its Instance directory;
2. the guest started on the new host (it boots from the moved store), then
   live-migrated back: the store the destination ends with is the one the
   guest had on its source (QEMU carries the flash contents in the
   migration stream and writes them into the destination's file), in the
   destination's Instance directory; the source's copy is gone;
3. the guest stopped, a resize to a larger Flavor (on whichever host the
   scheduler picks) and its revert: the store is the guest's, byte for
   byte, after each, and the guest boots from it once started again.
"""

from __future__ import annotations

import hashlib
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import libvirt
import pytest

from kova.dev.twohost import TwoHosts
from tests.e2e.test_access import Session
from tests.e2e.test_cold_migration import booted_guest
from tests.helpers import wait_for
from tests.support.stacks import BedStack, bed_stack, temp_namespace

SHELL = "KOVA-SHELL: ttyS0"


@pytest.fixture(scope="module")
def ns(kubectl):
    with temp_namespace(kubectl, "uefimove-e2e") as name:
        yield name


@pytest.fixture(scope="module")
def stack(k8s, kova_crds, kova_api, libvirtd, two_hosts: TwoHosts, test_image, ns,
          tmp_path_factory):
    with bed_stack(k8s, kova_api, two_hosts, ns, tmp_path_factory.mktemp("uefimove-stack"), "uf",
                   operator_args=["--resize-confirm-window", "0"]) as started:
        yield started


@pytest.fixture(scope="module")
def vm(stack, kova_api, test_image, k8s, kubectl, ns) -> Iterator[Session]:
    # 256 MiB: with less, OVMF leaves syslinux.efi no room for the kernel.
    with booted_guest(k8s, kubectl, ns, stack.root, test_image, "uf", "uefi-mover",
                      memory_mib=256, properties={"firmware": "uefi"}) as session:
        yield session


def nvram(stack: BedStack, host: str, uid: str) -> Path:
    return stack.root / "instances" / host / uid / "nvram.fd"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def os_element(stack: BedStack, host: str, uid: str) -> ET.Element | None:
    """The ``<os>`` of ``uid``'s domain on ``host`` (None: no domain there)."""
    conn = libvirt.open(stack.libvirt_uris[host])
    try:
        try:
            xml = conn.lookupByUUIDString(uid).XMLDesc(0)
        except libvirt.libvirtError:
            return None
        return ET.fromstring(xml).find("os")
    finally:
        conn.close()


def where(vm: Session, stack: BedStack) -> tuple[str, str, str]:
    obj = vm.obj()
    uid, host = obj["metadata"]["uid"], obj["status"]["host"]
    return uid, host, next(h for h in stack.hosts if h != host)


def test_cold_migration_takes_the_variable_store_along(stack, vm) -> None:
    uid, source, dest = where(vm, stack)
    os_el = os_element(stack, source, uid)
    assert os_el is not None and os_el.findtext("nvram") == str(nvram(stack, source, uid))
    template = Path(os_el.find("nvram").get("template"))
    # OVMF wrote its variables at the first boot: not the template any more
    assert sha256(nvram(stack, source, uid)) != sha256(template)

    code, out, _ = vm.kova("stop", "vm")
    assert code == 0 and "powerState Shutdown" in out, out
    before = sha256(nvram(stack, source, uid))
    code, out, err = vm.kova("migrate", "vm", "--timeout", "300", timeout=360)
    assert code == 0, (out, err)
    mig = vm.obj()["status"]["migration"]
    assert (mig["step"], mig["mode"], mig["destHost"]) == ("Verify", "cold", dest), mig
    # stopped before the move, so nothing ran on the destination yet
    assert sha256(nvram(stack, dest, uid)) == before
    assert os_element(stack, dest, uid).findtext("nvram") == str(nvram(stack, dest, uid))

    code, out, err = vm.kova("resize", "vm", "--confirm")
    assert code == 0, (out, err)
    wait_for(lambda: os_element(stack, source, uid) is None, 60, 1.0,
             "the source's kept copy removed after the confirm")
    assert not nvram(stack, source, uid).exists()
    assert sha256(nvram(stack, dest, uid)) == before


def test_live_migration_keeps_the_variables_the_guest_had(stack, vm) -> None:
    uid, source, dest = where(vm, stack)
    shells = vm.console_log().count(SHELL)
    code, out, _ = vm.kova("start", "vm")
    assert code == 0 and "powerState Running" in out, out
    vm.wait_log(SHELL, shells + 1)  # booted from the variable store it brought along
    before = sha256(nvram(stack, source, uid))

    code, out, err = vm.kova("migrate", "vm", "--live", "--timeout", "300", timeout=360)
    assert code == 0, (out, err)
    obj = vm.obj()
    assert obj["status"]["host"] == dest and "migration" not in obj["status"]
    assert os_element(stack, dest, uid).findtext("nvram") == str(nvram(stack, dest, uid))
    # The destination's file starts as libvirt's copy of the template; QEMU
    # writes the guest's flash contents into it when the guest runs there.
    wait_for(lambda: nvram(stack, dest, uid).exists()
             and sha256(nvram(stack, dest, uid)) == before, 30, 0.5,
             "the guest's variable store on the destination")
    assert os_element(stack, source, uid) is None
    assert not nvram(stack, source, uid).exists()


def test_resize_and_its_revert_keep_the_variable_store(stack, vm, kubectl, ns) -> None:
    uid, host, _ = where(vm, stack)
    bigger = f"uf-big-{ns[-5:]}"
    kubectl("apply", "-f", "-", input=f"""
apiVersion: kova.dev/v1alpha1
kind: Flavor
metadata: {{name: {bigger}}}
spec: {{vcpus: 1, memoryMiB: 320, diskGiB: 2}}
""")
    try:
        code, out, _ = vm.kova("stop", "vm")
        assert code == 0 and "powerState Shutdown" in out, out
        before = sha256(nvram(stack, host, uid))

        code, out, err = vm.kova("resize", "vm", "--flavor", bigger, "--timeout", "300",
                                 timeout=360)
        assert code == 0, (out, err)
        obj = vm.obj()
        mig, now = obj["status"]["migration"], obj["status"]["host"]
        assert mig["step"] == "Verify", mig
        assert obj["status"]["resources"]["memoryMiB"] == 320, obj["status"]
        # on this host or another (the scheduler's choice): the store the guest had
        assert os_element(stack, now, uid).findtext("nvram") == str(nvram(stack, now, uid))
        assert sha256(nvram(stack, now, uid)) == before

        code, out, err = vm.kova("resize", "vm", "--revert")
        assert code == 0, (out, err)
        wait_for(lambda: "migration" not in (o := vm.obj())["status"]
                 and o["status"]["host"] == host, 180, 1.0, "the resize reverted")
        assert vm.obj()["status"]["resources"]["memoryMiB"] == 256
        assert os_element(stack, host, uid).findtext("nvram") == str(nvram(stack, host, uid))
        assert sha256(nvram(stack, host, uid)) == before
        if now != host:
            wait_for(lambda: os_element(stack, now, uid) is None
                     and not nvram(stack, now, uid).exists(), 60, 1.0,
                     "the destination's copy removed by the revert")

        shells = vm.console_log().count(SHELL)
        code, out, _ = vm.kova("start", "vm")
        assert code == 0 and "powerState Running" in out, out
        vm.wait_log(SHELL, shells + 1)  # boots from the variable store it kept
    finally:
        kubectl("delete", "flavor", bigger, check=False)
