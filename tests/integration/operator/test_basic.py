"""Integration: the operator against the real API server and a real Placement."""

from __future__ import annotations

import httpx

from kova.crds import names as contract
from kova.dev.controlplane import free_port
from tests.fixtures.operator import condition, scheduled_reason, wait_for


def test_schedule_claims_labels_and_records(cluster):
    h1 = cluster.add_host("h1")
    mport, hport = free_port(), free_port()
    op = cluster.start_operator("--metrics-port", str(mport), "--health-port", str(hport))
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
    # metrics are recorded just after the status write, and the host monitor
    # samples Leases every --host-check-interval: poll until all are there
    expected = ('kova_operator_schedule_outcomes_total{reason="Scheduled"} 1.0',
                "kova_operator_schedule_latency_seconds_count 1.0",
                'kova_operator_hosts{state="Up"} 1.0')
    wait_for(lambda: all(e in httpx.get(f"http://127.0.0.1:{mport}/metrics").text
                         for e in expected), 15, 0.2, "the operator's metrics")
    assert httpx.get(f"http://127.0.0.1:{hport}/healthz").status_code == 200
    cluster.stop_operator(op)
