"""Host failure, fencing and evacuation, operator level.

The real operator (a subprocess) against the session's kube-apiserver and a
real Placement, with simulated hosts (a provider, a Host object and a Lease,
as an agent registers them -- tests/fixtures/operator.py).  What the agents do
with real domains is the e2e test in test_host_failure_e2e.py; here the
operator's side is checked cheaply and in more variants:

* a host whose Lease expires goes Down and its Instances are marked Unknown
  (phase and powerState Unknown, Ready=Unknown reason HostDown) -- nothing moves;
* fencing through the Node taint node.kubernetes.io/out-of-service evacuates
  them (allocation replaced in one PUT, status.host and the label moved,
  Scheduled=True reason Evacuated, Built reset, an Event), and the host takes
  no new Instance until the taint is removed;
* fencing through Host.spec.fenced does the same, and an Instance deleted
  while its host is fenced does not wait for the dead agent's finalizer.
"""

from __future__ import annotations

import time

import pytest
from kubernetes import client

from kova.crds import names as contract
from kova.operator.instance.evacuation import migration_uuid
from tests.fixtures.operator import (  # noqa: F401  (fixtures)
    G,
    V,
    cluster,
    condition,
    placement_server,
    scheduled_reason,
)
from tests.helpers import wait_for
from tests.reliability.record import record

pytestmark = [pytest.mark.integration, pytest.mark.reliability]


def _host(inst: dict) -> str | None:
    return (inst.get("status") or {}).get("host")


def _as_agent(cluster, name: str, phase: str = "Running") -> None:
    """What the agent on the Instance's host would have written: its
    finalizer, phase, powerState and Ready."""
    inst = cluster.get(name)
    fins = list(inst["metadata"].get("finalizers") or [])
    if contract.FINALIZER_AGENT not in fins:
        cluster.api.patch_namespaced_custom_object(G, V, cluster.ns, "instances", name, {
            "metadata": {"finalizers": fins + [contract.FINALIZER_AGENT]}})
    conds = [c for c in (inst.get("status") or {}).get("conditions") or []
             if c["type"] not in (contract.COND_READY, contract.COND_BUILT)]
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    conds += [{"type": contract.COND_BUILT, "status": "True", "reason": "Built",
               "message": "defined", "lastTransitionTime": stamp},
              {"type": contract.COND_READY, "status": "True", "reason": "Running",
               "message": "the domain is running", "lastTransitionTime": stamp}]
    cluster.patch_status(name, {"phase": phase, "powerState": "Running", "conditions": conds})


def _count(cluster, names: list[str]) -> tuple[int, int, int, dict]:
    """lost / duplicated / overcommitted, from the API server and Placement:
    lost = an Instance without exactly one allocation on its status.host;
    duplicated = a consumer with allocations on several providers (or twice);
    overcommitted = a provider whose usage exceeds its capacity."""
    rp_host = {rp: h for h, rp in cluster.hosts.items()}
    lost = duplicated = 0
    where = {}
    for name in names:
        inst = cluster.get(name)
        allocs = cluster.placement.allocations(inst["metadata"]["uid"])
        if len(allocs) > 1:
            duplicated += 1
        if len(allocs) != 1 or rp_host.get(next(iter(allocs))) != _host(inst):
            lost += 1
        where[name] = _host(inst)
    cluster.placement.all_consumers()  # asserts no consumer is allocated twice
    over = 0
    for rp in cluster.hosts.values():
        inv = cluster.placement.ok(cluster.placement.http.get(
            f"/resource_providers/{rp}/inventories")).json()["inventories"]
        for rc, used in cluster.placement.usages(rp).items():
            i = inv[rc]
            if used > (i["total"] - i["reserved"]) * i["allocation_ratio"]:
                over += 1
    return lost, duplicated, over, where


def _events(cluster, reason: str) -> list[dict]:
    return [e for e in cluster.core.list_namespaced_event(cluster.ns).items
            if e.reason == reason]


def test_down_marks_unknown_then_node_taint_and_spec_fence_evacuate(cluster):
    a = cluster.add_host("a", vcpus=4, memory_mib=4096)
    b = cluster.add_host("b", vcpus=4, memory_mib=4096)
    c = cluster.add_host("c", vcpus=4, memory_mib=4096)
    # The Node of host a (no kubelet: only the object, as kubectl would create it).
    cluster.core.create_node(client.V1Node(metadata=client.V1ObjectMeta(name=a)))
    try:
        cluster.start_operator()
        names = ["vm1", "vm2", "vm3"]
        for n in names[:2]:
            cluster.create_instance(n, schedulingHints={"requestedHost": a})
        cluster.create_instance("vm3", schedulingHints={"requestedHost": b})
        for n in names:
            cluster.wait_scheduled(n)
            _as_agent(cluster, n)
        uids = {n: cluster.get(n)["metadata"]["uid"] for n in names}

        # 1. a's agent stops: its Lease expires -> Down, Instances Unknown, nothing moves.
        t0 = time.monotonic()
        cluster.heartbeat(a, duration=2, age=0)
        wait_for(lambda: cluster.get_host(a)["status"].get("state") == "Down", 20,
                 what="host a Down")
        t_down = time.monotonic() - t0
        for n in ("vm1", "vm2"):
            inst = cluster.wait(n, lambda i: i["status"].get("phase") == "Unknown", 15,
                                f"{n} Unknown")
            assert inst["status"]["powerState"] == "Unknown"
            ready = condition(inst, contract.COND_READY)
            assert ready["status"] == "Unknown" and ready["reason"] == "HostDown", ready
            assert a in ready["message"] and "not moved" in ready["message"]
        time.sleep(2.0)  # several host-monitor rounds: still nothing moved
        for n in ("vm1", "vm2"):
            inst = cluster.get(n)
            assert _host(inst) == a and inst["metadata"]["labels"][contract.LABEL_HOST] == a
            assert list(cluster.placement.allocations(uids[n])) == [cluster.hosts[a]]
        assert cluster.get("vm3")["status"]["phase"] == "Running"  # b is Up: untouched
        assert _events(cluster, "HostDown")

        # 2. Fence a through its Node's taint: vm1 and vm2 are evacuated.
        t1 = time.monotonic()
        cluster.core.patch_node(a, {"spec": {"taints": [
            {"key": contract.TAINT_OUT_OF_SERVICE, "value": "nodeshutdown",
             "effect": "NoExecute"}]}})
        for n in ("vm1", "vm2"):
            inst = cluster.wait(n, lambda i: _host(i) in (b, c)
                                and scheduled_reason(i) == contract.REASON_EVACUATED, 20,
                                f"{n} evacuated")
            new = _host(inst)
            assert inst["metadata"]["labels"][contract.LABEL_HOST] == new
            assert inst["status"]["phase"] == "Scheduled"
            assert condition(inst, contract.COND_BUILT)["status"] == "Unknown"
            msg = condition(inst, contract.COND_SCHEDULED)["message"]
            assert f"fenced host {a}" in msg and "NodeOutOfService" in msg, msg
            assert list(cluster.placement.allocations(uids[n])) == [cluster.hosts[new]]
            # the move went through a migration consumer (one POST), freed since
            mid = migration_uuid(uids[n], a)
            assert f"(migration {mid})" in msg, msg
            assert cluster.placement.allocations(mid) == {}
            # the action history: created, then evacuated, by the operator
            acts = inst["status"]["actions"]
            assert [x["action"] for x in acts] == ["create", "evacuate"], acts
            assert {x["user"] for x in acts} == {"kova-operator"}
            assert acts[-1]["message"] == msg
        t_evacuated = time.monotonic() - t1
        host_a = wait_for(lambda: (h := cluster.get_host(a)) and condition(h, "Fenced")
                          and condition(h, "Fenced")["status"] == "True" and h, 15,
                          what="Fenced condition on host a")
        assert condition(host_a, "Fenced")["reason"] == "NodeOutOfService"
        wait_for(lambda: contract.TRAIT_DISABLED in cluster.placement.traits(cluster.hosts[a]),
                 15, what="disabled trait on a's provider")
        assert len(_events(cluster, contract.REASON_EVACUATED)) >= 2
        assert cluster.placement.usages(cluster.hosts[a]).get("VCPU", 0) == 0
        for n in ("vm1", "vm2"):
            _as_agent(cluster, n)  # rebuilt on their new hosts

        # While fenced (and even with its agent back), a takes nothing new.
        cluster.heartbeat(a, duration=3600)
        wait_for(lambda: cluster.get_host(a)["status"].get("state") == "Up", 15,
                 what="host a Up again")
        cluster.create_instance("vm4", schedulingHints={"requestedHost": a})
        names.append("vm4")
        cluster.wait_reason("vm4", contract.REASON_NO_VALID_HOST)
        time.sleep(1.0)
        assert _host(cluster.get("vm4")) is None

        # 3. Unfence: a is schedulable again.
        cluster.core.patch_node(a, {"spec": {"taints": None}})
        assert _host(cluster.wait_scheduled("vm4", timeout=30)) == a
        wait_for(lambda: condition(cluster.get_host(a), "Fenced")["status"] == "False", 15,
                 what="Fenced=False on host a")
        assert contract.TRAIT_DISABLED not in cluster.placement.traits(cluster.hosts[a])
        _as_agent(cluster, "vm4")

        # 4. Fence b through Host.spec.fenced (its agent is still Up: the
        # administrator says so): vm3 and whatever went to b move to a or c.
        on_b = [n for n in names if _host(cluster.get(n)) == b]
        assert "vm3" in on_b
        cluster.patch_host(b, {"fenced": True})
        for n in on_b:
            inst = cluster.wait(n, lambda i: _host(i) in (a, c)
                                and scheduled_reason(i) == contract.REASON_EVACUATED, 20,
                                f"{n} evacuated from b")
            assert "SpecFenced" in condition(inst, contract.COND_SCHEDULED)["message"]
        host_b = wait_for(lambda: (h := cluster.get_host(b)) and condition(h, "Fenced")
                          and condition(h, "Fenced")["status"] == "True" and h, 15,
                          what="Fenced condition on host b")
        assert condition(host_b, "Fenced")["reason"] == "SpecFenced"

        lost, duplicated, over, where = _count(cluster, names)
        assert (lost, duplicated, over) == (0, 0, 0), where
        assert b not in where.values(), where

        # 5. Deleted while on a fenced host: c is fenced too, vm on c goes away
        # without its (dead) agent.
        victim = next(n for n in names if _host(cluster.get(n)) == c) if c in where.values() \
            else None
        if victim is None:
            cluster.create_instance("vm5", schedulingHints={"requestedHost": c})
            cluster.wait_scheduled("vm5")
            _as_agent(cluster, "vm5")
            victim = "vm5"
        victim_uid = cluster.get(victim)["metadata"]["uid"]
        cluster.patch_host(c, {"fenced": True})
        cluster.patch_host(a, {"fenced": True})  # nowhere to go: the Instance stays
        cluster.wait(victim, lambda i: scheduled_reason(i) == contract.REASON_EVACUATION_FAILED,
                     20, f"{victim} EvacuationFailed")
        cluster.delete(victim)
        wait_for(lambda: cluster.get(victim) is None, 20, what=f"{victim} deleted")
        assert cluster.placement.allocations(victim_uid) == {}
        assert _events(cluster, "DeletedOnFencedHost")
    finally:
        try:
            cluster.core.delete_node(a)
        except client.ApiException:
            pass

    record(fault="Host failure (operator)",
           injected="3 simulated hosts; one host's Lease expired, then fenced by its Node's "
                    "out-of-service taint, unfenced; a second host fenced by spec.fenced; an "
                    "Instance deleted on a fenced host",
           times=3, lost=lost, duplicated=duplicated, overcommitted=over,
           result=f"Down after {t_down:.1f}s (Lease 2s), Instances Unknown and not moved; "
                  f"evacuated (allocation moved) {t_evacuated:.1f}s after the taint",
           figures={"down_s": round(t_down, 2), "evacuated_s": round(t_evacuated, 2)})
