"""Host failure, fencing and evacuation with real components.

The multi-host stack of ``kova dev`` (kova.dev.stack.Stack): Placement, the
operator and two compute agents, each host with its own libvirtd running QEMU
(TCG), against the session's kube-apiserver; heartbeat Leases of 6 s.

1. Host A's agent is killed (kill -9): A goes Down, its Instance is marked
   Unknown, and nothing is moved -- its QEMU process runs on.  The agent
   comes back: the same guest is Running again.  It is killed once more.
2. A is fenced (Host.spec.fenced): the Instance is rebuilt on B (new overlay,
   seed with the same user data) and Running; its allocation moved to B.  A
   new Instance asking for A stays Pending while A is fenced.
3. A's agent comes back: it destroys its stale domain instead of running a
   second copy.  Unfencing A lets the pending Instance boot there.
4. B's Node is tainted node.kubernetes.io/out-of-service while B's agent
   runs: the Instance moves back to A and B's agent removes its copy at once.

At the end every Instance runs exactly once, on the host Placement charges.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import httpx
import pytest

from kova.dev.stack import Stack, link_test_image
from tests.helpers import BOOT_TIMEOUT, flavor_image_manifests, instance_manifest, wait_for
from tests.reliability.guests import _destroy_all, _domains, _qemu_pid
from tests.reliability.record import long_run, record

pytestmark = [pytest.mark.e2e, pytest.mark.reliability]

LEASE_S = 6


@pytest.fixture
def stack(k8s, kova_crds, libvirtd, test_image, namespace, tmp_path: Path, kubectl):
    link_test_image(test_image)
    suffix = uuid.uuid4().hex[:5]
    hosts = [f"hf-a-{suffix}", f"hf-b-{suffix}"]
    st = Stack(root=tmp_path / "stack",
               operator_args=["--host-check-interval", "0.5"],
               agent_args=["--lease-duration-seconds", str(LEASE_S),
                           "--lease-renew-seconds", "1"])
    try:
        st.start(k8s, hosts, progress=lambda m: None, namespaces=[namespace])
        yield st
    finally:
        kubectl("-n", namespace, "delete", "instances", "--all", "--wait=false", check=False)
        for h in hosts:
            kubectl("delete", "node", h, "--ignore-not-found", check=False)
            kubectl("delete", "host.kova.dev", h, "--ignore-not-found", "--wait=false",
                    check=False)
        for uri in st.libvirt_uris.values():
            _destroy_all(uri)
        st.stop()
        for log in sorted(st.log_dir.glob("*.log")):
            print(f"--- {log.name}\n" + "\n".join(log.read_text().splitlines()[-25:]))


def test_down_unknown_fence_evacuate_stale_domain_removed_unfence_node_taint(
    stack: Stack, kubectl, namespace: str
) -> None:
    a, b = stack.hosts
    uri = stack.libvirt_uris
    tag = namespace[-6:]

    def get(kind: str, name: str | None = None, ns: bool = True) -> dict:
        args = ["-n", namespace] if ns else []
        return json.loads(kubectl(*args, "get", kind, *([name] if name else []),
                                  "-o", "json").stdout)

    def host_state(h: str) -> str | None:
        return stack.host_states().get(h)  # None: not registered yet

    def inst(name: str) -> dict:
        return get("instances", name)

    def cond(obj: dict, type_: str) -> dict:
        return next((c for c in (obj.get("status") or {}).get("conditions") or []
                     if c["type"] == type_), {})

    def running_on(name: str, host: str):
        i = inst(name)
        s = i.get("status") or {}
        return s.get("phase") == "Running" and s.get("host") == host and i

    def console_has(i: dict, text: str) -> bool:
        p = Path(i["status"]["console"]["logPath"])
        return p.exists() and text in p.read_text(errors="replace")

    stack.wait_hosts_up()
    kubectl("apply", "-f", "-", input="".join(f"""---
apiVersion: v1
kind: Node
metadata: {{name: {h}}}
""" for h in (a, b)))

    flavor, image = f"hf-small-{tag}", f"hf-image-{tag}"

    def apply_instance(name: str, host: str) -> None:
        kubectl("-n", namespace, "apply", "-f", "-", input=instance_manifest(
            name, flavor, image, f"HF-USERDATA {name}",
            schedulingHints={"requestedHost": host}))

    kubectl("apply", "-f", "-", input=flavor_image_manifests(flavor, image))
    # vm-1 carries every check; the long variant puts more Instances on A,
    # evacuated together with it.
    extra = [f"vm-x{i}" for i in range(3 if long_run() else 0)]
    # Booting under TCG with the stale copies still running on A (nothing
    # powers the simulated host off) takes long on a loaded 2-core machine.
    console_timeout = BOOT_TIMEOUT + (180 if extra else 0)
    apply_instance("vm-1", a)
    for name in extra:
        apply_instance(name, a)
    first = wait_for(lambda: running_on("vm-1", a), 120, 0.5, "vm-1 Running on A")
    for name in extra:
        wait_for(lambda: running_on(name, a), 180, 0.5, f"{name} Running on A")
    extra_uids = {inst(n)["metadata"]["uid"] for n in extra}
    uid = first["metadata"]["uid"]
    dom = f"{namespace}.vm-1"
    pid_a = wait_for(lambda: _qemu_pid(stack, a, dom), 10, 0.2, "QEMU pid of vm-1 on A")

    # 1. A's agent dies: Down, Unknown, nothing moved.
    t0 = time.monotonic()
    stack.kill(f"agent-{a}")
    wait_for(lambda: host_state(a) == "Down", 60, 0.2, "host A Down")
    t_down = time.monotonic() - t0
    unknown = wait_for(lambda: (i := inst("vm-1"))["status"].get("phase") == "Unknown" and i,
                       30, 0.3, "vm-1 Unknown")
    assert unknown["status"]["powerState"] == "Unknown"
    assert cond(unknown, "Ready")["reason"] == "HostDown"
    assert unknown["status"]["host"] == a
    assert unknown["metadata"]["labels"]["kova.dev/host"] == a
    assert _qemu_pid(stack, a, dom) == pid_a  # the guest runs on, untouched
    assert uid not in _domains(uri[b])

    # The agent comes back without fencing: the same guest is Running again.
    t_r = time.monotonic()
    stack.start_agent(a)
    wait_for(lambda: running_on("vm-1", a), 60, 0.3, "vm-1 Running on A again")
    t_recover = time.monotonic() - t_r
    assert _qemu_pid(stack, a, dom) == pid_a
    assert cond(inst("vm-1"), "Ready")["status"] == "True"
    wait_for(lambda: host_state(a) == "Up", 30, 0.3, "host A Up")
    stack.kill(f"agent-{a}")  # and fails again, for good this time
    wait_for(lambda: host_state(a) == "Down" and inst("vm-1")["status"].get("phase")
             == "Unknown", 60, 0.3, "host A Down, vm-1 Unknown again")

    # 2. Fence A: vm-1 is rebuilt on B.
    t1 = time.monotonic()
    kubectl("patch", "host.kova.dev", a, "--type=merge", "-p", '{"spec":{"fenced":true}}')
    moved = wait_for(lambda: running_on("vm-1", b), 90, 0.3, "vm-1 Running on B")
    for name in extra:
        wait_for(lambda: running_on(name, b), 120, 0.3, f"{name} Running on B")
    t_evac = time.monotonic() - t1
    assert moved["metadata"]["uid"] == uid
    assert moved["metadata"]["labels"]["kova.dev/host"] == b
    assert cond(moved, "Scheduled")["reason"] == "Evacuated"
    assert Path(moved["status"]["console"]["logPath"]).is_relative_to(
        stack.root / "instances" / b)
    wait_for(lambda: console_has(inst("vm-1"), "HF-USERDATA vm-1"), console_timeout, 0.5,
             "vm-1's user data on its console on B")
    t_evac_console = time.monotonic() - t1
    pid_b = _qemu_pid(stack, b, dom)
    assert pid_b is not None
    events = get("events")["items"]
    assert any(e["reason"] == "Evacuated" and e["involvedObject"]["name"] == "vm-1"
               for e in events)
    apply_instance("vm-2", a)  # A is fenced: no new Instance
    pending = wait_for(lambda: (i := inst("vm-2")).get("status", {}).get("phase") == "Pending"
                       and i, 30, 0.3, "vm-2 Pending")
    assert cond(pending, "Scheduled")["reason"] == "NoValidHost"

    # 3. A's agent returns: the stale copy is destroyed, not run twice.
    t2 = time.monotonic()
    stack.start_agent(a)
    wait_for(lambda: not ({uid} | extra_uids) & set(_domains(uri[a])), 60, 0.3,
             "stale domains gone from A")
    t_stale = time.monotonic() - t2
    assert _qemu_pid(stack, a, dom) is None
    wait_for(lambda: host_state(a) == "Up", 30, 0.3, "host A Up")
    assert running_on("vm-1", b) and _qemu_pid(stack, b, dom) == pid_b
    assert any(e["reason"] == "StaleDomainRemoved" for e in get("events")["items"])
    assert inst("vm-2").get("status", {}).get("host") is None
    kubectl("patch", "host.kova.dev", a, "--type=merge", "-p", '{"spec":{"fenced":false}}')
    wait_for(lambda: running_on("vm-2", a), 120, 0.5, "vm-2 Running on A after unfencing")

    # 4. B's Node tainted out-of-service, B's agent alive: vm-1 moves back to A.
    t3 = time.monotonic()
    kubectl("taint", "node", b, "node.kubernetes.io/out-of-service=nodeshutdown:NoExecute")
    back = wait_for(lambda: running_on("vm-1", a), 120, 0.3, "vm-1 Running on A again")
    for name in extra:
        wait_for(lambda: running_on(name, a), 120, 0.3, f"{name} Running on A again")
    t_evac2 = time.monotonic() - t3
    wait_for(lambda: not ({uid} | extra_uids) & set(_domains(uri[b])), 30, 0.3,
             "the copies gone from B")
    assert "NodeOutOfService" in cond(back, "Scheduled")["message"]
    host_b = get("hosts.kova.dev", b, ns=False)
    assert cond(host_b, "Fenced").get("reason") == "NodeOutOfService"

    # Count: every Instance Running once, on the host Placement charges.
    headers = {"X-Auth-Token": stack.placement_token,
               "OpenStack-API-Version": "placement 1.39"}
    doms = {h: _domains(uri[h]) for h in (a, b)}
    lost = duplicated = over = 0
    with httpx.Client(base_url=stack.placement_url, headers=headers) as pc:
        rps = {rp["name"]: rp["uuid"]
               for rp in pc.get("/resource_providers").json()["resource_providers"]}
        for name in ["vm-1", "vm-2", *extra]:
            i = inst(name)
            u, host = i["metadata"]["uid"], i["status"]["host"]
            allocs = pc.get(f"/allocations/{u}").json()["allocations"]
            copies = [h for h in (a, b) if doms[h].get(u)]
            if len(copies) > 1 or len(allocs) > 1:
                duplicated += 1
            if (i["status"]["phase"] != "Running" or copies != [host]
                    or list(allocs) != [rps[host]]):
                lost += 1
        for h in (a, b):
            inv = pc.get(f"/resource_providers/{rps[h]}/inventories").json()["inventories"]
            used = pc.get(f"/resource_providers/{rps[h]}/usages").json()["usages"]
            for rc, n in used.items():
                cap = (inv[rc]["total"] - inv[rc]["reserved"]) * inv[rc]["allocation_ratio"]
                over += n > cap
    assert (lost, duplicated, over) == (0, 0, 0), doms
    kubectl("taint", "node", b, "node.kubernetes.io/out-of-service-")

    record(fault="Host failure and evacuation",
           injected=f"{1 + len(extra)} Instance(s) on host A of 2 hosts (private libvirtd, "
                    "QEMU/TCG), Lease 6 s: kill -9 of host A's "
                    "agent, restarted, killed again; A fenced (spec.fenced); A's agent restarted; A unfenced; host B's "
                    "Node tainted out-of-service with its agent running",
           times=2, lost=lost, duplicated=duplicated, overcommitted=over,
           result=f"A Down {t_down:.1f}s after the kill (Instance Unknown, not moved); "
                  f"status Running again {t_recover:.1f}s after the agent came back unfenced; "
                  f"evacuated and Running on B {t_evac:.1f}s after fencing (user data on "
                  f"its console after {t_evac_console:.1f}s); stale domain "
                  f"removed {t_stale:.1f}s after the agent restart; B->A {t_evac2:.1f}s",
           figures={"down_s": round(t_down, 1), "recover_unfenced_s": round(t_recover, 1),
                    "evacuate_to_running_s": round(t_evac, 1),
                    "evacuate_to_console_userdata_s": round(t_evac_console, 1),
                    "stale_domain_removed_s": round(t_stale, 1),
                    "evacuate_live_agent_s": round(t_evac2, 1)})
