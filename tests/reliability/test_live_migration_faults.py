"""Fault: kill -9 of the operator, of the source agent and of the
destination agent in the middle of a live migration.

Real processes on the two-host bed (tests/support/twohost.py): Placement,
the operator and two compute agents, each host a libvirtd in its own network
namespace; libvirt migrates peer to peer over the bed's link.  The guest
boots a blank disk carrying 16 MiB of data and waits in its firmware; its
migration (1 GiB disk mirrored, then 128 MiB of memory, under TCG) lasts a
few seconds: the window in which a process is killed during step
LiveMigrating, once the destination's libvirtd shows the arriving domain.
(No bandwidth limit: under 4 MiB/s one move of this guest took minutes.)
A process is kept at step Preparing by stopping the destination agent
(SIGSTOP) before the move: the source's call to it hangs.  Moves are
started through ``kubectl kova migrate --live``; one Instance is moved back
and forth, one case after another, each with one process killed and
restarted:

* in the normal run: the destination agent at Preparing, the source agent
  during LiveMigrating (libvirt completes the migration without it: the
  restarted agent finds the source's domain shut off by the migration), the
  operator at step Migrated (before it handed the Instance over);
* ``slow``: the operator and the source agent at Preparing, the operator and
  the destination agent during LiveMigrating.

After each: the move ended (Resized condition LiveMigrated, the migrate
action a success), the guest Running exactly once on the destination --
the domain that arrived there (libvirt's running reason ``migrated``, not
a new boot) -- and the audit of tests/reliability/test_move_faults.py:
on the host Placement charges, the migration consumer empty, neither a
domain nor a directory of the Instance on the other host.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator

import libvirt
import pytest

from kova.crds import names
from kova.dev.twohost import TwoHosts
from tests.fixtures.agents import Harness
from tests.helpers import wait_for
from tests.reliability.guests import _destroy_all, _domains
from tests.reliability.record import record
from tests.reliability.test_move_faults import SMALL, Move
from tests.support.placement_hold import PlacementHold
from tests.support.stacks import BedStack, temp_namespace, two_host_stack

pytestmark = [pytest.mark.reliability, pytest.mark.integration]


@pytest.fixture(scope="module")
def ns(kubectl) -> Iterator[str]:
    with temp_namespace(kubectl, "livefault") as name:
        yield name


@pytest.fixture(scope="module")
def hold() -> Iterator[PlacementHold]:
    """The proxy through which the operator reaches Placement (it can hold
    the operator's move claim)."""
    with PlacementHold(lambda: "") as proxy:
        yield proxy


@pytest.fixture(scope="module")
def stack(k8s, kova_crds, kova_api, libvirtd, two_hosts: TwoHosts, ns, hold: PlacementHold,
          tmp_path_factory) -> Iterator[BedStack]:
    root = tmp_path_factory.mktemp("livefault")
    (root / "images").mkdir()
    st = BedStack(root=root / "stack", stream_pki_dir=kova_api.pki.ca_crt.parent,
                  agent_args=["--resync-seconds", "2", "--image-host-dir", str(root / "images")],
                  bed_hosts=two_hosts.hosts)
    hold.upstream = lambda: st.placement_url if st.placement_port else ""
    st.operator_args = ["--host-check-interval", "0.5", "--backoff-max", "2",
                        "--placement-url", hold.url]
    with two_host_stack(st, k8s, ns, "lf", log_lines=40) as started:
        try:
            yield started
        finally:
            for uri in started.libvirt_uris.values():
                _destroy_all(uri)


class LiveMove(Move):
    """The reads, kills and checks of a live migration's cases."""

    def __init__(self, *args, hold: PlacementHold) -> None:
        super().__init__(*args)
        #: what each case caught (a kill can land a moment after the step ended)
        self.seen: list[str] = []
        self.hold = hold

    def arrived(self, host: str) -> bool:
        """The destination's libvirtd holds the arriving domain (libvirt's
        migration has started)."""
        return self.uid in _domains(self.st.libvirt_uris[host])

    def migrate(self) -> tuple[str, str]:
        src = self.host()
        self.kova("migrate", "vm", "--live", "--no-wait")
        return src, self.other(src)

    def held_at_preparing(self, dst: str) -> None:
        """The destination agent stopped: the source's call to it hangs,
        the move stays at step Preparing."""
        self.pause(f"agent-{dst}")

    def ended_on(self, host: str, started: int) -> None:
        """The move ended Migrated on ``host``, the guest there the one that
        arrived (not booted again), and the books settled."""
        self.settled(host, SMALL)
        st = self.obj()["status"]
        cond = next(c for c in st["conditions"] if c["type"] == names.COND_RESIZED)
        assert cond["reason"] == names.REASON_LIVE_MIGRATED, cond
        assert len(st["actions"]) > started, st["actions"]
        assert (st["actions"][-1]["action"], st["actions"][-1]["result"]) == \
            ("migrate", "Success"), st["actions"][-1]
        conn = libvirt.open(self.st.libvirt_uris[host])
        try:
            state, reason = conn.lookupByUUIDString(self.uid).state()
        finally:
            conn.close()
        assert (state, reason) == (libvirt.VIR_DOMAIN_RUNNING,
                                   libvirt.VIR_DOMAIN_RUNNING_MIGRATED), (state, reason)

    def case(self, kill: Callable[[LiveMove, str, str], None]) -> None:
        """One live migration with ``kill(self, src, dst)`` in its middle."""
        started = len(self.obj()["status"].get("actions") or [])
        src, dst = self.host(), self.other(self.host())
        kill(self, src, dst)
        self.ended_on(dst, started)


@pytest.fixture(scope="module")
def guest(stack, hold, k8s_client, kubeconfig, kubectl, ns,
          tmp_path_factory) -> Iterator[LiveMove]:
    import httpx

    stack.wait_hosts_up()
    tmp = tmp_path_factory.mktemp("livefault-guest")
    h = Harness(k8s_client, kubeconfig, ns, tmp, "lf-no-host")  # (its cleanup deletes that Host)
    image = stack.root.parent / "images" / "lf.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(image), "64M"], check=True)
    # 16 MiB of data on the disk the guest boots (and moves with it)
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 0x5a 0 16M", str(image)],
                   check=True, capture_output=True)
    placement = httpx.Client(base_url=stack.placement_url, timeout=30, headers={
        "X-Auth-Token": stack.placement_token, "OpenStack-API-Version": "placement 1.39"})
    m = LiveMove(stack, h, kubeconfig, placement, hold=hold)
    sfx = ns[-5:]
    h.flavor(f"lf-small-{sfx}", **SMALL)
    h.image(f"lf-img-{sfx}", image)
    m.uid = h.instance("vm", f"lf-img-{sfx}", flavor=f"lf-small-{sfx}",
                       schedule=False)["metadata"]["uid"]
    h.wait_phase("vm", "Running", timeout=120)
    try:
        yield m
    finally:
        hold.disarm()
        for name in list(stack.pids):  # a case that failed may have left one stopped
            try:
                os.kill(stack.pids[name], signal.SIGCONT)
            except ProcessLookupError:
                pass
        # deleted while the agents run (they remove its finalizer)
        kubectl("-n", ns, "delete", "instance", "vm", "--wait=true", "--timeout=50s",
                check=False)
        placement.close()
        h.cleanup()


def _report(m: LiveMove, t_start: float, which: str) -> None:
    record(
        f"Kill -9 during a live migration ({which})",
        "2 hosts of the bed (libvirtd each in its own network namespace, QEMU/TCG, guest "
        "in its firmware, 16 MiB of disk data): live migrations, each with one "
        "process killed (kill -9) at a step and restarted: " + "; ".join(m.kills),
        len(m.kills), lost=0, duplicated=0, overcommitted=0,
        result="every live migration ended Migrated; the guest Running once (the domain "
               "that arrived, not booted again), on the host Placement charges, migration "
               "consumers empty, nothing of it left on the other host",
        figures={"seconds": round(time.monotonic() - t_start, 1), "kills": len(m.kills),
                 "seen": m.seen})


# ---------------------------------------------------------------- the kills
def dest_agent_at_preparing(m: LiveMove, src: str, dst: str) -> None:
    m.held_at_preparing(dst)
    try:
        m.migrate()
        m.wait_step("Preparing")
        time.sleep(0.5)  # the source's call is waiting for the stopped agent
    finally:
        m.kill(f"agent-{dst}", "destination agent", "Preparing")
    m.restart(f"agent-{dst}")


def source_agent_live_migrating(m: LiveMove, src: str, dst: str) -> None:
    m.migrate()
    m.wait_step("LiveMigrating")
    wait_for(lambda: m.arrived(dst), 60, 0.02, "the domain arriving on the destination")
    m.kill(f"agent-{src}", "source agent", "LiveMigrating (libvirt's migration running)")
    # libvirt goes on without the agent: the guest leaves the source
    # (unless the agent wrote Migrated in the moment before the kill)
    if m.step() == "LiveMigrating":
        wait_for(lambda: _domains(m.st.libvirt_uris[src]).get(m.uid) is not True, 120, 0.1,
                 "the source's domain shut off by the completed migration")
        m.seen.append("source agent killed during LiveMigrating: libvirt completed the "
                      "migration without it")
    else:
        m.seen.append("source agent killed a moment after it wrote Migrated")
    m.restart(f"agent-{src}")


def operator_at_migrated(m: LiveMove, src: str, dst: str) -> None:
    m.migrate()
    m.wait_step("LiveMigrating")
    m.pause("operator")
    try:
        m.wait_step("Migrated", timeout=120)
    finally:
        m.kill("operator", "operator", "Migrated (before the hand-over)")
    m.restart("operator")


def operator_at_preparing(m: LiveMove, src: str, dst: str) -> None:
    m.held_at_preparing(dst)
    try:
        m.migrate()
        m.wait_step("Preparing")
        m.kill("operator", "operator", "Preparing")
        m.restart("operator")
    finally:
        m.resume(f"agent-{dst}")


def source_agent_at_preparing(m: LiveMove, src: str, dst: str) -> None:
    m.held_at_preparing(dst)
    try:
        m.migrate()
        m.wait_step("Preparing")
        time.sleep(0.5)  # inside its call to the stopped destination agent
        m.kill(f"agent-{src}", "source agent", "Preparing (calling the destination)")
    finally:
        m.resume(f"agent-{dst}")
    m.restart(f"agent-{src}")


def operator_live_migrating(m: LiveMove, src: str, dst: str) -> None:
    m.migrate()
    m.wait_step("LiveMigrating")
    wait_for(lambda: m.arrived(dst), 60, 0.02, "the domain arriving on the destination")
    m.kill("operator", "operator", "LiveMigrating")
    m.restart("operator")


def dest_agent_live_migrating(m: LiveMove, src: str, dst: str) -> None:
    m.migrate()
    m.wait_step("LiveMigrating")
    wait_for(lambda: m.arrived(dst), 60, 0.02, "the domain arriving on the destination")
    m.kill(f"agent-{dst}", "destination agent", "LiveMigrating (the guest arriving)")
    m.restart(f"agent-{dst}")


def operator_at_claiming(when: str) -> Callable[[LiveMove, str, str], None]:
    """The operator killed inside its claim's POST, held ``before`` or
    ``after`` Placement saw it (Move.kill_at_claiming)."""

    def kill(m: LiveMove, src: str, dst: str) -> None:
        m.seen.append(m.kill_at_claiming(when, m.migrate, src, dst, SMALL, SMALL))

    return kill


def test_kill_9_of_the_operator_at_claiming(guest: LiveMove) -> None:
    """The move goes on after the restart: a claim Placement never saw is
    made again, one it committed is adopted (no second claim)."""
    guest.kills.clear()
    t_start = time.monotonic()
    for when in ("before", "after"):
        guest.case(operator_at_claiming(when))
    _report(guest, t_start, "the operator at step Claiming")


def test_kill_9_of_each_process_during_a_live_migration(guest: LiveMove) -> None:
    t_start = time.monotonic()
    for kill in (dest_agent_at_preparing, source_agent_live_migrating, operator_at_migrated):
        guest.case(kill)
    _report(guest, t_start, "one kill per process")


@pytest.mark.slow
def test_kill_9_at_the_other_steps_of_a_live_migration(guest: LiveMove) -> None:
    guest.kills.clear()
    t_start = time.monotonic()
    for kill in (operator_at_preparing, source_agent_at_preparing, operator_live_migrating,
                 dest_agent_live_migrating):
        guest.case(kill)
    _report(guest, t_start, "the other steps")


def _running_id(uri: str, uid: str) -> tuple[int, int]:
    """libvirt's id of the Instance's domain (a new one at every start) and its state."""
    conn = libvirt.open(uri)
    try:
        dom = conn.lookupByUUIDString(uid)
        return dom.ID(), dom.state()[0]
    finally:
        conn.close()


def test_destination_libvirtd_stopped_during_a_live_migration(guest: LiveMove,
                                                              stack: BedStack) -> None:
    """Through the operator (``kubectl kova migrate --live``): the
    destination's libvirtd killed once the guest is arriving; the migration
    fails, the guest runs on where it was (the same domain, not started
    again), the source's allocation back to the Instance; the restarted
    libvirtd and the destination agent leave nothing of it there."""
    m = guest
    t_start = time.monotonic()
    started = len(m.obj()["status"].get("actions") or [])
    src, dst = m.host(), m.other(m.host())
    before = _running_id(stack.libvirt_uris[src], m.uid)
    m.migrate()
    m.wait_step("LiveMigrating")
    wait_for(lambda: m.arrived(dst), 60, 0.02, "the domain arriving on the destination")
    bed = stack._bed(dst)
    bed.kill_libvirtd()
    try:
        obj = wait_for(lambda: "migration" not in (o := m.obj())["status"] and o, 180, 0.2,
                       "the live migration ended")
    finally:
        bed.start_libvirtd()
        stack.libvirt_uris[dst] = bed.uri
    st = obj["status"]
    cond = next(c for c in st["conditions"] if c["type"] == names.COND_RESIZED)
    assert (cond["status"], cond["reason"]) == ("False", names.REASON_LIVE_MIGRATION_FAILED), cond
    assert f"runs on {src}" in cond["message"], cond
    assert f"the connection to the destination's libvirtd ({dst}" in cond["message"], cond
    assert len(st["actions"]) > started, st["actions"]
    assert (st["actions"][-1]["action"], st["actions"][-1]["result"]) == \
        ("migrate", "Error"), st["actions"][-1]
    # users see it: the operator's Warning Event says what broke
    wait_for(lambda: any(e.reason == names.REASON_LIVE_MIGRATION_FAILED and e.type == "Warning"
                         and "destination's libvirtd" in (e.message or "")
                         for e in m.h.core.list_namespaced_event(
                             m.h.ns, field_selector=f"involvedObject.uid={m.uid}").items),
             30, 0.5, "the Warning Event naming the destination's libvirtd")
    # the books, and nothing of it on the destination once its libvirtd is back
    m.settled(src, SMALL, timeout=180)
    after = _running_id(stack.libvirt_uris[src], m.uid)
    assert after == (before[0], libvirt.VIR_DOMAIN_RUNNING), (before, after)
    record(
        "Destination libvirtd stopped during a live migration",
        "2 hosts of the bed (libvirtd each in its own network namespace, QEMU/TCG): "
        "`kubectl kova migrate --live`, the destination's libvirtd killed (SIGKILL) once the "
        "guest was arriving, started again after the move ended",
        1, lost=0, duplicated=0, overcommitted=0,
        result="the move ended Resized=False LiveMigrationFailed, its message naming the "
               "destination's libvirtd, the action in Error; the guest Running on the source (the same domain, not started "
               "again), Placement charging the source only, the migration consumer empty, "
               "nothing of it on the destination after its libvirtd came back",
        figures={"seconds": round(time.monotonic() - t_start, 1),
                 "message": cond["message"][:300]})
