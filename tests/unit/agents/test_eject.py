"""Ejecting an ISO-booted Instance's CD-ROM: the domain XML the builder
writes once ``status.cdrom.ejected`` is recorded, the rewrite of a defined
domain's XML, and the driver on libvirt's fake hypervisor (test:///default,
a defined domain: change-media of a running guest needs QEMU, see
tests/e2e/test_eject_iso.py)."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from kova.agents.instance.build import cdrom_ejected
from kova.agents.virt.cdrom import cdrom_ejected as xml_ejected
from kova.agents.virt.cdrom import cdrom_medium, eject, eject_cdrom_xml, ejected_cdrom_device
from kova.agents.virt.domain import DomainSpecError, build_domain_xml
from kova.agents.virt.driver import DriverError, LibvirtDriver, start_event_loop
from tests.helpers import disk_boot_orders

ISO = "/cache/abc.iso"


@pytest.mark.parametrize("machine", ["pc", "q35"])
def test_ejected_instance_gets_an_empty_drive_and_boots_its_root_disk(make_spec, machine):
    ins = make_spec(machine=machine, cdrom_path=ISO)
    inserted = build_domain_xml(ins)
    spec = make_spec(machine=machine, cdrom_ejected=True)
    ejected = build_domain_xml(spec)
    seed = f"cdrom:{spec.seed_path}"
    assert disk_boot_orders(ejected) == {"disk": "1", seed: None, "cdrom:": None}
    assert ISO not in ejected
    # the empty drive is where the ISO was (same bus and target device)
    def target(xml, source):
        for d in ET.fromstring(xml).findall("devices/disk[@device='cdrom']"):
            s = d.find("source")
            if (s.get("file") if s is not None else None) == source:
                return d.find("target").attrib
    assert target(ejected, None) == target(inserted, ISO)
    assert ET.fromstring(ejected).find("os/boot") is None
    assert cdrom_medium(ejected, spec.seed_path) is None
    assert cdrom_medium(inserted, ins.seed_path) == ISO


def test_eject_rewrites_a_definition_like_the_builder_writes_it(make_spec):
    spec = make_spec(cdrom_path=ISO)
    xml = build_domain_xml(spec)
    assert not xml_ejected(xml, spec.seed_path)
    assert disk_boot_orders(xml)["disk"] == "2" and disk_boot_orders(xml)[f"cdrom:{ISO}"] == "1"
    new = eject_cdrom_xml(xml, spec.seed_path)
    assert xml_ejected(new, spec.seed_path)
    assert disk_boot_orders(new) == disk_boot_orders(build_domain_xml(
        make_spec(uid=spec.meta.uid, name=spec.meta.name, cdrom_ejected=True,
                  seed_path=spec.seed_path)))
    # the seed CD-ROM is never the one ejected
    assert cdrom_medium(new, spec.seed_path) is None and spec.seed_path in new
    # change-media's device: the same drive, target kept, no <source>
    dev = ET.fromstring(ejected_cdrom_device(xml, spec.seed_path))
    assert dev.find("source") is None and dev.find("target").get("dev") == "hda"
    assert dev.find("boot").get("order") == "1"  # libvirt keeps a device's boot order


def test_a_domain_without_an_iso_drive_has_nothing_to_eject(make_spec):
    spec = make_spec()
    xml = build_domain_xml(spec)
    assert cdrom_medium(xml, spec.seed_path) is None
    for fn in (eject_cdrom_xml, ejected_cdrom_device, xml_ejected):
        with pytest.raises(DomainSpecError, match="no CD-ROM besides the seed"):
            fn(xml, spec.seed_path)


def test_the_record_the_builder_reads():
    assert cdrom_ejected({"status": {"cdrom": {"ejected": True}}})
    assert not cdrom_ejected({"status": {"cdrom": {"ejected": False}}})
    assert not cdrom_ejected({"status": {}}) and not cdrom_ejected({})


@pytest.fixture
def driver():
    start_event_loop()
    drv = LibvirtDriver("test:///default")
    yield drv
    for info in drv.list_domains():
        drv.undefine(info.uuid)
    drv.close()


def test_driver_ejects_a_defined_domain_once(driver, make_spec):
    spec = make_spec(cdrom_path=ISO)
    driver.define(build_domain_xml(spec))
    assert eject(driver, spec.meta.uid, spec.seed_path) is True
    info = driver.get(spec.meta.uid)
    assert info is not None and cdrom_medium(info.xml, spec.seed_path) is None
    assert xml_ejected(info.xml, spec.seed_path)
    assert disk_boot_orders(info.xml)["disk"] == "1"
    assert eject(driver, spec.meta.uid, spec.seed_path) is False  # already empty


def test_driver_refuses_a_domain_without_an_iso_drive(driver, make_spec):
    spec = make_spec()
    driver.define(build_domain_xml(spec))
    with pytest.raises(DriverError, match="no CD-ROM besides the seed"):
        eject(driver, spec.meta.uid, spec.seed_path)
