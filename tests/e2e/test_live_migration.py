"""Live migration with the local disk copied along (agents/virt/migration.py),
between the two libvirt hosts of the test bed, with a real QEMU guest of
Kova's test image.

One guest is booted for the module (a boot under emulation is the slow part)
and moved back and forth; each test starts by finding the host it runs on
(so one failed test does not fail the next ones) and moves it to the other:

1. the guest keeps running (its console counter never restarts, the boot id
   is the same), the data written to its disk before the move is read back
   after it, the domain exists on the destination only, progress was reported.
2. under a 1 MiB/s limit and a 3 s completion timeout: aborted, the guest
   keeps running on its source, nothing is left on the destination.
3. the destination's libvirtd killed mid-migration: the migration fails and
   the guest keeps running on its source.
4. aborted on request; 5. by post-copy, switched to as soon as QEMU takes it
   under a 16 MiB/s limit (an idle guest's memory would otherwise be copied
   before a switch); 6. a guest that keeps dirtying memory under a 4 MiB/s
   limit: post-copy (asked as the memory copy starts) finishes it.  Both post-copy tests check that libvirt
   paused the source for post-copy, not only that the switch was asked.

The console counter is started by the first test that needs it, so the
post-copy tests also run on their own (``-k post_copy``).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import libvirt
import pytest

from kova.agents.virt import migration as mig
from kova.dev import bedguest as bg
from kova.dev.twohost import BedHost, TwoHosts

BOOT_TIMEOUT = 240
DATA_SECTOR = 100_000  # past the image's boot partition, inside the 64 MiB overlay


@dataclass
class Guest:
    name: str
    host: BedHost
    conn: libvirt.virConnect
    console: bg.SerialConsole
    boot_id: str
    #: the console counter (COUNTER_CMD) was started, as the guest's job %1
    counting: bool = False

    @property
    def dom(self) -> libvirt.virDomain:
        return self.conn.lookupByName(self.name)

    def files(self, host: BedHost) -> tuple[Path, Path]:
        d = host.instance_dir / self.name
        return d / "disk.qcow2", d / "console.log"

    def counts(self) -> list[int]:
        return [int(n) for n in bg.COUNT_RE.findall(self.console.text)]


def _prepare(guest: Guest, dst: BedHost, **kw) -> mig.LiveMigrationOptions:
    """The destination agent's part: the disk file at the destination path."""
    src_disk, src_log = guest.files(guest.host)
    dst_disk, dst_log = guest.files(dst)
    dst_disk.parent.mkdir(parents=True, exist_ok=True)
    dst_disk.unlink(missing_ok=True)
    (path, size), = mig.disk_sizes(guest.dom, ["vda"]).values()
    assert path == str(src_disk)
    mig.create_destination_disk(str(dst_disk), size)
    return mig.LiveMigrationOptions(migrate_uri=dst.migrate_uri,
                                    path_map={str(src_disk): str(dst_disk), str(src_log): str(dst_log)},
                                    **kw)


def _names(host: BedHost) -> list[str]:
    conn = libvirt.open(host.uri)
    try:
        return [d.name() for d in conn.listAllDomains()]
    finally:
        conn.close()


def _moved_to(guest: Guest, host: BedHost) -> None:
    """Follow the guest to ``host``: its connection and serial console there."""
    guest.console.close()
    guest.host, guest.conn = host, libvirt.open(host.uri)
    guest.console = bg.SerialConsole(bg.pty_path(guest.dom))


def _locate(two_hosts: TwoHosts, guest: Guest) -> tuple[BedHost, BedHost]:
    """(the host the guest runs on, the other one): the tests share the
    guest, so each starts from wherever the previous one left it."""
    for host in two_hosts.hosts:
        conn = libvirt.open(host.uri)
        try:
            running = any(d.name() == guest.name and d.isActive() for d in conn.listAllDomains())
        finally:
            conn.close()
        if running:
            if host is not guest.host:
                _moved_to(guest, host)
            return host, next(h for h in two_hosts.hosts if h is not host)
    pytest.fail(f"{guest.name} runs on neither host of the bed")


def _start_counter(guest: Guest) -> None:
    """The console counter runs (started once: a test run alone finds it
    not started yet)."""
    if not guest.counting:
        guest.console.type(bg.COUNTER_CMD)
        guest.counting = True
    guest.console.wait_for(lambda t: len(bg.COUNT_RE.findall(t)) >= 3, 60)


def _still_counting(guest: Guest, timeout: float = 60) -> None:
    before = max(guest.counts() or [0])
    guest.console.wait_for(lambda t: max([int(n) for n in bg.COUNT_RE.findall(t)] or [0]) > before + 1,
                           timeout)


@pytest.fixture(scope="module")
def guest(two_hosts: TwoHosts, test_image: Path) -> Iterator[Guest]:
    host = two_hosts.a
    name = f"kova-lm-{uuid.uuid4().hex[:8]}"
    disk = bg.make_disk(test_image, host.instance_dir / name / "disk.qcow2")
    log = host.instance_dir / name / "console.log"
    conn = libvirt.open(host.uri)
    dom = conn.defineXML(bg.guest_xml(name, disk, log))
    dom.create()
    try:
        bg.wait_for_file(log, "KOVA-SHELL", BOOT_TIMEOUT)
        console = bg.SerialConsole(bg.pty_path(dom))
        console.type(bg.BOOT_ID_CMD)
        text = console.wait_for(lambda t: bg.BOOT_ID_RE.search(t) is not None, 60)
        boot_id = bg.BOOT_ID_RE.search(text).group(1)
        g = Guest(name=name, host=host, conn=conn, console=console, boot_id=boot_id)
        yield g
    finally:
        for h in two_hosts.hosts:
            try:
                c = libvirt.open(h.uri)
            except libvirt.libvirtError:
                continue
            try:
                d = c.lookupByName(name)
                if d.isActive():
                    d.destroy()
                d.undefine()
            except libvirt.libvirtError:
                pass
            finally:
                c.close()


def test_live_migration_keeps_the_guest_running_with_its_disk(two_hosts: TwoHosts, guest: Guest) -> None:
    src, dst = _locate(two_hosts, guest)
    token = f"kova-disk-{uuid.uuid4().hex[:12]}"
    guest.console.type(f"echo {token} | dd of=/dev/vda bs=512 seek={DATA_SECTOR} conv=fsync 2>/dev/null; "
                       "echo KOVA-WROTE")
    guest.console.wait_for(lambda t: "\nKOVA-WROTE" in t or "\r\nKOVA-WROTE" in t, 60)
    _start_counter(guest)

    seen: list[mig.MigrationProgress] = []
    result = mig.live_migrate(guest.dom, dst.tcp_uri, _prepare(guest, dst), on_progress=seen.append)
    last_before = max(guest.counts())

    assert result.phase == mig.COMPLETED
    assert result.downtime_ms is not None and result.downtime_ms >= 0
    assert result.disk_total >= 64 * mig.MiB and result.memory_total > 0
    # Progress is sampled every poll_interval: a small guest's memory copy can
    # start and end between two polls, so what was copied is read from the
    # completed job's figures, and the reports only have to lead up to it.
    phases = [p.phase for p in seen]
    assert phases[-1] == mig.COMPLETED
    assert set(phases[:-1]) <= {mig.COPYING_DISK, mig.COPYING_MEMORY}
    assert result.memory_processed > 0
    # each step timed; libvirt's call holds the migration itself
    assert list(result.steps_ms) == ["parameters", "second connection", "migration call",
                                     "watch ended", "final statistics", "source undefined"]
    assert result.steps_ms["migration call"] > 0
    assert _names(src) == [] and _names(dst) == [guest.name]

    _moved_to(guest, dst)
    dom = guest.dom
    assert dom.isActive() and dom.isPersistent()
    assert guest.files(dst)[0].as_posix() in dom.XMLDesc(0)
    guest.console.type(bg.BOOT_ID_CMD)
    guest.console.type(f"echo 3 >/proc/sys/vm/drop_caches; echo KOVA-READ=$(dd if=/dev/vda bs=512 "
                       f"skip={DATA_SECTOR} count=1 2>/dev/null | head -n1)")
    text = guest.console.wait_for(
        lambda t: bg.BOOT_ID_RE.search(t) is not None and "KOVA-READ=kova" in t and bg.COUNT_RE.search(t), 60)
    assert bg.BOOT_ID_RE.search(text).group(1) == guest.boot_id  # the same boot
    assert f"KOVA-READ={token}" in text  # written before the move, read after it
    # The counter goes on from where it was: it never restarts at 1.
    assert min(guest.counts()) > 1 and min(guest.counts()) >= last_before - 2


def test_timeout_aborts_and_the_guest_stays(two_hosts: TwoHosts, guest: Guest) -> None:
    src, dst = _locate(two_hosts, guest)
    opts = _prepare(guest, dst, bandwidth_mib=1, completion_timeout=3)
    started = time.monotonic()
    with pytest.raises(mig.LiveMigrationError) as err:
        mig.live_migrate(guest.dom, dst.tcp_uri, opts)
    assert err.value.reason == "Timeout"
    assert err.value.progress is not None and err.value.progress.phase == mig.ABORTED
    assert time.monotonic() - started < 60
    assert _names(dst) == [] and _names(src) == [guest.name]
    assert guest.dom.state()[0] == libvirt.VIR_DOMAIN_RUNNING
    _still_counting(guest)


def test_destination_libvirtd_stopped_mid_migration(two_hosts: TwoHosts, guest: Guest) -> None:
    src, dst = _locate(two_hosts, guest)
    opts = _prepare(guest, dst, bandwidth_mib=2, completion_timeout=120)
    killed: list[bool] = []

    def kill_when_copying(p: mig.MigrationProgress) -> None:
        if not killed and p.phase in (mig.COPYING_DISK, mig.COPYING_MEMORY) and p.elapsed_ms > 0:
            dst.kill_libvirtd()
            killed.append(True)

    try:
        with pytest.raises(mig.LiveMigrationError) as err:
            mig.live_migrate(guest.dom, dst.tcp_uri, opts, on_progress=kill_when_copying)
        assert killed and err.value.reason == "Failed"
        assert guest.dom.state()[0] == libvirt.VIR_DOMAIN_RUNNING
        _still_counting(guest)
    finally:
        dst.start_libvirtd()
    # Restarted, the destination's libvirtd does not keep the half-arrived guest.
    deadline = time.monotonic() + 30
    while guest.name in _names(dst) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _names(dst) == [] and _names(src) == [guest.name]


def test_abort_on_request(two_hosts: TwoHosts, guest: Guest) -> None:
    src, dst = _locate(two_hosts, guest)
    abort = mig.Abort()
    seen: list[mig.MigrationProgress] = []

    def abort_when_copying(p: mig.MigrationProgress) -> None:
        seen.append(p)
        if p.elapsed_ms > 0:  # the job runs
            abort()

    with pytest.raises(mig.LiveMigrationError) as err:
        mig.live_migrate(guest.dom, dst.tcp_uri, _prepare(guest, dst, bandwidth_mib=1),
                         on_progress=abort_when_copying, abort=abort)
    assert err.value.reason == mig.ABORTED, seen
    assert _names(dst) == [] and _names(src) == [guest.name]
    _still_counting(guest)


def test_post_copy_moves_the_guest_back(two_hosts: TwoHosts, guest: Guest) -> None:
    src, dst = _locate(two_hosts, guest)
    _start_counter(guest)
    # Switch to post-copy as soon as QEMU takes it; the limit keeps more
    # than QEMU's last-iteration threshold left when it does.
    opts = _prepare(guest, dst, post_copy=True, post_copy_after=0, post_copy_after_iterations=0,
                    bandwidth_mib=16, completion_timeout=180)
    seen: list[mig.MigrationProgress] = []
    result = mig.live_migrate(guest.dom, dst.tcp_uri, opts, on_progress=seen.append)
    assert result.phase == mig.COMPLETED
    # libvirt paused the source for post-copy
    assert result.post_copy, [(p.phase, p.elapsed_ms, p.memory_processed, p.disk_remaining)
                              for p in seen][-25:]
    assert mig.POST_COPY in [p.phase for p in seen]
    assert _names(src) == [] and _names(dst) == [guest.name]
    _moved_to(guest, dst)
    guest.console.type(bg.BOOT_ID_CMD)
    text = guest.console.wait_for(lambda t: bg.BOOT_ID_RE.search(t) is not None, 60)
    assert bg.BOOT_ID_RE.search(text).group(1) == guest.boot_id
    _still_counting(guest)


def test_dirtying_guest_under_a_bandwidth_limit_finishes_by_post_copy(
        two_hosts: TwoHosts, guest: Guest) -> None:
    src, dst = _locate(two_hosts, guest)
    guest.console.type(bg.DIRTY_CMD.format(mib=32))
    time.sleep(3)
    # Asked as soon as the memory copy starts: later, under this limit, the
    # copy may already be within QEMU's last-iteration threshold.
    opts = _prepare(guest, dst, bandwidth_mib=4, post_copy=True, post_copy_after=0,
                    post_copy_after_iterations=0, completion_timeout=120)
    seen: list[mig.MigrationProgress] = []
    result = mig.live_migrate(guest.dom, dst.tcp_uri, opts, on_progress=seen.append)
    assert result.phase == mig.COMPLETED
    assert result.post_copy and mig.POST_COPY in [p.phase for p in seen]
    assert _names(src) == [] and _names(dst) == [guest.name]
    _moved_to(guest, dst)
    guest.console.type("kill %2 %1 2>/dev/null; " + bg.BOOT_ID_CMD)
    text = guest.console.wait_for(lambda t: bg.BOOT_ID_RE.search(t) is not None, 60)
    assert bg.BOOT_ID_RE.search(text).group(1) == guest.boot_id
