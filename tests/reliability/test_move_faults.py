"""Fault: kill -9 of the operator, of the source agent and of the
destination agent in the middle of a cold migration and of a resize.

Real processes (``kova dev``'s multi-host stack, kova.dev.stack.Stack):
Placement, the operator and two compute agents, each host with its own
libvirtd running QEMU (TCG); the guest boots a blank disk carrying 64 MiB of
data and waits in its firmware (it ignores the ACPI power button, so every
stop takes the agent's --shutdown-timeout, 3 s here: the window in which
the source agent is killed during step Moving).  Moves are started and
decided through ``kubectl kova migrate`` / ``kubectl kova resize`` (the
API component).  One stack, one Instance moved back and forth, one case
after another:

1. source agent killed while it stops the guest (step Moving, after the
   claim); confirm;
2. destination agent killed during the disk copy (its partial file on
   disk); revert;
3. source agent killed during the disk copy; confirm;
4. destination agent killed in step Finishing (its libvirtd paused, so the
   agent is inside its define); confirm;
5. operator killed at step Copied (paused from step Moving on, so it had
   not handed the Instance over); revert;
6. operator killed after the user's confirm, before it acted; the
   confirm completes;
7. resize in place: the agent killed during step Moving; revert, with the
   operator killed at step Reverted (before it gave the old allocation
   back);
8. revert of a cold migration: the destination agent killed in step
   Reverting, then the source agent in step Restoring (each with its
   libvirtd paused).

After each case: the Instance Running exactly once (one active domain
across both libvirtds, on the host status.host names), Placement's
allocations equal to what runs (the Instance's consumer on that host's
provider only, the migration consumer empty, each provider's usage exactly
the Instance's or nothing), and the other host holding neither a domain nor
a directory of the Instance after its next resync.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from kova.crds import names
from kova.dev.stack import Stack
from tests.fixtures.agents import Harness
from tests.fixtures.vm import PLUGIN, plugin
from tests.helpers import wait_for
from tests.reliability.guests import _destroy_all, _domains
from tests.reliability.record import record
from tests.support.placement_hold import PlacementHold

pytestmark = [pytest.mark.reliability, pytest.mark.integration]

SMALL = {"vcpus": 1, "memoryMiB": 128, "diskGiB": 1}
BIG = {"vcpus": 2, "memoryMiB": 192, "diskGiB": 2}
RC = {"vcpus": "VCPU", "memoryMiB": "MEMORY_MB", "diskGiB": "DISK_GB"}


@contextmanager
def move_stack(k8s, namespace: str, tmp_path: Path, kubectl,
               hold: PlacementHold | None = None) -> Iterator[Stack]:
    """Placement, the operator and two agents, each host its private libvirtd;
    with ``hold`` the operator reaches Placement through that proxy."""
    suffix = uuid.uuid4().hex[:5]
    hosts = [f"mf-a-{suffix}", f"mf-b-{suffix}"]
    (tmp_path / "images").mkdir(exist_ok=True)
    st = Stack(root=tmp_path / "stack",
               operator_args=["--host-check-interval", "0.5", "--backoff-max", "2",
                              "--resize-confirm-window", "0"],
               agent_args=["--shutdown-timeout", "3", "--resync-seconds", "2",
                           "--image-host-dir", str(tmp_path / "images")])
    if hold is not None:
        hold.upstream = lambda: st.placement_url if st.placement_port else ""
        st.operator_args += ["--placement-url", hold.url]
    try:
        st.start(k8s, hosts, progress=lambda m: None, namespaces=[namespace])
        yield st
    finally:
        for name in list(st.pids):  # a case that failed may have left one paused
            try:
                os.kill(st.pids[name], signal.SIGCONT)
            except ProcessLookupError:
                pass
        kubectl("-n", namespace, "delete", "instances", "--all", "--wait=false", check=False)
        for h in hosts:
            kubectl("delete", "host.kova.dev", h, "--ignore-not-found", "--wait=false",
                    check=False)
        for uri in st.libvirt_uris.values():
            _destroy_all(uri)
        st.stop()
        for log in sorted(st.log_dir.glob("*.log")):
            print(f"--- {log.name}\n" + "\n".join(log.read_text().splitlines()[-30:]))


@pytest.fixture
def stack(k8s, kova_crds, kova_api, namespace, tmp_path: Path, kubectl):
    with move_stack(k8s, namespace, tmp_path, kubectl) as st:
        yield st


class Move:
    """The reads, kills and checks of the cases, on one stack and Instance."""

    def __init__(self, stack: Stack, h: Harness, kubeconfig, placement) -> None:
        self.st, self.h, self.kc, self.http = stack, h, kubeconfig, placement
        self.uid = ""
        self.kills: list[str] = []
        #: the proxy in front of the operator's Placement, where one is
        self.hold: PlacementHold | None = None
        #: every migration UUID seen: each consumer must end empty
        self.mig_ids: set[str] = set()

    # ---- reads
    def obj(self) -> dict:
        return self.h.get("vm") or {}

    def mig(self) -> dict:
        return (self.obj().get("status") or {}).get("migration") or {}

    def step(self) -> str | None:
        return self.mig().get("step")

    def host(self) -> str:
        return self.obj()["status"]["host"]

    def other(self, host: str) -> str:
        return next(x for x in self.st.hosts if x != host)

    def dir(self, host: str) -> Path:
        return self.st.root / "instances" / host / self.uid

    def rp(self, host: str) -> str:
        return self.h.custom.get_cluster_custom_object(
            "kova.dev", "v1alpha1", "hosts", host)["status"]["resourceProviderUUID"]

    def allocs(self, consumer: str) -> dict:
        return self.http.get(f"/allocations/{consumer}").json()["allocations"]

    def usages(self, host: str) -> dict:
        u = self.http.get(f"/resource_providers/{self.rp(host)}/usages").json()["usages"]
        return {k: v for k, v in u.items() if v}

    # ---- faults
    def pause(self, name: str) -> None:
        os.kill(self.st.pids[name], signal.SIGSTOP)

    def resume(self, name: str) -> None:
        os.kill(self.st.pids[name], signal.SIGCONT)

    def kill(self, name: str, who: str, at: str) -> None:
        self.st.kill(name)  # SIGKILL, waits until it is gone
        self.kills.append(f"{who} at {at}")

    def restart(self, name: str) -> None:
        if name == "operator":
            self.st.start_operator()
        else:
            self.st.start_agent(name.removeprefix("agent-"))

    def wait_step(self, *steps: str, timeout: float = 60) -> str:
        got = wait_for(lambda: (s := self.step()) in steps and s, timeout, 0.02,
                       f"step {'/'.join(steps)} (now {self.step()})")
        if self.mig().get("uuid"):
            self.mig_ids.add(self.mig()["uuid"])
        return got

    def wait_file(self, path: Path, timeout: float = 60) -> None:
        wait_for(lambda: path.exists(), timeout, 0.005, f"{path.name} on its host")

    def kill_at_claiming(self, when: str, start, src: str, dst: str, old: dict,
                         new: dict) -> str:
        """The operator killed inside its claim's ``POST /allocations``, which
        the proxy holds ``before`` Placement saw it or ``after`` Placement
        committed it (the answer kept back); ``start()`` asks for the move.
        Checks that Placement holds what the request left (nothing moved,
        or the whole claim: the migration consumer ``old`` on ``src``, the
        Instance ``new`` on ``dst``), restarts the operator; what was seen."""
        assert self.hold is not None
        self.hold.arm(when)
        try:
            start()
            assert self.hold.held.wait(120), "the operator's claim never reached the proxy"
            mig = self.mig()
            assert mig.get("step") == names.MigrationStep.CLAIMING, mig
            self.mig_ids.add(mig["uuid"])
            what = ("resize" if mig.get("type") == "resize"
                    else f"{mig.get('mode') or 'cold'} migration")
            self.kill("operator", "operator", f"Claiming of a {what} (its claim POST held "
                      f"{when} Placement {'saw' if when == 'before' else 'committed'} it)")
        finally:
            self.hold.disarm()
        held = {rp: a["resources"] for rp, a in self.allocs(mig["uuid"]).items()}
        own = {rp: a["resources"] for rp, a in self.allocs(self.uid).items()}

        def charge(size: dict) -> dict:
            return {RC[k]: v for k, v in size.items()}

        if when == "before":
            assert (held, own) == ({}, {self.rp(src): charge(old)}), (held, own)
        else:
            assert self.hold.caught[-1][1] == 204, self.hold.caught[-1]
            assert (held, own) == ({self.rp(src): charge(old)}, {self.rp(dst): charge(new)}), \
                (held, own)
        self.restart("operator")
        return (f"claim held {when} Placement: migration consumer "
                f"{'empty' if not held else 'holding the old allocation'}")

    # ---- the user
    def kova(self, *args: str) -> None:
        out = plugin(self.kc, *args, "-n", self.h.ns, timeout=180)
        assert out.returncode == 0, (args, out.stdout, out.stderr)

    def decide(self, decision: str) -> subprocess.Popen:
        """``kubectl kova resize --confirm|--revert`` in the background: the
        API component answers once the operator has finished the move."""
        return subprocess.Popen([PLUGIN, "resize", "vm", decision, "-n", self.h.ns],
                                env={**os.environ, "KUBECONFIG": str(self.kc)},
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    @staticmethod
    def answered(proc: subprocess.Popen) -> None:
        out, err = proc.communicate(timeout=180)
        assert proc.returncode == 0, (out, err)

    # ---- the books
    def settled(self, host: str, size: dict, timeout: float = 120) -> None:
        """Running exactly once on ``host``, Placement charging exactly that,
        nothing of the Instance left on the other host."""
        obj = wait_for(lambda: (o := self.obj())["status"].get("phase") == "Running"
                       and "migration" not in o["status"] and o, timeout, 0.2,
                       "Running with no move recorded")
        assert obj["status"]["host"] == host, obj["status"]
        assert obj["metadata"]["labels"][names.LABEL_HOST] == host
        assert obj["status"]["resources"] == size
        other = self.other(host)
        uris = self.st.libvirt_uris
        wait_for(lambda: self.uid not in _domains(uris[other]) and not self.dir(other).exists(),
                 60, 0.3, f"no domain nor directory of the Instance on {other}")
        active = [h for h in self.st.hosts if _domains(uris[h]).get(self.uid)]
        assert active == [host], active
        assert list(self.allocs(self.uid)) == [self.rp(host)]
        for m in self.mig_ids:
            assert self.allocs(m) == {}, m
        assert self.usages(host) == {RC[k]: v for k, v in size.items()}
        assert self.usages(other) == {}


def start_guest(stack: Stack, k8s_client, kubeconfig, namespace: str, tmp_path: Path,
                small_image: Path, request, hold: PlacementHold | None = None) -> Move:
    """The Instance ``vm`` (Flavor small, 64 MiB of data on its disk)
    Running on the stack's first host."""
    import httpx

    stack.wait_hosts_up()
    a = stack.hosts[0]
    h = Harness(k8s_client, kubeconfig, namespace, tmp_path, a)
    request.addfinalizer(h.cleanup)  # the Flavors and the Image
    placement = httpx.Client(base_url=stack.placement_url, timeout=30, headers={
        "X-Auth-Token": stack.placement_token, "OpenStack-API-Version": "placement 1.39"})
    request.addfinalizer(placement.close)
    m = Move(stack, h, kubeconfig, placement)
    m.hold = hold
    # 64 MiB of data: the copy lasts long enough to be caught in the middle
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 0x5a 0 64M", str(small_image)],
                   check=True, capture_output=True)
    sfx = namespace[-6:]
    h.flavor(f"mf-small-{sfx}", **SMALL)
    h.flavor(f"mf-big-{sfx}", **BIG)
    h.image(f"mf-img-{sfx}", small_image)
    m.uid = h.instance("vm", f"mf-img-{sfx}", flavor=f"mf-small-{sfx}",
                       schedule=False)["metadata"]["uid"]
    h.wait_phase("vm", "Running", timeout=120)
    return m


def test_kill_9_during_cold_migration_and_resize(stack, k8s_client, kubeconfig, namespace,
                                                 tmp_path, small_image, request):
    t_start = time.monotonic()
    m = start_guest(stack, k8s_client, kubeconfig, namespace, tmp_path, small_image, request)
    h, sfx = m.h, namespace[-6:]
    seen_mid: list[str] = []

    # 1. the source agent dies while it stops the guest (after the claim)
    src = m.host()
    dst = m.other(src)
    m.kova("migrate", "vm", "--no-wait")
    m.wait_step("Moving")
    time.sleep(0.5)  # inside the 3 s shutdown wait
    assert _domains(stack.libvirt_uris[src]).get(m.uid) is True  # still stopping
    m.kill(f"agent-{src}", "source agent", "Moving (stopping the guest)")
    m.restart(f"agent-{src}")
    m.wait_step("Verify", timeout=90)
    m.kova("resize", "vm", "--confirm")
    m.settled(dst, SMALL)

    # 2. the destination agent dies in the middle of the disk copy; revert
    src, dst = dst, src
    m.kova("migrate", "vm", "--no-wait")
    part = m.dir(dst) / ".disk.incoming.part"
    m.wait_file(part)
    m.kill(f"agent-{dst}", "destination agent", "the disk copy")
    seen_mid.append(f"partial file on the destination: {part.exists()}, "
                    f"disk complete: {(m.dir(dst) / 'disk.qcow2').exists()}")
    assert not (m.dir(dst) / "disk.qcow2").exists()
    time.sleep(1)  # the source's send fails and is retried with back-off
    m.restart(f"agent-{dst}")
    m.wait_step("Verify", timeout=90)
    m.kova("resize", "vm", "--revert")
    m.settled(src, SMALL)

    # 3. the source agent dies in the middle of the disk copy; confirm
    m.kova("migrate", "vm", "--no-wait")
    part = m.dir(dst) / ".disk.incoming.part"
    m.wait_file(part)
    m.kill(f"agent-{src}", "source agent", "the disk copy")
    assert m.step() == "Moving"
    m.restart(f"agent-{src}")
    m.wait_step("Verify", timeout=90)
    m.kova("resize", "vm", "--confirm")
    m.settled(dst, SMALL)

    # 4. the destination agent dies inside step Finishing (its libvirtd
    # paused once the disk arrived, so its libvirt calls hang)
    src, dst = dst, src
    m.kova("migrate", "vm", "--no-wait")
    m.wait_file(m.dir(dst) / "disk.qcow2")
    m.pause(f"libvirtd-{dst}")
    try:
        m.wait_step("Finishing")
        time.sleep(1)
        m.kill(f"agent-{dst}", "destination agent", "Finishing (its libvirtd paused)")
    finally:
        m.resume(f"libvirtd-{dst}")
    m.restart(f"agent-{dst}")
    m.wait_step("Verify", timeout=90)
    m.kova("resize", "vm", "--confirm")
    m.settled(dst, SMALL)

    # 5. the operator dies at step Copied (paused from Moving on); revert
    src, dst = dst, src
    m.kova("migrate", "vm", "--no-wait")
    m.wait_step("Moving")
    m.pause("operator")
    try:
        m.wait_step("Copied")
    finally:
        m.kill("operator", "operator", "Copied (before the hand-over)")
    m.restart("operator")
    m.wait_step("Verify", timeout=90)
    m.kova("resize", "vm", "--revert")
    m.settled(src, SMALL)

    # 6. the operator dies after the user's confirm, before it acted
    m.kova("migrate", "vm", "--no-wait")
    m.wait_step("Verify", timeout=90)
    m.pause("operator")
    try:
        asked = m.decide("--confirm")
        wait_for(lambda: m.mig().get("decision"), 30, 0.1, "the confirm recorded")
    finally:
        m.kill("operator", "operator", "Verify (a confirm to act on)")
    m.restart("operator")
    m.answered(asked)
    m.settled(dst, SMALL)

    # 7. resize in place (the other host disabled): the agent dies during
    # step Moving; revert, the operator killed at step Reverted
    host = dst
    h.custom.patch_cluster_custom_object("kova.dev", "v1alpha1", "hosts", m.other(host),
                                         {"spec": {"enabled": False}})
    m.kova("resize", "vm", "--flavor", f"mf-big-{sfx}", "--no-wait")
    m.wait_step("Moving")
    time.sleep(0.5)
    m.kill(f"agent-{host}", "agent", "Moving of a resize (stopping the guest)")
    m.restart(f"agent-{host}")
    m.wait_step("Verify", timeout=90)
    assert list(m.allocs(m.uid)) == [m.rp(host)]
    assert m.usages(host) == {RC[k]: SMALL[k] + BIG[k] for k in RC}  # both sizes held
    asked = m.decide("--revert")
    m.wait_step("Reverting")
    m.pause("operator")  # the agent's revert takes the 3 s shutdown wait
    try:
        m.wait_step("Reverted")
    finally:
        m.kill("operator", "operator", "Reverted of a resize (before the allocation went back)")
    m.restart("operator")
    m.answered(asked)
    m.settled(host, SMALL)
    h.custom.patch_cluster_custom_object("kova.dev", "v1alpha1", "hosts", m.other(host),
                                         {"spec": {"enabled": True}})

    # 8. a revert of a cold migration with both agents killed in their
    # steps: the destination in Reverting, the source in Restoring (each
    # with its libvirtd paused, so that its libvirt calls hang)
    src, dst = host, m.other(host)
    m.kova("migrate", "vm", "--no-wait")
    m.wait_step("Verify", timeout=90)
    # (the spec still names the bigger Flavor the revert of 7 declined: a
    # migration keeps the size the Instance has)
    assert m.allocs(m.uid)[m.rp(dst)]["resources"] == {RC[k]: v for k, v in SMALL.items()}
    m.pause(f"libvirtd-{dst}")
    try:
        asked = m.decide("--revert")
        m.wait_step("Reverting")
        time.sleep(1)
        m.kill(f"agent-{dst}", "destination agent", "Reverting (its libvirtd paused)")
        m.pause(f"libvirtd-{src}")
    finally:
        m.resume(f"libvirtd-{dst}")
    try:
        m.restart(f"agent-{dst}")
        m.wait_step("Restoring")
        time.sleep(1)
        m.kill(f"agent-{src}", "source agent", "Restoring (its libvirtd paused)")
    finally:
        m.resume(f"libvirtd-{src}")
    m.restart(f"agent-{src}")
    m.answered(asked)
    m.settled(src, SMALL)
    assert len(m.mig_ids) == 8, m.mig_ids

    record(
        "Kill -9 during a move",
        "2 hosts (private libvirtd, QEMU/TCG, guest in its firmware, 64 MiB disk): 7 cold "
        "migrations and 1 resize, each with one or two processes killed (kill -9) at a step "
        "and restarted: " + "; ".join(m.kills),
        len(m.kills), lost=0, duplicated=0, overcommitted=0,
        result="every move reached Verify after the restart and was confirmed or reverted; "
               "the Instance Running once, on the host Placement charges, migration "
               "consumers empty, nothing of it left on the other host",
        figures={"seconds": round(time.monotonic() - t_start, 1), "kills": len(m.kills),
                 "mid_copy": seen_mid})


@pytest.mark.slow
def test_kill_9_of_the_operator_at_claiming_a_cold_migration_and_a_resize(
        k8s, kova_crds, kova_api, namespace, tmp_path, kubectl, k8s_client, kubeconfig,
        small_image, request):
    """The operator reaches Placement through a proxy that holds its claim;
    killed there, restarted: each move reaches Verify once, is confirmed or
    reverted, and the books settle (no second claim, no migration consumer
    left)."""
    t_start = time.monotonic()
    with PlacementHold(lambda: "") as hold, \
            move_stack(k8s, namespace, tmp_path, kubectl, hold) as stack:
        m = start_guest(stack, k8s_client, kubeconfig, namespace, tmp_path, small_image,
                        request, hold)
        sfx, seen = namespace[-6:], []
        # 1. a cold migration, the claim held before Placement saw it; confirm
        src = m.host()
        dst = m.other(src)
        seen.append(m.kill_at_claiming("before", lambda: m.kova("migrate", "vm", "--no-wait"),
                                       src, dst, SMALL, SMALL))
        m.wait_step("Verify", timeout=90)
        m.kova("resize", "vm", "--confirm")
        m.settled(dst, SMALL)
        # 2. a cold migration, the claim committed by Placement; revert
        src, dst = dst, src
        seen.append(m.kill_at_claiming("after", lambda: m.kova("migrate", "vm", "--no-wait"),
                                       src, dst, SMALL, SMALL))
        m.wait_step("Verify", timeout=90)
        m.kova("resize", "vm", "--revert")
        m.settled(src, SMALL)
        # 3. a resize in place (the other host disabled), the claim held before
        # Placement saw it; revert: the old size, the old allocation back
        host = src
        m.h.custom.patch_cluster_custom_object("kova.dev", "v1alpha1", "hosts", m.other(host),
                                               {"spec": {"enabled": False}})

        def resize() -> None:
            m.kova("resize", "vm", "--flavor", f"mf-big-{sfx}", "--no-wait")

        seen.append(m.kill_at_claiming("before", resize, host, host, SMALL, SMALL))
        m.wait_step("Verify", timeout=90)
        m.kova("resize", "vm", "--revert")
        m.settled(host, SMALL)
        # 4. a resize to another Flavor of the same size (a new generation of
        # the spec), the claim committed by Placement; confirm: the new size only
        m.h.flavor(f"mf-big2-{sfx}", **BIG)

        def resize() -> None:
            m.kova("resize", "vm", "--flavor", f"mf-big2-{sfx}", "--no-wait")

        seen.append(m.kill_at_claiming("after", resize, host, host, SMALL, BIG))
        m.wait_step("Verify", timeout=90)
        m.kova("resize", "vm", "--confirm")
        m.settled(host, BIG)
        record(
            "Kill -9 at step Claiming of a cold migration and a resize",
            "2 hosts (private libvirtd, QEMU/TCG, guest in its firmware): the operator's "
            "claim (POST /allocations) held by a proxy in front of Placement, the operator "
            "killed (kill -9) there and restarted: " + "; ".join(m.kills),
            len(m.kills), lost=0, duplicated=0, overcommitted=0,
            result="each move reached Verify after the restart and was confirmed or reverted; "
                   "the Instance Running once, on the host Placement charges, at its size; "
                   "migration consumers empty, nothing of it left on the other host",
            figures={"seconds": round(time.monotonic() - t_start, 1), "seen": seen})
