"""Image properties reaching the domain, with the agent on the real libvirtd
(an x86_64 host): an aarch64 Image is refused before anything is defined (the
operator's required HW_ARCH_* trait normally keeps it away; this is the
agent's own check), an x86_64 one is built with that architecture; diskBus
sata and scsi give root disks libvirt accepts on that bus."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from kova.crds import names as contract
from tests.fixtures.agents import domain_by_uuid, wait_for


def test_image_architecture_is_checked_against_the_host(harness, small_image,
                                                        libvirt_qemu_conn, tmp_path):
    harness.image("arm", small_image, properties={"architecture": "aarch64"})
    harness.image("x86", small_image, properties={"architecture": "x86_64"})
    harness.agent(libvirt_uri="qemu:///system", domain_type="qemu")
    arm = harness.instance("arm1", "arm", run_strategy="Halted")["metadata"]["uid"]
    x86 = harness.instance("x861", "x86", run_strategy="Halted")["metadata"]["uid"]
    try:
        built = harness.wait_cond("arm1", "Built", "False", timeout=30)
        assert built["message"] == (f"{contract.ERROR_IMAGE_INVALID}: Image arm is for "
                                    "aarch64 (properties.architecture); this host is x86_64")
        assert domain_by_uuid(libvirt_qemu_conn, arm) is None
        harness.wait_cond("x861", "Built", "True", timeout=30)
        root = ET.fromstring(domain_by_uuid(libvirt_qemu_conn, x86).XMLDesc(0))
        assert root.find("os/type").get("arch") == "x86_64"
    finally:
        for name in ("arm1", "x861"):
            harness.delete(name)
        for name in ("arm1", "x861"):
            wait_for(lambda n=name: harness.get(n) is None, 30, what=f"{name} deleted")


@pytest.mark.parametrize("bus", ["sata", "scsi"])
def test_disk_bus_reaches_the_domain(harness, small_image, libvirt_qemu_conn, bus):
    """(and osType: windows, the local-time clock)"""
    harness.image(bus, small_image, properties={"diskBus": bus, "osType": "windows"})
    harness.agent(libvirt_uri="qemu:///system", domain_type="qemu")
    uid = harness.instance("vm", bus, run_strategy="Halted")["metadata"]["uid"]
    try:
        harness.wait_cond("vm", "Built", "True", timeout=30)
        root = ET.fromstring(domain_by_uuid(libvirt_qemu_conn, uid).XMLDesc(0))
        disk = root.find("devices/disk[@device='disk']/target")
        assert disk.get("bus") == bus and disk.get("dev") == "sda"
        assert root.find("clock").get("offset") == "localtime"
    finally:
        harness.delete("vm")
        wait_for(lambda: harness.get("vm") is None, 30, what="vm deleted")
