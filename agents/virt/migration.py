"""Live migration of a domain with its local disks (the source agent's part).

:func:`live_migrate` runs libvirt's peer-to-peer live migration
(``virDomainMigrateToURI3`` with ``VIR_MIGRATE_LIVE | PEER2PEER |
NON_SHARED_DISK | PERSIST_DEST``): the source libvirtd connects to the
destination libvirtd itself (``dest_uri``), the writable disks are mirrored to
the destination QEMU's NBD server first (no shared storage), then memory is
copied in iterations while the guest runs, and the guest pauses only for the
last iteration.  Auto-converge (QEMU throttles a guest that dirties memory
faster than the link) is on by default; post-copy is an option (switch after
``post_copy_after`` seconds or iterations, or as soon as QEMU accepts it when
both are 0: the guest then runs on the destination and pulls the remaining
pages on demand; phase ``PostCopy`` is reported once libvirt shows the
source paused for post-copy, not merely when the switch was asked).  Every
move is watched -- progress, timeout, abort, the switch -- over a second
connection to the same libvirtd, never over the one waiting in the
migration call.
A bandwidth limit, a
completion timeout (then the job is aborted and the guest keeps running on
the source) and an :class:`Abort` handle are supported.  Progress comes from
libvirt's job statistics, polled while the migration runs.

The destination must be prepared first, as the destination agent does:
the disk files exist at the destination paths with the source's virtual size
(:func:`create_destination_disk`); read-only disks (a config drive) must be
present there already.  Paths may differ between the hosts: ``path_map``
rewrites them in the destination's domain XML.

After a successful migration the source's definition is removed (so the
domain exists on exactly one host); the source's disk files stay for the
caller to delete.  On failure or abort libvirt resumes the guest on the
source and removes the half-built destination domain.
"""

from __future__ import annotations

import logging
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import libvirt

from kova.agents.virt.images import create_blank_disk

log = logging.getLogger(__name__)

MiB = 1024 * 1024
#: Seconds between polls of a migration asked to switch to post-copy at once.
IMMEDIATE_POLL = 0.05

# Phases reported in MigrationProgress.phase.
COPYING_DISK = "CopyingDisk"
COPYING_MEMORY = "CopyingMemory"
POST_COPY = "PostCopy"
COMPLETED = "Completed"
FAILED = "Failed"
ABORTED = "Aborted"


class LiveMigrationError(Exception):
    """The migration did not happen; the guest is still on the source.

    ``reason``: ``Timeout``, ``Aborted`` or ``Failed``."""

    def __init__(self, reason: str, message: str,
                 progress: MigrationProgress | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.progress = progress


@dataclass
class LiveMigrationOptions:
    #: MiB/s for memory and disk copy; None: unlimited.
    bandwidth_mib: int | None = None
    auto_converge: bool = True
    #: allow post-copy, switched on after ``post_copy_after`` (seconds of
    #: memory copy) or ``post_copy_after_iterations``, whichever comes first;
    #: both 0: asked at the first poll of the memory copy (polled every
    #: ``IMMEDIATE_POLL`` s) and again until libvirt takes it (QEMU switches at
    #: its next iteration while more than its last-iteration threshold is left).
    post_copy: bool = False
    post_copy_after: float = 10.0
    post_copy_after_iterations: int = 3
    #: the whole migration must finish within this many seconds, or it is aborted.
    completion_timeout: float = 600.0
    #: the longest pause (ms) QEMU may plan for the last iteration; None: QEMU's default.
    max_downtime_ms: int | None = None
    #: disk targets to copy (``vda``...); None: every writable file disk.
    disks: list[str] | None = None
    #: source path -> destination path, applied to the destination's XML.
    path_map: dict[str, str] = field(default_factory=dict)
    #: a last change of the destination's XML (after ``path_map``), e.g. the
    #: host named in the domain's metadata.
    xml_edit: Callable[[str], str] | None = None
    #: where QEMU's migration stream goes (``tcp://ADDR``); None: libvirt's choice.
    migrate_uri: str | None = None
    poll_interval: float = 0.5


@dataclass
class MigrationProgress:
    phase: str
    elapsed_ms: int = 0
    memory_total: int = 0
    memory_processed: int = 0
    memory_remaining: int = 0
    memory_iteration: int = 0
    memory_dirty_rate: int = 0
    disk_total: int = 0
    disk_processed: int = 0
    disk_remaining: int = 0
    auto_converge_throttle: int = 0
    #: only when completed: how long the guest was paused, and total time.
    downtime_ms: int | None = None
    total_ms: int | None = None
    #: the migration switched to post-copy (libvirt paused the source for it).
    post_copy: bool = False
    #: only when completed: how long each step of :func:`live_migrate` took
    #: (ms; ``migration call`` is libvirt's, the others Kova's own).
    steps_ms: dict[str, int] = field(default_factory=dict)

    @classmethod
    def from_stats(cls, phase: str, stats: dict) -> MigrationProgress:
        def g(key: str) -> int:
            return int(stats.get(key, 0) or 0)

        return cls(
            phase=phase, elapsed_ms=g("time_elapsed"), memory_total=g("memory_total"),
            memory_processed=g("memory_processed"), memory_remaining=g("memory_remaining"),
            memory_iteration=g("memory_iteration"), memory_dirty_rate=g("memory_dirty_rate"),
            disk_total=g("disk_total"), disk_processed=g("disk_processed"),
            disk_remaining=g("disk_remaining"), auto_converge_throttle=g("auto_converge_throttle"),
        )

    def as_status(self) -> dict:
        """The fields for an Instance's ``status.migration`` (camelCase)."""
        out = {
            "phase": self.phase, "elapsedMs": self.elapsed_ms,
            "memoryRemainingBytes": self.memory_remaining, "memoryTotalBytes": self.memory_total,
            "diskRemainingBytes": self.disk_remaining, "diskTotalBytes": self.disk_total,
            "iteration": self.memory_iteration,
        }
        if self.downtime_ms is not None:
            out["downtimeMs"] = self.downtime_ms
        return out


class Abort:
    """Ask a running :func:`live_migrate` to abort (from any thread)."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def __call__(self) -> None:
        self._event.set()

    @property
    def requested(self) -> bool:
        return self._event.is_set()


def migration_flags(opts: LiveMigrationOptions) -> int:
    flags = (libvirt.VIR_MIGRATE_LIVE | libvirt.VIR_MIGRATE_PEER2PEER
             | libvirt.VIR_MIGRATE_NON_SHARED_DISK | libvirt.VIR_MIGRATE_PERSIST_DEST
             | libvirt.VIR_MIGRATE_ABORT_ON_ERROR)
    if opts.auto_converge:
        flags |= libvirt.VIR_MIGRATE_AUTO_CONVERGE
    if opts.post_copy:
        flags |= libvirt.VIR_MIGRATE_POSTCOPY
    return flags


def copied_disks(xml: str) -> list[str]:
    """Targets of the writable file/block disks of a domain XML (those that
    block migration copies)."""
    out = []
    for disk in ET.fromstring(xml).findall("./devices/disk"):
        if disk.get("device", "disk") != "disk" or disk.find("readonly") is not None:
            continue
        if disk.find("shareable") is not None or disk.find("source") is None:
            continue
        target = disk.find("target")
        if target is not None and target.get("dev"):
            out.append(target.get("dev"))
    return out


def disk_sizes(dom: libvirt.virDomain, targets: list[str]) -> dict[str, tuple[str, int]]:
    """target -> (source path, virtual size in bytes) of a running domain's disks."""
    root = ET.fromstring(dom.XMLDesc(0))
    out = {}
    for disk in root.findall("./devices/disk"):
        target = disk.find("target")
        source = disk.find("source")
        if target is None or source is None or target.get("dev") not in targets:
            continue
        path = source.get("file") or source.get("dev") or ""
        capacity, _alloc, _phys = dom.blockInfo(target.get("dev"))
        out[target.get("dev")] = (path, int(capacity))
    return out


def create_destination_disk(path: str, size_bytes: int) -> None:
    """An empty qcow2 of ``size_bytes`` at ``path`` (the destination agent's
    step before a block migration: libvirt copies into an existing file)."""
    create_blank_disk(Path(path), size_bytes)


def rewrite_paths(xml: str, path_map: dict[str, str]) -> str:
    """``xml`` with every ``file``/``path``/``dev`` attribute of a ``<source>``
    or ``<log>`` element, and the UEFI variable store named by ``<nvram>``,
    found in ``path_map`` replaced."""
    if not path_map:
        return xml
    root = ET.fromstring(xml)
    for nvram in root.findall("./os/nvram"):
        if nvram.text and nvram.text.strip() in path_map:
            nvram.text = path_map[nvram.text.strip()]
    for el in root.iter():
        if el.tag not in ("source", "log"):
            continue
        for attr in ("file", "path", "dev"):
            value = el.get(attr)
            if value in path_map:
                el.set(attr, path_map[value])
    return ET.tostring(root, encoding="unicode")


def _params(dom: libvirt.virDomain, opts: LiveMigrationOptions) -> dict:
    live_xml = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_MIGRATABLE | libvirt.VIR_DOMAIN_XML_SECURE)
    params: dict = {
        libvirt.VIR_MIGRATE_PARAM_MIGRATE_DISKS: opts.disks or copied_disks(live_xml),
    }
    if opts.path_map or opts.xml_edit:
        edit = opts.xml_edit or str
        params[libvirt.VIR_MIGRATE_PARAM_DEST_XML] = edit(rewrite_paths(live_xml, opts.path_map))
        persist = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE | libvirt.VIR_DOMAIN_XML_MIGRATABLE
                              | libvirt.VIR_DOMAIN_XML_SECURE)
        params[libvirt.VIR_MIGRATE_PARAM_PERSIST_XML] = edit(rewrite_paths(persist,
                                                                           opts.path_map))
    if opts.migrate_uri:
        params[libvirt.VIR_MIGRATE_PARAM_URI] = opts.migrate_uri
    if opts.bandwidth_mib:
        params[libvirt.VIR_MIGRATE_PARAM_BANDWIDTH] = int(opts.bandwidth_mib)
    return params


def live_migrate(
    dom: libvirt.virDomain,
    dest_uri: str,
    opts: LiveMigrationOptions | None = None,
    on_progress: Callable[[MigrationProgress], None] | None = None,
    abort: Abort | None = None,
) -> MigrationProgress:
    """Live-migrate the running ``dom`` to the libvirtd at ``dest_uri`` (as
    the source libvirtd reaches it); return the final progress (phase
    ``Completed``, with ``downtime_ms`` and ``total_ms``).  Raises
    :class:`LiveMigrationError` when it times out, is aborted or fails: the
    guest then still runs on the source."""
    opts = opts or LiveMigrationOptions()
    marks = [("entered", time.monotonic())]
    params = _params(dom, opts)
    flags = migration_flags(opts)
    if opts.max_downtime_ms:
        dom.migrateSetMaxDowntime(int(opts.max_downtime_ms), 0)
    result: dict = {}

    def run() -> None:
        try:
            dom.migrateToURI3(dest_uri, params, flags)
        except libvirt.libvirtError as exc:
            result["error"] = exc
        else:
            result["ok"] = True
        result["returned"] = time.monotonic()

    # Every move is watched over a connection of its own: calls on the one
    # waiting in migrateToURI3 were seen to hang until the migration ended.
    marks.append(("parameters", time.monotonic()))
    control = _control_connection(dom)
    marks.append(("second connection", started := time.monotonic()))
    worker = threading.Thread(target=run, name=f"migrate-{dom.name()}", daemon=True)
    worker.start()
    try:
        watch = _Watch(control[1] if control else dom, opts, on_progress, abort, started)
        interval = (min(opts.poll_interval, IMMEDIATE_POLL) if watch.immediate
                    else opts.poll_interval)
        while worker.is_alive():
            worker.join(interval)
            if worker.is_alive():
                watch.tick()
    finally:
        marks += [("migration call", result.get("returned", time.monotonic())),
                  ("watch ended", time.monotonic())]
        if control:
            _close(control[0])
    if "ok" not in result:
        raise watch.failure(result.get("error"))
    done = _completed(dom, watch.last, int((time.monotonic() - started) * 1000))
    marks.append(("final statistics", time.monotonic()))
    _undefine_source(dom)
    marks.append(("source undefined", time.monotonic()))
    done.post_copy, done.steps_ms = watch.switched, _steps(dom, marks)
    if on_progress:
        on_progress(done)
    return done


def _steps(dom: libvirt.virDomain, marks: list[tuple[str, float]]) -> dict[str, int]:
    """How long each step of a completed move took (ms), logged at debug level."""
    out = {name: round(1000 * (t - prev)) for (_, prev), (name, t) in zip(marks, marks[1:])}
    log.debug("%s: live migration steps (ms): %s", dom.name(), out)
    return out


def _control_connection(dom: libvirt.virDomain) -> tuple[libvirt.virConnect,
                                                          libvirt.virDomain] | None:
    """A second connection to ``dom``'s libvirtd and the domain seen through
    it (None, logged, when it cannot be opened: ``dom``'s own is used)."""
    try:
        conn = libvirt.open(dom.connect().getURI())
    except libvirt.libvirtError as exc:
        log.warning("%s: no second libvirt connection to watch the migration: %s",
                    dom.name(), exc)
        return None
    try:
        return conn, conn.lookupByUUID(dom.UUID())
    except libvirt.libvirtError as exc:
        log.warning("%s: not found on a second libvirt connection: %s", dom.name(), exc)
        _close(conn)
        return None


def _close(conn: libvirt.virConnect) -> None:
    try:
        conn.close()
    except libvirt.libvirtError as exc:
        log.debug("closing a libvirt connection: %s", exc)


class _Watch:
    """Polls a running migration job: progress, timeout and abort, the
    switch to post-copy."""

    def __init__(self, dom: libvirt.virDomain, opts: LiveMigrationOptions,
                 on_progress: Callable[[MigrationProgress], None] | None,
                 abort: Abort | None, started: float) -> None:
        self.dom, self.opts, self.on_progress, self.abort = dom, opts, on_progress, abort
        self.started = started
        self.last = MigrationProgress(phase=COPYING_DISK)
        self.aborted_for: str | None = None
        #: the switch to post-copy was asked (and taken by QEMU)
        self.post_copy = False
        #: libvirt showed the source paused for post-copy
        self.switched = False
        self.memory_started: float | None = None
        self.immediate = (opts.post_copy and opts.post_copy_after <= 0
                          and opts.post_copy_after_iterations <= 0)

    def tick(self) -> None:
        # libvirt's domain state is read only once post-copy was asked
        self.last = _poll(self.dom, self.last, self.switched, asked=self.post_copy)
        if self.last.phase == POST_COPY:
            self.switched = True
            self.last.post_copy = True
        if self.on_progress:
            self.on_progress(self.last)
        now = time.monotonic()
        if self.aborted_for is None and self.abort is not None and self.abort.requested:
            self.aborted_for = ABORTED
        if self.aborted_for is None and now - self.started > self.opts.completion_timeout:
            self.aborted_for = "Timeout"
        if self.aborted_for is not None:
            if not self.switched:  # a post-copy move cannot go back any more
                _abort_job(self.dom)  # (libvirt refuses it once switched)
            return
        if self.last.phase == COPYING_MEMORY and self.memory_started is None:
            self.memory_started = now
        if not self.opts.post_copy or self.post_copy:
            return
        if self.immediate and self.last.phase == COPYING_MEMORY:
            # as soon as QEMU's own migration runs (the disks are mirrored
            # first); asked again at every poll until libvirt takes it
            self._start_post_copy(quiet=True)
        elif self.memory_started is not None and (
                now - self.memory_started >= self.opts.post_copy_after
                or self.last.memory_iteration >= self.opts.post_copy_after_iterations):
            self._start_post_copy()

    def _start_post_copy(self, quiet: bool = False) -> None:
        try:
            self.dom.migrateStartPostCopy(0)
        except libvirt.libvirtError as exc:
            (log.debug if quiet else log.warning)("%s: could not switch to post-copy: %s",
                                                  self.dom.name(), exc)
            return
        self.post_copy = True
        log.info("%s: switch to post-copy asked at iteration %s", self.dom.name(),
                 self.last.memory_iteration)

    def failure(self, err: libvirt.libvirtError | None) -> LiveMigrationError:
        reason = self.aborted_for or "Failed"
        message = {"Timeout": f"not finished within {self.opts.completion_timeout:.0f}s, aborted",
                   ABORTED: "aborted on request"}.get(reason, str(err))
        failed = MigrationProgress(**{**self.last.__dict__,
                                      "phase": ABORTED if self.aborted_for else FAILED})
        if self.on_progress:
            self.on_progress(failed)
        return LiveMigrationError(reason, f"live migration of {self.dom.name()}: {message}", failed)


def in_post_copy(dom: libvirt.virDomain) -> bool:
    """libvirt shows the source paused for post-copy (the guest runs on the
    destination)."""
    try:
        state, reason = dom.state()
    except libvirt.libvirtError:
        return False
    return state == libvirt.VIR_DOMAIN_PAUSED and reason in (
        libvirt.VIR_DOMAIN_PAUSED_POSTCOPY, libvirt.VIR_DOMAIN_PAUSED_POSTCOPY_FAILED)


def _poll(dom: libvirt.virDomain, last: MigrationProgress, switched: bool,
          asked: bool = False) -> MigrationProgress:
    try:
        stats = dom.jobStats(0)
    except libvirt.libvirtError:
        return last
    if stats.get("type", libvirt.VIR_DOMAIN_JOB_NONE) == libvirt.VIR_DOMAIN_JOB_NONE:
        return last
    if switched or (asked and in_post_copy(dom)):
        phase = POST_COPY
    elif int(stats.get("memory_processed", 0) or 0) == 0 and (
            int(stats.get("disk_remaining", 0) or 0) > 0
            or int(stats.get("memory_iteration", 0) or 0) == 0):
        phase = COPYING_DISK
    else:
        phase = COPYING_MEMORY
    return MigrationProgress.from_stats(phase, stats)


def _abort_job(dom: libvirt.virDomain) -> None:
    try:
        dom.abortJob()
    except libvirt.libvirtError as exc:
        # No job yet (still connecting) or already finishing: tried again
        # at the next poll while the migration call is running.
        log.debug("%s: abortJob: %s", dom.name(), exc)


def _completed(dom: libvirt.virDomain, last: MigrationProgress,
               total_ms: int) -> MigrationProgress:
    """The final figures from the completed job's statistics (libvirt keeps
    them on the source's now inactive definition, with the downtime the
    destination measured)."""
    try:
        stats = dom.jobStats(libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED)
    except libvirt.libvirtError:
        stats = {}
    done = MigrationProgress.from_stats(COMPLETED, stats) if stats else MigrationProgress(
        **{**last.__dict__, "phase": COMPLETED})
    done.memory_remaining = 0
    done.disk_remaining = 0
    done.downtime_ms = int(stats["downtime"]) if "downtime" in stats else None
    done.total_ms = int(stats.get("time_elapsed", total_ms) or total_ms)
    return done


def migrated_away(dom: libvirt.virDomain) -> bool:
    """``dom`` (on the source) was shut off by a completed migration."""
    try:
        state, reason = dom.state()
    except libvirt.libvirtError:
        return False
    return state == libvirt.VIR_DOMAIN_SHUTOFF and reason == libvirt.VIR_DOMAIN_SHUTOFF_MIGRATED


def finish_source(dom: libvirt.virDomain) -> MigrationProgress | None:
    """After a migration that completed without its caller (the process that
    started it died): the completed job's figures if libvirt still has
    them, and the source's definition removed, as :func:`live_migrate` does."""
    done = _completed(dom, MigrationProgress(phase=COMPLETED), 0)
    _undefine_source(dom)
    return done if done.total_ms else None  # (0: libvirt kept no figures)


def _undefine_source(dom: libvirt.virDomain) -> None:
    try:
        if dom.isActive():  # never: libvirt stopped it at the switch-over
            log.error("%s: still active on the source after a completed migration", dom.name())
            return
        dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
                          | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
                          | libvirt.VIR_DOMAIN_UNDEFINE_NVRAM)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
            raise
