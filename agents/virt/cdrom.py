"""The CD-ROM of a domain booted from an iso Image, and ejecting its ISO
(``kubectl kova eject``): pure functions over the domain XML, and
:func:`eject` through the driver.

The ISO's drive is the CD-ROM that is not the NoCloud seed (whose file the
caller names).  Ejected, it stays in the domain, empty (no ``<source>``),
and the root disk is first in the boot order: what
:func:`~kova.agents.virt.domain.build_domain_xml` writes for
``DomainSpec.cdrom_ejected``.  libvirt's change-media keeps a device's boot
order, so a defined domain's persistent XML is rewritten for its next start.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

import libvirt

from kova.agents.virt.domain import DomainSpecError
from kova.agents.virt.driver import DriverError, LibvirtDriver


def iso_cdrom(root: ET.Element, seed_path: str | None) -> ET.Element | None:
    """The ``<disk device='cdrom'>`` of the ISO the guest boots from in a
    domain's XML (parsed): the CD-ROM that is not the NoCloud seed
    (``seed_path``), holding a medium or ejected; None if there is none."""
    for disk in root.findall("./devices/disk[@device='cdrom']"):
        source = disk.find("source")
        if source is None or source.get("file") != seed_path:
            return disk
    return None


def cdrom_medium(xml: str, seed_path: str | None) -> str | None:
    """The file in the ISO CD-ROM of domain ``xml`` (None: no such drive, or
    it is empty)."""
    cd = iso_cdrom(ET.fromstring(xml), seed_path)
    source = cd.find("source") if cd is not None else None
    return source.get("file") if source is not None else None


def cdrom_ejected(xml: str, seed_path: str | None) -> bool:
    """Whether domain ``xml`` has its ISO CD-ROM empty and out of the boot
    order (as :func:`eject_cdrom_xml` leaves it).  Raises
    :class:`DomainSpecError` when the domain has no such drive."""
    cd = iso_cdrom(ET.fromstring(xml), seed_path)
    if cd is None:
        raise DomainSpecError("the domain has no CD-ROM besides the seed")
    source = cd.find("source")  # a live domain's empty drive may keep a <source/>
    return (source is None or not source.get("file")) and cd.find("boot") is None


def ejected_cdrom_device(xml: str, seed_path: str | None) -> str:
    """The ISO CD-ROM's ``<disk>`` of domain ``xml`` without its medium: the
    device XML for libvirt's change-media (``updateDeviceFlags``), which
    keeps everything else (target, address, boot order) as it is.  Raises
    :class:`DomainSpecError` when the domain has no such drive."""
    cd = iso_cdrom(ET.fromstring(xml), seed_path)
    if cd is None:
        raise DomainSpecError("the domain has no CD-ROM besides the seed")
    for source in cd.findall("source"):
        cd.remove(source)
    return ET.tostring(cd, encoding="unicode")


def eject_cdrom_xml(xml: str, seed_path: str | None) -> str:
    """Domain ``xml`` (its persistent definition) with the ISO CD-ROM empty
    and the root disk first in the boot order, as :func:`build_domain_xml`
    writes an ejected Instance (libvirt's change-media keeps a device's boot
    order, so the definition is rewritten for the next start)."""
    root = ET.fromstring(xml)
    cd = iso_cdrom(root, seed_path)
    if cd is None:
        raise DomainSpecError("the domain has no CD-ROM besides the seed")
    for el in cd.findall("source") + cd.findall("boot"):
        cd.remove(el)
    for disk in root.findall("./devices/disk[@device='disk']"):
        boot = disk.find("boot")
        if boot is not None:
            boot.set("order", "1")
    return ET.tostring(root, encoding="unicode")


def eject(driver: LibvirtDriver, uid: str, seed_path: str | None) -> bool:
    """Eject the ISO from domain ``uid``'s CD-ROM: libvirt's change-media on
    a running or paused domain (``updateDeviceFlags`` of the drive without a
    ``<source>``, LIVE), then the persistent definition rewritten with the
    drive empty and the root disk first in the boot order.  False when it
    was empty already (live and defined); raises :class:`DriverError`."""
    done: list[str] = []

    def change(d: libvirt.virDomain) -> None:
        if d.isActive():
            live = d.XMLDesc(0)
            if cdrom_medium(live, seed_path) is not None:
                d.updateDeviceFlags(ejected_cdrom_device(live, seed_path),
                                    libvirt.VIR_DOMAIN_AFFECT_LIVE)
                done.append("live")
        config = d.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
        if not cdrom_ejected(config, seed_path):
            d.connect().defineXML(eject_cdrom_xml(config, seed_path))
            done.append("config")

    try:
        driver._op(uid, "eject the CD-ROM of", change)
    except DomainSpecError as exc:
        raise DriverError(f"eject the CD-ROM of {uid}: {exc}") from exc
    return bool(done)
