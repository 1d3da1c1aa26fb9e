"""Integration: Host.spec.drain handled by the operator (real API server,
etcd, Placement and operator process).  No compute agent runs: the test
writes the steps the agents write (a live migration's Migrated, a cold
migration's Copied and Verify), so what is checked is the operator's side:
which moves the drain starts, how many at once, what it confirms, what it
leaves and why, and Host.status.drain / the Drained condition."""

from __future__ import annotations

import time

from kova.crds import names as contract
from tests.fixtures.operator import condition, wait_for
from tests.reliability.record import record


def _running(cluster, name: str) -> None:
    cluster.patch_status(name, {"phase": "Running", "powerState": "Running"})


def _place(cluster, name: str, host: str, others: list[str], **spec) -> None:
    """Create Instance ``name`` and have it scheduled to ``host`` (the
    other hosts disabled meanwhile), then Running as its agent would say."""
    for h in others:
        cluster.patch_host(h, {"enabled": False})
    cluster.create_instance(name, **spec)
    inst = cluster.wait_scheduled(name)
    assert inst["status"]["host"] == host
    for h in others:
        cluster.patch_host(h, {"enabled": True})
    _running(cluster, name)


def _mig(cluster, name: str) -> dict:
    return (cluster.get(name).get("status") or {}).get("migration") or {}


def _drain(cluster, host: str) -> dict:
    return (cluster.get_host(host).get("status") or {}).get("drain") or {}


def _host_events(cluster, host: str, reason: str) -> list[str]:
    evs = cluster.core.list_event_for_all_namespaces(
        field_selector=f"involvedObject.name={host},reason={reason}").items
    return [e.message for e in evs]


def _agent_live(cluster, name: str, timeout: float = 30) -> None:
    """The agents' side of a live migration: the guest is on the destination."""
    mig = cluster.wait(name, lambda i: ((i.get("status") or {}).get("migration") or {}).get(
        "step") == "Preparing", timeout, f"{name} at step Preparing")["status"]["migration"]
    cluster.patch_status(name, {"migration": {**mig, "step": "Migrated",
                                              "progress": {"phase": "Completed", "downtimeMs": 5}}})


def test_drain_moves_live_keeps_the_anti_affinity_pair_apart_and_ends(cluster):
    """3 Instances on A, one of them in an anti-affinity pair whose other
    member runs on B (the only other host): the drain live-migrates the two
    others to B one at a time (drainParallel 1), leaves the member with
    reason ServerGroupPolicy (a Warning Event), says Stuck; A's provider is
    disabled meanwhile; drain: false ends it."""
    a, b = cluster.add_host("a"), cluster.add_host("b")
    cluster.create_server_group("pair", "anti-affinity")
    cluster.start_operator()
    _place(cluster, "peer", b, [a], serverGroupRef={"name": "pair"})
    _place(cluster, "member", a, [b], serverGroupRef={"name": "pair"})
    _place(cluster, "vm1", a, [b])
    _place(cluster, "vm2", a, [b])

    cluster.patch_host(a, {"drain": True, "drainParallel": 1})
    wait_for(lambda: contract.TRAIT_DISABLED in cluster.placement.traits(cluster.hosts[a]), 20,
             what="the draining host's provider disabled")
    # One at a time: the first live migration waits for its (simulated)
    # agents; meanwhile the drain starts no second one.
    first = wait_for(lambda: next((n for n in ("vm1", "vm2") if _mig(cluster, n)), None), 30,
                     what="a live migration started")
    assert _mig(cluster, first)["mode"] == "live"
    assert _mig(cluster, first)["user"] == contract.DRAIN_USER
    time.sleep(6)  # three drain ticks
    second = "vm2" if first == "vm1" else "vm1"
    assert _mig(cluster, second) == {}, cluster.get(second)["status"]
    _agent_live(cluster, first)
    _agent_live(cluster, second)
    for n in ("vm1", "vm2"):
        inst = cluster.wait(n, lambda i: (i.get("status") or {}).get("host") == b
                            and not i["status"].get("migration"), 30, f"{n} on {b}")
        assert inst["status"]["phase"] == "Running"
        assert condition(inst, contract.COND_RESIZED)["reason"] == contract.REASON_LIVE_MIGRATED

    drain = wait_for(lambda: _drain(cluster, a) if _drain(cluster, a).get("phase") == "Stuck"
                     else None, 30, what="the drain Stuck")
    assert drain["instances"] == 1 and drain["moved"] == 2 and drain["moving"] == 0
    assert [(e["name"], e["reason"]) for e in drain["left"]] == [
        ("member", contract.DRAIN_LEFT_SERVER_GROUP)], drain
    assert "anti-affinity" in drain["left"][0]["message"], drain
    member = cluster.get("member")
    assert member["status"]["host"] == a and member["status"]["phase"] == "Running"
    assert cluster.get("peer")["status"]["host"] == b
    cond = condition(cluster.get_host(a), contract.HOST_COND_DRAINED)
    assert (cond["status"], cond["reason"]) == ("False", contract.HOST_REASON_DRAIN_STUCK)
    wait_for(lambda: any("member" in m for m in _host_events(cluster, a,
                                                            contract.EVENT_DRAIN_LEFT)),
             20, what="the Warning Event naming the member left")

    cluster.patch_host(a, {"drain": False})
    wait_for(lambda: "drain" not in (cluster.get_host(a).get("status") or {}), 20,
             what="status.drain removed")
    assert condition(cluster.get_host(a), contract.HOST_COND_DRAINED) is None
    wait_for(lambda: contract.TRAIT_DISABLED not in cluster.placement.traits(cluster.hosts[a]),
             20, what="the host's provider enabled again")


def test_drain_cold_migrates_a_stopped_instance_confirms_it_and_says_drained(cluster):
    """A Stopped Instance is cold-migrated (whatever the policy) and the
    drain confirms the move once the guest is on the other host; the Host
    says Drained (condition True, an Event); the old allocation is freed."""
    a, b = cluster.add_host("a"), cluster.add_host("b")
    cluster.start_operator()
    _place(cluster, "off", a, [b])
    cluster.patch_status("off", {"phase": "Stopped", "powerState": "Shutdown"})
    uid = cluster.get("off")["metadata"]["uid"]

    cluster.patch_host(a, {"drain": True})
    inst = cluster.wait("off", lambda i: ((i.get("status") or {}).get("migration") or {}).get(
        "step") == "Moving", 30, "the cold migration claimed")
    mig = inst["status"]["migration"]
    assert mig["mode"] == "cold" and mig["destHost"] == b and mig["user"] == contract.DRAIN_USER
    cluster.patch_status("off", {"migration": {**mig, "step": "Copied"}})  # the source agent
    inst = cluster.wait("off", lambda i: i["status"]["migration"].get("step") == "Finishing",
                        30, "handed over to the destination")
    cluster.patch_status("off", {"phase": "ResizeVerify", "migration": {  # the destination agent
        **inst["status"]["migration"], "step": "Verify"}})
    inst = cluster.wait("off", lambda i: not (i.get("status") or {}).get("migration"), 30,
                        "the drain's confirm carried out")
    assert inst["status"]["host"] == b and inst["status"]["phase"] == "Stopped"
    assert condition(inst, contract.COND_RESIZED)["reason"] == contract.REASON_CONFIRMED
    assert list(cluster.placement.allocations(uid)) == [cluster.hosts[b]]

    drain = wait_for(lambda: _drain(cluster, a) if _drain(cluster, a).get("phase") == "Drained"
                     else None, 30, what="the drain Drained")
    assert (drain["instances"], drain["moving"], drain["moved"]) == (0, 0, 1), drain
    assert not drain.get("left")
    cond = condition(cluster.get_host(a), contract.HOST_COND_DRAINED)
    assert (cond["status"], cond["reason"]) == ("True", contract.HOST_REASON_DRAINED)
    wait_for(lambda: _host_events(cluster, a, contract.EVENT_DRAINED), 20,
             what="the HostDrained Event")


def test_a_failed_live_migration_falls_back_cold_only_with_live_then_cold(cluster):
    """drainPolicy Live leaves an Instance whose live migration failed
    (LiveMigrationFailed); LiveThenCold (set while the drain is Stuck) tries
    it again at once, cold."""
    a, b = cluster.add_host("a"), cluster.add_host("b")
    cluster.start_operator()
    _place(cluster, "vm", a, [b])

    cluster.patch_host(a, {"drain": True})
    mig = cluster.wait("vm", lambda i: ((i.get("status") or {}).get("migration") or {}).get(
        "step") == "Preparing", 30, "the live migration claimed")["status"]["migration"]
    cluster.patch_status("vm", {"migration": {**mig, "step": "Failed",
                                             "failure": "the destination refused the CPU"}})
    drain = wait_for(lambda: _drain(cluster, a) if _drain(cluster, a).get("phase") == "Stuck"
                     else None, 30, what="the drain Stuck")
    assert [(e["name"], e["reason"]) for e in drain["left"]] == [
        ("vm", contract.REASON_LIVE_MIGRATION_FAILED)], drain
    assert "refused the CPU" in drain["left"][0]["message"]
    assert cluster.get("vm")["status"]["host"] == a and not _mig(cluster, "vm")

    cluster.patch_host(a, {"drainPolicy": "LiveThenCold"})
    mig = cluster.wait("vm", lambda i: ((i.get("status") or {}).get("migration") or {}).get(
        "step") == "Moving", 30, "the cold migration claimed")["status"]["migration"]
    assert mig["mode"] == "cold" and mig["destHost"] == b


def test_a_new_leader_adopts_the_drains_moves_in_flight(cluster):
    """Two replicas (kopf peering): the leader killed (kill -9) while its
    drain has two moves under way -- a stopped Instance's cold migration
    and a live one -- which their (simulated) agents carry on while no
    replica leads.  The standby takes over once the dead leader's peering
    entry expires, adopts both by their request id (it hands the cold one
    over and confirms it at Verify, as the drain that started it would),
    starts the third and ends Drained: every Instance moved exactly once,
    counted once, Placement charging host B only."""
    a, b = cluster.add_host("a"), cluster.add_host("b")
    leader = cluster.start_operator("--priority", "100", peering=True, log_name="a.log")
    wait_for(lambda: "kova operator starting" in cluster.operator_log("a.log"), 30,
             what="the leader started")
    vms = ("vm1", "vm2", "vm3")
    for n in vms:
        _place(cluster, n, a, [b])
    cluster.patch_status("vm1", {"phase": "Stopped", "powerState": "Shutdown"})
    standby = cluster.start_operator("--priority", "10", peering=True, log_name="b.log")
    wait_for(lambda: "standing by" in cluster.operator_log("b.log"), 60,
             what="the standby to stand by")

    cluster.patch_host(a, {"drain": True, "drainParallel": 2})
    wait_for(lambda: (_mig(cluster, "vm1").get("step"), _mig(cluster, "vm2").get("step")) ==
             ("Moving", "Preparing"), 60, what="vm1 cold and vm2 live claimed")
    reqs = {n: _mig(cluster, n)["requestId"] for n in ("vm1", "vm2")}
    cluster.stop_operator(leader, kill=True)
    # the agents go on without an operator: vm2 arrives, vm1's disk is sent
    _agent_live(cluster, "vm2")
    cluster.patch_status("vm1", {"migration": {**_mig(cluster, "vm1"), "step": "Copied"}})

    # the standby takes over once the dead leader's peering entry expires
    # (kopf's 60 s lifetime): it hands vm1 over, its drain claims vm3
    _agent_live(cluster, "vm3", timeout=180)
    inst = cluster.wait("vm1", lambda i: i["status"]["migration"].get("step") == "Finishing",
                        60, "vm1 handed over by the new leader")
    cluster.patch_status("vm1", {"phase": "ResizeVerify", "migration": {
        **inst["status"]["migration"], "step": "Verify"}})  # the destination agent
    for n in vms:
        inst = cluster.wait(n, lambda i: (i.get("status") or {}).get("host") == b
                            and not i["status"].get("migration"), 60, f"{n} on {b}")
        migrations = [e for e in inst["status"]["actions"] if e["action"] == "migrate"]
        assert len(migrations) == 1 and migrations[0]["result"] == "Success", migrations
        if n in reqs:
            assert migrations[0]["requestId"] == reqs[n]  # the old leader's move, adopted
        assert list(cluster.placement.allocations(inst["metadata"]["uid"])) == \
            [cluster.hosts[b]]
    vm1 = condition(cluster.get("vm1"), contract.COND_RESIZED)
    assert vm1["reason"] == contract.REASON_CONFIRMED and contract.DRAIN_USER in vm1["message"]
    drain = wait_for(lambda: _drain(cluster, a) if _drain(cluster, a).get("phase") == "Drained"
                     else None, 30, what="the drain Drained")
    assert (drain["instances"], drain["moving"], drain["moved"]) == (0, 0, 3), drain
    assert not drain.get("left")
    # the audit: every consumer an Instance on B, no migration consumer left
    uids = {cluster.get(n)["metadata"]["uid"] for n in vms}
    assert cluster.placement.all_consumers() == {uid: cluster.hosts[b] for uid in uids}
    assert "now the active one" in cluster.operator_log("b.log")
    assert standby.poll() is None
    record(fault="Leader change during a host drain",
           injected="2 operator replicas (kopf peering), 3 Instances on a draining host "
                    "(drainParallel 2, simulated agents): the leader killed (kill -9) with a "
                    "cold and a live migration claimed, carried on by their agents while no "
                    "replica led",
           times=1, lost=0, duplicated=0, overcommitted=0,
           result="the standby took over, adopted the two moves by their request id (handed "
                  "the cold one over and confirmed it), moved the third: Drained with moved 3, each Instance migrated once, Placement "
                  "charging the other host only, no migration consumer left")
