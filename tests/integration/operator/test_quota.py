"""Per-namespace quotas (kova.dev/* keys of a ResourceQuota): enforced by the
operator before it schedules, counted from what is claimed, released on
delete.  The real API server, the real Placement, ``kova operator run``."""

from __future__ import annotations

from kova.crds import names as contract
from tests.fixtures.operator import condition, scheduled_reason, wait_for


def _quota(cluster, name: str, hard: dict) -> None:
    cluster.core.create_namespaced_resource_quota(cluster.ns, {
        "apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": name},
        "spec": {"hard": hard}})


def _claimed(cluster) -> list[str]:
    return sorted(i["metadata"]["name"] for i in cluster.instances()
                  if (i.get("status") or {}).get("host"))


def test_quota_holds_under_a_burst_and_is_released_on_delete(cluster):
    """Five Instances at once against a quota of two instances: exactly two
    are claimed, the three others wait with QuotaExceeded naming the numbers;
    deleting one lets exactly one more in."""
    h1 = cluster.add_host("h1")
    _quota(cluster, "kova", {contract.QUOTA_INSTANCES: "2", contract.QUOTA_VCPUS: "8",
                             contract.QUOTA_MEMORY: "4Gi"})
    cluster.start_operator()
    names = [f"vm{i}" for i in range(5)]
    for name in names:
        cluster.create_instance(name)

    def settled():
        insts = cluster.instances()
        reasons = [scheduled_reason(i) for i in insts]
        return (len(insts) == 5 and reasons.count(contract.REASON_SCHEDULED) == 2
                and reasons.count(contract.REASON_QUOTA_EXCEEDED) == 3)

    wait_for(settled, 60, 0.3, "two scheduled, three QuotaExceeded")
    claimed = _claimed(cluster)
    assert len(claimed) == 2
    assert len(cluster.placement.all_consumers()) == 2
    waiting = next(i for i in cluster.instances() if i["metadata"]["name"] not in claimed)
    cond = condition(waiting, contract.COND_SCHEDULED)
    assert cond["status"] == "False"
    assert "instances: requested 1, 2 in use of 2" in cond["message"], cond
    assert f"{contract.QUOTA_INSTANCES} in ResourceQuota kova" in cond["message"]
    assert waiting["status"]["phase"] == "Pending"
    assert not (waiting["metadata"].get("labels") or {}).get(contract.LABEL_HOST)
    wait_for(lambda: any(e.reason == contract.REASON_QUOTA_EXCEEDED
                         for e in cluster.core.list_namespaced_event(cluster.ns).items),
             15, 0.3, "a QuotaExceeded Event")

    # a delete frees its claim and its quota: exactly one of the waiting gets in
    cluster.delete(claimed[0])
    wait_for(lambda: cluster.get(claimed[0]) is None, 30, 0.3, "the delete")
    wait_for(lambda: len(_claimed(cluster)) == 2 and claimed[0] not in _claimed(cluster),
             30, 0.3, "a waiting Instance takes the freed room")
    assert len(cluster.placement.all_consumers()) == 2
    assert all(h == h1 for i in cluster.instances()
               if (h := (i.get("status") or {}).get("host")))


def test_vcpu_and_memory_quota_names_every_resource_over(cluster):
    """An inline size over the vCPU and memory limits (the instance count is
    fine): the message names both, with the numbers; raising the limits lets
    it in."""
    cluster.add_host("h1", vcpus=64, memory_mib=65536)
    _quota(cluster, "small", {contract.QUOTA_VCPUS: "4", contract.QUOTA_MEMORY: "2Gi"})
    # a second, looser quota: the smaller limit of each key applies
    _quota(cluster, "loose", {contract.QUOTA_VCPUS: "100", contract.QUOTA_INSTANCES: "10"})
    cluster.start_operator()
    cluster.create_instance("small", resources={"vcpus": 2, "memoryMiB": 1024, "diskGiB": 1})
    cluster.wait_scheduled("small")
    cluster.create_instance("big", resources={"vcpus": 3, "memoryMiB": 2048, "diskGiB": 1})
    inst = cluster.wait_reason("big", contract.REASON_QUOTA_EXCEEDED)
    msg = condition(inst, contract.COND_SCHEDULED)["message"]
    assert "vCPUs: requested 3, 2 in use of 4" in msg, msg
    assert "memory (MiB): requested 2048, 1024 in use of 2048" in msg, msg
    assert "ResourceQuota small" in msg and "instances" not in msg.split(":", 1)[1], msg
    assert cluster.placement.allocations(inst["metadata"]["uid"]) == {}
    cluster.core.patch_namespaced_resource_quota("small", cluster.ns, {"spec": {"hard": {
        contract.QUOTA_VCPUS: "8", contract.QUOTA_MEMORY: "4Gi"}}})
    cluster.wait_scheduled("big", timeout=30)


def test_object_count_quota_is_kubernetes_own(cluster):
    """count/instances.kova.dev (Kubernetes' object-count quota, refused at
    admission) bounds how many Instance objects a namespace holds, whatever
    their state: what keeps a tenant from filling the operator's memory."""
    from kubernetes import client

    _quota(cluster, "objects", {"count/instances.kova.dev": "2"})
    # the quota controller computes status.used first (admission waits for it)
    wait_for(lambda: (cluster.core.read_namespaced_resource_quota("objects", cluster.ns)
                      .status.used or {}).get("count/instances.kova.dev") == "0",
             30, 0.3, "the quota's usage")
    cluster.create_instance("a")
    cluster.create_instance("b")
    try:
        cluster.create_instance("c")
    except client.ApiException as exc:
        assert exc.status == 403 and "exceeded quota" in exc.body, exc.body
    else:
        raise AssertionError("a third Instance was admitted")
