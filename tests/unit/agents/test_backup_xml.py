"""The backup request for a snapshot's copy: only the root disk is copied,
into a new qcow2; the seed CD-ROM (and any other disk) is left out."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from kova.agents.virt.backup import backup_xml, disk_target
from kova.agents.virt.domain import build_domain_xml


def test_only_the_root_disk_is_backed_up_into_a_qcow2(make_spec, tmp_path):
    spec = make_spec()
    xml = build_domain_xml(spec)
    dev = disk_target(xml, Path(spec.disk_path))
    assert dev == "vda"
    assert disk_target(xml, tmp_path / "elsewhere.qcow2") is None

    target = tmp_path / "snapshot-1.qcow2"
    root = ET.fromstring(backup_xml(xml, dev, target))
    assert root.tag == "domainbackup" and root.get("mode") == "push"
    disks = {d.get("name"): d for d in root.iterfind("./disks/disk")}
    assert set(disks) == {t.get("dev") for t in ET.fromstring(xml).iterfind(
        "./devices/disk/target")} and len(disks) == 2  # the root disk and the seed
    vda = disks.pop("vda")
    assert vda.get("backup") == "yes" and vda.get("type") == "file"
    assert vda.find("target").get("file") == str(target)
    assert vda.find("driver").get("type") == "qcow2"
    assert [d.get("backup") for d in disks.values()] == ["no"]
