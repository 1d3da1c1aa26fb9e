"""Integration: the operator against the real API server and a real Placement."""

from __future__ import annotations

import pytest

from kova.operator import contract

from .conftest import condition, scheduled_reason, wait_for

pytestmark = pytest.mark.integration


def test_schedule_claims_labels_and_records(cluster):
    h1 = cluster.add_host("h1")
    op = cluster.start_operator()
    cluster.create_instance("vm1")
    inst = cluster.wait_scheduled("vm1")
    st = inst["status"]
    assert st["host"] == h1
    assert inst["metadata"]["labels"][contract.LABEL_HOST] == h1
    assert contract.FINALIZER_OPERATOR in inst["metadata"]["finalizers"]
    assert st["attempts"] == 1
    assert st["resources"] == {"vcpus": 1, "memoryMiB": 512, "diskGiB": 1}
    assert scheduled_reason(inst) == contract.REASON_SCHEDULED
    assert condition(inst, contract.COND_SCHEDULED)["status"] == "True"
    allocs = cluster.placement.allocations(inst["metadata"]["uid"])
    assert allocs == {cluster.hosts[h1]: {"resources": {"VCPU": 1, "MEMORY_MB": 512,
                                                         "DISK_GB": 1},
                                          "generation": allocs[cluster.hosts[h1]]["generation"]}}
    events = cluster.core.list_namespaced_event(cluster.ns).items
    assert any(e.reason == "Scheduled" and e.involved_object.name == "vm1" for e in events) or \
        wait_for(lambda: any(e.reason == "Scheduled" for e in
                             cluster.core.list_namespaced_event(cluster.ns).items), 10)
    cluster.stop_operator(op)
