"""Live-migrating a real guest through Kova: ``kubectl kova migrate --live``
by a user bound to kova-edit, on a two-host stack whose agents each drive a
libvirtd of the two-host test bed (each in its own network namespace, its
own host UUID; the agents' ``--live-migration-uri`` is the other libvirtd's
``qemu+tcp://`` address on the bed's link).  The guests have a NIC on each
host's libvirt network ``kova-bed`` (``--network``) with Kova's network
filters on: the bed's libvirtds start without libvirt's stock filters, the
agents define them.

The guest (Kova's test image under QEMU) runs a counter on its serial
console and tells its boot id; after the move it runs on the other host,
its counter went on without restarting, the boot id is the same, the
Instance stayed Running throughout, Placement holds only the Instance's
allocation on the destination (no migration consumer left), the source
libvirtd has no domain of it any more, and the moved guest's NIC is filtered
by the destination's own filter for the namespace (with the guest's MAC),
not by the source's (which does not exist on the destination's libvirtd).
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

import libvirt
import pytest

from kova.agents.virt import netfilter
from kova.crds import names
from kova.dev.stack import Stack
from kova.dev.twohost import TwoHosts
from tests.e2e.test_cold_migration import booted_guest, on_console
from tests.e2e.test_moves import placement_books
from tests.fixtures.vm import plugin
from tests.helpers import wait_for
from tests.support.stacks import bed_stack, temp_namespace

COUNT_RE = re.compile(r"KOVA-COUNT=(\d+)")


@pytest.fixture(scope="module")
def ns(kubectl):
    with temp_namespace(kubectl, "livemig-e2e") as name:
        yield name


@pytest.fixture(scope="module")
def stack(k8s, kova_crds, kova_api, libvirtd, two_hosts: TwoHosts, test_image, ns,
          tmp_path_factory):
    with bed_stack(k8s, kova_api, two_hosts, ns, tmp_path_factory.mktemp("livemig-stack"), "lm",
                   operator_args=["--resize-confirm-window", "0"]) as started:
        yield started


@pytest.fixture(scope="module")
def vm(stack, kova_api, test_image, k8s, kubectl, ns):
    with booted_guest(k8s, kubectl, ns, stack.root, test_image, "lm", "mover") as session:
        yield session


def domains(stack: Stack, host: str) -> dict[str, bool]:
    """uid -> running, of the host's libvirtd."""
    conn = libvirt.open(stack.libvirt_uris[host])
    try:
        return {d.UUIDString(): bool(d.isActive()) for d in conn.listAllDomains()}
    finally:
        conn.close()


def nic_filter(stack: Stack, host: str, uid: str, ns: str) -> str:
    """The filter on the NIC of ``uid``'s domain on ``host``, checked to be
    ``host``'s filter of ``ns``, defined there with the guest's MAC and
    bound to the guest's tap by that libvirtd."""
    conn = libvirt.open(stack.libvirt_uris[host])
    try:
        root = ET.fromstring(conn.lookupByUUIDString(uid).XMLDesc(0))
        nic = root.find("./devices/interface")
        assert nic is not None, "the guest has no NIC"
        ref, mac = nic.find("filterref"), nic.find("mac").get("address")
        tap = nic.find("target").get("dev")
        name = ref.get("filter")
        assert name == netfilter.namespace_filter_names(ns, host)[0], (host, name)
        peers = conn.nwfilterLookupByName(netfilter.namespace_filter_names(ns, host)[1])
        assert mac in peers.XMLDesc(0), peers.XMLDesc(0)
        assert conn.nwfilterBindingLookupByPortDev(tap).filterName() == name
        # libvirt's stock filters, defined by the agent (the bed's libvirtd
        # started without them), and none of the other host's Kova filters
        # (the bed's libvirtds outlive a module: other modules' hosts' filters
        # may be there)
        others = [netfilter.filter_names(h)[0].rsplit("-", 1)[1] for h in stack.hosts if h != host]
        filters = conn.listNWFilters()
        assert netfilter.STOCK_FILTER in filters, filters
        assert not [f for f in filters if f.startswith("kova-") and any(o in f for o in others)], filters
        return name
    finally:
        conn.close()


def test_live_migration_keeps_the_guest_running_and_frees_the_source(stack, vm, ns) -> None:
    obj = vm.obj()
    uid, source = obj["metadata"]["uid"], obj["status"]["host"]
    dest = next(h for h in stack.hosts if h != source)
    source_filter = nic_filter(stack, source, uid, ns)
    boot_id = on_console(vm, "echo BOOT=$(cat /proc/sys/kernel/random/boot_id)",
                         r"BOOT=([0-9a-f-]{36})")
    on_console(vm, "(i=0; while :; do i=$((i+1)); echo KOVA-COUNT=$i; sleep 0.5; done) & "
               "echo STARTED=1", r"STARTED=(\d)")
    vm.wait_log(r"KOVA-COUNT=\d+", count=3, timeout=60)

    code, out, err = vm.kova("migrate", "vm", "--live", "--timeout", "300", timeout=360)
    assert code == 0, (out, err)
    print(err + out)  # the steps and progress as the user saw them
    assert "step LiveMigrating" in err, err
    assert "phase Resizing" not in err and "phase Running" in err, err  # Running throughout
    obj = vm.obj()
    st = obj["status"]
    assert "migration" not in st, st.get("migration")
    assert st["host"] == dest and obj["metadata"]["labels"][names.LABEL_HOST] == dest
    assert st["phase"] == "Running" and st["powerState"] == "Running"
    cond = next(c for c in st["conditions"] if c["type"] == names.COND_RESIZED)
    assert cond["reason"] == names.REASON_LIVE_MIGRATED and "downtime" in cond["message"], cond
    assert domains(stack, dest) == {uid: True}
    assert uid not in domains(stack, source)
    # the destination's filter, not the source's (absent on that libvirtd)
    assert nic_filter(stack, dest, uid, ns) != source_filter
    books = placement_books(stack)
    assert books == {uid: {dest: {"VCPU": 1, "MEMORY_MB": 192, "DISK_GB": 1}}}, books
    history = [(a["action"], a["result"]) for a in st["actions"]]
    assert history[-1] == ("migrate", "Success"), history

    # The destination's console log starts with the move: the counter goes on
    # from where it was (it never restarts at 1), and the boot is the same.
    log = vm.wait_log(r"KOVA-COUNT=\d+", count=3, timeout=60)
    counts = [int(n) for n in COUNT_RE.findall(log)]
    assert min(counts) > 3, counts
    assert on_console(vm, "echo BOOT=$(cat /proc/sys/kernel/random/boot_id)",
                      r"BOOT=([0-9a-f-]{36})") == boot_id


def test_drain_live_migrates_the_running_guest_back(stack, vm, kubectl, ns) -> None:
    """``kubectl kova drain`` moves the running guest live (no cold
    fallback allowed): the same boot on the other host; uncordon after."""
    obj = vm.obj()
    uid, host = obj["metadata"]["uid"], obj["status"]["host"]
    other = next(h for h in stack.hosts if h != host)
    boot_id = on_console(vm, "echo BOOT=$(cat /proc/sys/kernel/random/boot_id)",
                         r"BOOT=([0-9a-f-]{36})")
    admin = stack.kubeconfig  # Hosts are cluster-scoped: the administrator drains
    try:
        out = plugin(admin, "drain", host, "--no-cold-fallback", "--timeout", "300",
                     timeout=360)
        assert out.returncode == 0, (out.stdout, out.stderr)
        assert f"host {host}: Drained" in out.stderr, out
        assert vm.obj()["metadata"]["uid"] == uid
    finally:
        plugin(admin, "uncordon", host)
    obj = vm.wait_power("Running")
    assert obj["status"]["host"] == other and "migration" not in obj["status"]
    cond = next(c for c in obj["status"]["conditions"] if c["type"] == names.COND_RESIZED)
    assert cond["reason"] == names.REASON_LIVE_MIGRATED, cond  # live, not cold
    assert domains(stack, other) == {uid: True} and uid not in domains(stack, host)
    nic_filter(stack, other, uid, ns)
    assert on_console(vm, "echo BOOT=$(cat /proc/sys/kernel/random/boot_id)",
                      r"BOOT=([0-9a-f-]{36})") == boot_id
    assert placement_books(stack) == {uid: {other: {"VCPU": 1, "MEMORY_MB": 192,
                                                    "DISK_GB": 1}}}


def test_abort_keeps_the_guest_on_its_source(stack, vm) -> None:
    """The source agent restarted with a 1 MiB/s limit; ``kubectl kova
    migrate --abort`` while the disk is being copied: the guest stays where
    it ran, the destination's claim is given back, the condition says so."""
    obj = vm.obj()
    uid, source = obj["metadata"]["uid"], obj["status"]["host"]
    stack.kill(f"agent-{source}")
    common = stack.agent_args
    stack.agent_args = [*common, "--live-migration-bandwidth-mib", "1"]
    try:
        stack.start_agent(source)
    finally:
        stack.agent_args = common
    stack.wait_hosts_up()
    code, out, err = vm.kova("migrate", "vm", "--live", "--no-wait")
    assert code == 0, (out, err)
    wait_for(lambda: ((vm.obj()["status"].get("migration") or {}).get("progress")
                      or {}).get("phase"), 120, 0.5, "progress of the live migration")
    code, out, err = vm.kova("migrate", "vm", "--abort", timeout=120)
    assert code == 0, (out, err)
    obj = vm.obj()
    st = obj["status"]
    assert "migration" not in st and st["host"] == source and st["phase"] == "Running"
    cond = next(c for c in st["conditions"] if c["type"] == names.COND_RESIZED)
    assert cond["reason"] == names.REASON_LIVE_MIGRATION_FAILED and "Aborted" in cond["message"]
    assert domains(stack, source) == {uid: True}
    wait_for(lambda: uid not in domains(stack, next(h for h in stack.hosts if h != source)),
             30, 0.5, "no domain left on the destination")
    assert placement_books(stack) == {uid: {source: {"VCPU": 1, "MEMORY_MB": 192,
                                                     "DISK_GB": 1}}}
    vm.wait_log(r"KOVA-COUNT=\d+", count=3, timeout=60)  # still counting
    # the source agent again without the limit (the module's other tests)
    stack.kill(f"agent-{source}")
    stack.start_agent(source)
    stack.wait_hosts_up()
