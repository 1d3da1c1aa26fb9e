"""A point-in-time copy of a running domain's disk with libvirt's backup API.

:func:`push_backup` starts a full push-mode backup of one disk
(``virDomainBackupBegin``): QEMU puts a copy-before-write filter on the disk
and a backup job copies the disk's whole chain, as it was at the start, into
a new standalone qcow2 (libvirt creates it, with no backing file).  The guest
keeps running the whole time: a guest write to a block not copied yet first
copies the old block to the target.  The call waits for the job's end and
reads its outcome from the completed job's statistics.

A backup job lives in libvirtd and QEMU, not in the caller: if the agent
dies midway the job runs on.  :func:`abort_backup` ends one that is still
running (the agent calls it for each of its domains when it starts, then
removes the half-written targets); the disk itself is never changed by a
backup or by its abort.
"""

from __future__ import annotations

import logging
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

import libvirt

from kova.agents.virt.driver import DriverError, LibvirtDriver

log = logging.getLogger("kova.agents.virt.backup")


class BackupError(DriverError):
    """A backup that could not start or did not complete."""


class BackupUnsupported(BackupError):
    """The hypervisor driver has no backup API (libvirt's test driver)."""


def disk_target(domain_xml: str, source: Path) -> str | None:
    """The target device (``vda``) of the domain's disk whose file is ``source``."""
    want = str(source)
    for disk in ET.fromstring(domain_xml).iterfind("./devices/disk"):
        src = disk.find("source")
        target = disk.find("target")
        if src is not None and target is not None and src.get("file") == want:
            return target.get("dev")
    return None


def backup_xml(domain_xml: str, dev: str, target: Path) -> str:
    """The ``<domainbackup>`` of a full push backup of disk ``dev`` into a new
    qcow2 at ``target``; every other disk of the domain is left out."""
    root = ET.Element("domainbackup", mode="push")
    disks = ET.SubElement(root, "disks")
    for disk in ET.fromstring(domain_xml).iterfind("./devices/disk"):
        tgt = disk.find("target")
        name = tgt.get("dev") if tgt is not None else None
        if not name:
            continue
        if name != dev:
            ET.SubElement(disks, "disk", name=name, backup="no")
            continue
        d = ET.SubElement(disks, "disk", name=name, backup="yes", type="file")
        ET.SubElement(d, "target", file=str(target))
        ET.SubElement(d, "driver", type="qcow2")
    return ET.tostring(root, encoding="unicode")


def _domain(driver: LibvirtDriver, uid: str) -> libvirt.virDomain:
    try:
        return driver.ops_conn.lookupByUUIDString(uid)
    except libvirt.libvirtError as exc:
        raise BackupError(f"lookup of {uid} failed: {exc}", exc.get_error_code()) from exc


def _backup_running(dom: libvirt.virDomain,
                    on_progress: Callable[[int, int], None] | None = None) -> bool:
    stats = dom.jobStats(0)
    running = (stats.get("type", libvirt.VIR_DOMAIN_JOB_NONE) != libvirt.VIR_DOMAIN_JOB_NONE
               and stats.get("operation") == libvirt.VIR_DOMAIN_JOB_OPERATION_BACKUP)
    if running and on_progress is not None:
        on_progress(int(stats.get("disk_processed") or 0), int(stats.get("disk_total") or 0))
    return running


def push_backup(driver: LibvirtDriver, uid: str, source: Path, target: Path, *,
                timeout: float = 3600.0, poll: float = 0.05,
                on_progress: Callable[[int, int], None] | None = None,
                on_started: Callable[[], None] | None = None) -> dict:
    """Copy the disk of domain ``uid`` whose file is ``source`` into a new
    standalone qcow2 ``target`` while the guest runs; the completed job's
    statistics.  On any failure (or after ``timeout`` seconds) the job is
    aborted and ``target`` removed.  ``on_progress(done, total)``: the job's
    bytes processed and in all, at every poll; ``on_started()`` once the job
    has started (its point in time is fixed: a frozen guest may be thawed)."""
    dom = _domain(driver, uid)
    try:
        xml = dom.XMLDesc(0)
    except libvirt.libvirtError as exc:
        raise BackupError(f"reading {uid} failed: {exc}", exc.get_error_code()) from exc
    dev = disk_target(xml, source)
    if dev is None:
        raise BackupError(f"domain {uid} has no disk {source}")
    done = False
    try:
        try:
            dom.backupBegin(backup_xml(xml, dev, target), None, 0)
        except libvirt.libvirtError as exc:
            kind = (BackupUnsupported if exc.get_error_code() == libvirt.VIR_ERR_NO_SUPPORT
                    else BackupError)
            raise kind(f"backup of {dev} of {uid} did not start: {exc}",
                       exc.get_error_code()) from exc
        if on_started is not None:
            on_started()
        deadline = time.monotonic() + timeout
        try:
            while _backup_running(dom, on_progress):
                if time.monotonic() > deadline:
                    raise BackupError(f"backup of {dev} of {uid} took over {timeout:.0f}s")
                time.sleep(poll)
            stats = dom.jobStats(libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED)
        except libvirt.libvirtError as exc:
            raise BackupError(f"backup of {dev} of {uid}: {exc}", exc.get_error_code()) from exc
        if (stats.get("operation") != libvirt.VIR_DOMAIN_JOB_OPERATION_BACKUP
                or stats.get("type") != libvirt.VIR_DOMAIN_JOB_COMPLETED
                or not stats.get("success", True)):
            raise BackupError(f"backup of {dev} of {uid} failed: "
                              f"{stats.get('errmsg') or stats}")
        done = True
        return stats
    finally:
        if not done:
            abort_backup(driver, uid)
            target.unlink(missing_ok=True)


def abort_backup(driver: LibvirtDriver, uid: str, wait: float = 30.0) -> bool:
    """End a backup job still running on domain ``uid`` (any other job is
    left alone); whether there was one.  Waits up to ``wait`` seconds for
    QEMU to let go of the target."""
    try:
        dom = driver.ops_conn.lookupByUUIDString(uid)
        if not dom.isActive() or not _backup_running(dom):
            return False
    except libvirt.libvirtError:
        return False  # no such domain, or a driver without job statistics
    log.warning("aborting the backup job of domain %s", dom.name())
    try:
        dom.abortJob()
        deadline = time.monotonic() + wait
        while _backup_running(dom) and time.monotonic() < deadline:
            time.sleep(0.1)
    except libvirt.libvirtError as exc:
        log.warning("aborting the backup job of %s: %s", uid, exc)
    return True
