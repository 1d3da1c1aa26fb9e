"""The live migration primitive's pure parts: flags, the disks it copies, the
destination XML's path rewrite, the status fields (the migration itself is
tested on the two-host bed: tests/e2e/test_live_migration.py)."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import libvirt

from kova.agents.virt import migration as mig

XML = """<domain type='qemu'><name>g</name><devices>
  <disk type='file' device='disk'><source file='/a/g/disk.qcow2'/><target dev='vda'/></disk>
  <disk type='file' device='disk'><source file='/a/g/data.qcow2'/><target dev='vdb'/></disk>
  <disk type='file' device='disk'><source file='/shared/x'/><target dev='vdc'/><shareable/></disk>
  <disk type='file' device='cdrom'><source file='/a/g/seed.iso'/><target dev='hdc'/><readonly/></disk>
  <disk type='file' device='cdrom'><target dev='hdd'/></disk>
  <serial type='pty'><log file='/a/g/console.log'/></serial>
</devices></domain>"""


def test_flags_default_and_options() -> None:
    flags = mig.migration_flags(mig.LiveMigrationOptions())
    for f in (libvirt.VIR_MIGRATE_LIVE, libvirt.VIR_MIGRATE_PEER2PEER,
              libvirt.VIR_MIGRATE_NON_SHARED_DISK, libvirt.VIR_MIGRATE_PERSIST_DEST,
              libvirt.VIR_MIGRATE_AUTO_CONVERGE):
        assert flags & f
    assert not flags & libvirt.VIR_MIGRATE_POSTCOPY
    # Never the source's definition removed by libvirt: the primitive reads
    # the completed statistics first, then undefines it itself.
    assert not flags & libvirt.VIR_MIGRATE_UNDEFINE_SOURCE
    other = mig.migration_flags(mig.LiveMigrationOptions(auto_converge=False, post_copy=True))
    assert other & libvirt.VIR_MIGRATE_POSTCOPY and not other & libvirt.VIR_MIGRATE_AUTO_CONVERGE


def test_copied_disks_are_the_writable_unshared_ones() -> None:
    assert mig.copied_disks(XML) == ["vda", "vdb"]


def test_rewrite_paths_changes_only_mapped_sources() -> None:
    out = mig.rewrite_paths(XML, {"/a/g/disk.qcow2": "/b/g/disk.qcow2",
                                  "/a/g/console.log": "/b/g/console.log"})
    root = ET.fromstring(out)
    files = [s.get("file") for s in root.iter("source")]
    assert files == ["/b/g/disk.qcow2", "/a/g/data.qcow2", "/shared/x", "/a/g/seed.iso"]
    assert root.find("./devices/serial/log").get("file") == "/b/g/console.log"
    assert mig.rewrite_paths(XML, {}) == XML


def test_rewrite_paths_moves_the_uefi_variable_store() -> None:
    """A UEFI guest's ``<nvram>`` names a file of the source's Instance
    directory: the destination's XML names its own (libvirt would otherwise
    have the destination write into the source's path, which the source
    removes at the end)."""
    xml = ("<domain><os firmware='efi'><loader readonly='yes' type='pflash'>/fw/CODE.fd</loader>"
           "<nvram template='/fw/VARS.fd'>/a/g/nvram.fd</nvram></os><devices/></domain>")
    root = ET.fromstring(mig.rewrite_paths(xml, {"/a/g/nvram.fd": "/b/g/nvram.fd"}))
    assert root.findtext("./os/nvram") == "/b/g/nvram.fd"
    assert root.find("./os/nvram").get("template") == "/fw/VARS.fd"
    assert root.findtext("./os/loader") == "/fw/CODE.fd"


def test_progress_from_stats_and_status_fields() -> None:
    p = mig.MigrationProgress.from_stats(mig.COPYING_MEMORY, {
        "type": 2, "time_elapsed": 1500, "memory_total": 100, "memory_remaining": 40,
        "memory_iteration": 2, "disk_total": 64, "disk_remaining": 0})
    assert p.as_status() == {"phase": "CopyingMemory", "elapsedMs": 1500,
                             "memoryRemainingBytes": 40, "memoryTotalBytes": 100,
                             "diskRemainingBytes": 0, "diskTotalBytes": 64, "iteration": 2}
    p.downtime_ms = 120
    assert p.as_status()["downtimeMs"] == 120


def test_abort_handle() -> None:
    abort = mig.Abort()
    assert not abort.requested
    abort()
    assert abort.requested
