"""Integration: reschedule on build failure, Error after the last attempt,
deletion with the agent's finalizer, restart in the middle of a burst, audit."""

from __future__ import annotations

import json
import subprocess
import uuid

from kova.crds import names as contract
from tests.fixtures.operator import KOVA, ROOT, condition, scheduled_reason, wait_for


def test_reschedule_after_build_failure_moves_the_allocation(cluster):
    hosts = [cluster.add_host(f"h{i}") for i in range(3)]
    cluster.start_operator("--max-attempts", "3")
    inst = cluster.create_instance("vm1")
    uid = inst["metadata"]["uid"]
    first = cluster.wait_scheduled("vm1")["status"]["host"]
    cluster.report_build_failure("vm1", "qemu: could not open disk")
    inst = cluster.wait("vm1", lambda i: (i.get("status") or {}).get("attempts") == 2, 20,
                        "the second attempt")
    st = inst["status"]
    assert st["host"] != first and st["host"] in hosts
    assert st["phase"] == "Scheduled"
    assert inst["metadata"]["labels"][contract.LABEL_HOST] == st["host"]
    assert scheduled_reason(inst) == contract.REASON_RESCHEDULED
    built = condition(inst, contract.COND_BUILT)
    assert built["status"] == "Unknown" and built["reason"] == contract.REASON_RESCHEDULED
    history = json.loads(inst["metadata"]["annotations"][contract.ANNOTATION_ATTEMPTS])
    assert history[0]["host"] == first and "could not open disk" in history[0]["message"]
    # the action history (status.actions): created, then rescheduled, by the operator
    acts = st["actions"]
    assert [(a["action"], a["user"], a["result"]) for a in acts] == [
        ("create", "kova-operator", "Success"), ("reschedule", "kova-operator", "Success")]
    assert f"to host {first}" in acts[0]["message"] or first in acts[0]["message"]
    assert acts[1]["message"].startswith(f"Rescheduled to host {st['host']}")
    # The allocation moved: exactly one provider, the new host's.
    assert list(cluster.placement.allocations(uid)) == [cluster.hosts[st["host"]]]
    assert cluster.placement.usages(cluster.hosts[first]).get("MEMORY_MB", 0) == 0


def test_error_after_the_last_attempt(cluster):
    for i in range(3):
        cluster.add_host(f"h{i}")
    cluster.start_operator("--max-attempts", "2")
    uid = cluster.create_instance("vm1")["metadata"]["uid"]
    h1 = cluster.wait_scheduled("vm1")["status"]["host"]
    cluster.report_build_failure("vm1", "first failure")
    inst = cluster.wait("vm1", lambda i: (i.get("status") or {}).get("attempts") == 2, 20)
    h2 = inst["status"]["host"]
    cluster.report_build_failure("vm1", "second failure")
    # The operator writes the Error status, then removes the host label (two
    # API calls): wait for both, not for the first.
    inst = cluster.wait("vm1", lambda i: (i.get("status") or {}).get("phase") == "Error"
                        and contract.LABEL_HOST not in (i["metadata"].get("labels") or {}), 20,
                        "phase Error and no host label")
    assert scheduled_reason(inst) == contract.REASON_MAX_ATTEMPTS
    msg = condition(inst, contract.COND_SCHEDULED)["message"]
    assert h1 in msg and h2 in msg and "first failure" in msg and "second failure" in msg
    assert "host" not in inst["status"]
    assert contract.LABEL_HOST not in (inst["metadata"].get("labels") or {})
    assert cluster.placement.allocations(uid) == {}


def test_reschedule_with_no_host_left_is_an_error(cluster):
    cluster.add_host("only")
    cluster.start_operator("--max-attempts", "5")
    uid = cluster.create_instance("vm1")["metadata"]["uid"]
    cluster.wait_scheduled("vm1")
    cluster.report_build_failure("vm1")
    inst = cluster.wait("vm1", lambda i: (i.get("status") or {}).get("phase") == "Error", 20)
    assert scheduled_reason(inst) == contract.REASON_NO_VALID_HOST
    assert cluster.placement.allocations(uid) == {}


def test_delete_waits_for_the_agent_then_frees_allocations(cluster):
    cluster.add_host("h1")
    cluster.start_operator()
    uids = [cluster.create_instance(f"vm{i}")["metadata"]["uid"] for i in range(3)]
    for i in range(3):
        cluster.wait_scheduled(f"vm{i}")
    # vm0 is "built" by an agent that holds its finalizer.
    inst = cluster.get("vm0")
    cluster.api.patch_namespaced_custom_object(
        contract.GROUP, contract.VERSION, cluster.ns, "instances", "vm0",
        {"metadata": {"finalizers": inst["metadata"]["finalizers"] + [contract.FINALIZER_AGENT],
                      "resourceVersion": inst["metadata"]["resourceVersion"]}})
    for i in range(3):
        cluster.delete(f"vm{i}")
    wait_for(lambda: cluster.get("vm1") is None and cluster.get("vm2") is None, 20,
             what="vm1 and vm2 gone")
    assert cluster.placement.allocations(uids[1]) == {}
    assert cluster.placement.allocations(uids[2]) == {}
    inst = cluster.wait("vm0", lambda i: i["status"]["phase"] == "Deleting", 20, "Deleting")
    assert cluster.placement.allocations(uids[0]) != {}  # the agent is not done yet
    fins = [f for f in inst["metadata"]["finalizers"] if f != contract.FINALIZER_AGENT]
    cluster.api.patch_namespaced_custom_object(
        contract.GROUP, contract.VERSION, cluster.ns, "instances", "vm0",
        {"metadata": {"finalizers": fins, "resourceVersion": inst["metadata"]["resourceVersion"]}})
    wait_for(lambda: cluster.get("vm0") is None, 20, what="vm0 gone")
    assert cluster.placement.allocations(uids[0]) == {}
    assert cluster.placement.all_consumers() == {}


def test_restart_mid_burst_schedules_each_instance_exactly_once(cluster):
    hosts = [cluster.add_host(f"h{i}", vcpus=64, memory_mib=8192, disk_gib=1000)
             for i in range(8)]
    # 8 hosts x 16 x 512 MiB = 128 slots; 100 instances; anti-affinity group
    # of 8 members over the burst to check the server-group view survives the restart.
    cluster.create_server_group("spread", "anti-affinity")
    n = 100
    op = cluster.start_operator("--workers", "8")
    for i in range(n):
        spec = {"serverGroupRef": {"name": "spread"}} if i % 13 == 0 else {}
        cluster.create_instance(f"b{i:03d}", **spec)
    def count():
        return sum(1 for i in cluster.instances()
                   if (i.get("status") or {}).get("phase") == "Scheduled")
    wait_for(lambda: count() >= 10, 60, what="a part of the burst scheduled")
    cluster.stop_operator(op, kill=True)
    partial = count()
    cluster.start_operator("--workers", "8")
    wait_for(lambda: count() == n, 120, interval=0.5, what="all scheduled after restart")
    insts = cluster.instances()
    consumers = cluster.placement.all_consumers()
    assert len(consumers) == n, (len(consumers), partial)
    rp_host = {rp: h for h, rp in cluster.hosts.items()}
    for inst in insts:
        uid, host = inst["metadata"]["uid"], inst["status"]["host"]
        assert rp_host[consumers[uid]] == host
        assert inst["metadata"]["labels"][contract.LABEL_HOST] == host
        assert inst["status"]["attempts"] == 1
    members = [i["status"]["host"] for i in insts if i["spec"].get("serverGroupRef")]
    assert len(members) == len(set(members)) == len(hosts)
    for h in hosts:
        usage = cluster.placement.usages(cluster.hosts[h])
        assert usage.get("MEMORY_MB", 0) <= 8192


def test_audit_finds_and_heals(cluster):
    """The audit finds an orphan allocation and a missing one, per namespace
    too, and heals both.  The API server is the session's: other tests'
    namespaces may still hold Instances (deleted, not waited for), so the
    cluster-wide report is read for this test's namespace and project only,
    and the heal is scoped to them."""
    cluster.add_host("h1")
    op = cluster.start_operator()
    uid = cluster.create_instance("vm1")["metadata"]["uid"]
    cluster.create_instance("vm2")
    rp = cluster.hosts[cluster.wait_scheduled("vm1")["status"]["host"]]
    cluster.wait_scheduled("vm2")
    cluster.stop_operator(op)
    orphan = str(uuid.uuid4())
    r = cluster.placement.http.put(f"/allocations/{orphan}", json={
        "allocations": {rp: {"resources": {"VCPU": 1}}}, "project_id": "gone",
        "user_id": "x", "consumer_generation": None, "consumer_type": "INSTANCE"})
    assert r.status_code == 204, r.text
    assert cluster.placement.http.delete(f"/allocations/{uid}").status_code == 204

    def audit(*extra):
        return subprocess.run(KOVA + ["operator", "audit", "--kubeconfig",
                                      str(cluster.kubeconfig), "--placement-url",
                                      cluster.placement.url, *extra],
                              capture_output=True, text=True, cwd=ROOT, timeout=60)

    def ours(missing: list[str]) -> list[str]:
        return [m for m in missing if m.startswith(f"{cluster.ns}/")]

    out = audit()
    assert out.returncode == 1, out.stderr
    report = json.loads(out.stdout)
    assert report["orphanAllocations"] == [orphan]  # this test's Placement
    assert ours(report["missingAllocations"]) == [f"{cluster.ns}/vm1"]
    # One namespace's view: its Instances, and orphans of its project only.
    out = audit("--namespace", cluster.ns)
    assert out.returncode == 1, out.stderr
    report = json.loads(out.stdout)
    assert report["orphanAllocations"] == [] and report["instances"] == 2
    assert report["missingAllocations"] == [f"{cluster.ns}/vm1"]
    out = audit("--namespace", "gone")
    assert out.returncode == 1, out.stderr
    report = json.loads(out.stdout)
    assert report["orphanAllocations"] == [orphan] and report["instances"] == 0
    scope = ("--namespace", cluster.ns, "--namespace", "gone")
    out = audit("--heal", *scope)
    assert out.returncode == 0, out.stdout + out.stderr
    assert cluster.placement.allocations(orphan) == {}
    assert list(cluster.placement.allocations(uid)) == [rp]
    out = audit(*scope)
    assert out.returncode == 0, out.stdout


def test_periodic_audit_heals_orphans(cluster):
    """The periodic audit of an operator of one namespace heals the orphans
    of that namespace's project; another project's consumer in the same
    Placement (another operator's tenant) is not its own and stays."""
    h = cluster.add_host("h1")
    rp = cluster.hosts[h]
    orphan, foreign = str(uuid.uuid4()), str(uuid.uuid4())
    for consumer, project in ((orphan, contract.project_id(cluster.ns)), (foreign, "elsewhere")):
        r = cluster.placement.http.put(f"/allocations/{consumer}", json={
            "allocations": {rp: {"resources": {"VCPU": 1}}}, "project_id": project,
            "user_id": "x", "consumer_generation": None, "consumer_type": "INSTANCE"})
        assert r.status_code == 204, r.text
    cluster.start_operator("--audit-interval", "1", "--audit-heal")
    cluster.create_instance("vm1")
    uid = cluster.wait_scheduled("vm1")["metadata"]["uid"]
    wait_for(lambda: cluster.placement.allocations(orphan) == {}, 20, what="orphan healed")
    assert list(cluster.placement.allocations(uid)) == [rp]
    assert list(cluster.placement.allocations(foreign)) == [rp]
