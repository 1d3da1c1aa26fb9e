"""A restarted operator resyncs placed Instances without writing them, says
so in its metrics (Instances known, reconciled, an empty queue), and its
periodic audit reports what it checked and how long the pass took."""

from __future__ import annotations

from kova.dev.controlplane import free_port
from kova.dev.metrics import scrape
from tests.fixtures.operator import wait_for
from tests.reliability.scheduling import audit

N = 4
RECONCILED = 'kova_operator_reconciles_total{kind="inst"}'


def resynced(url: str, n: int) -> dict | None:
    m = scrape(url, missing_ok=True)
    if (m.get("kova_operator_owned_instances", 0) >= n and m.get(RECONCILED, 0) >= n
            and m.get("kova_operator_queue_depth", 1) == 0):
        return m
    return None


def test_restart_resyncs_placed_instances_without_writes(cluster):
    for h in ("h1", "h2", "h3"):  # the audit reads every provider's allocations
        cluster.add_host(h, vcpus=2)
    op = cluster.start_operator()
    names = [f"vm{i}" for i in range(N)]
    for name in names:
        cluster.create_instance(name)
    versions = {n: cluster.wait_scheduled(n)["metadata"]["resourceVersion"] for n in names}
    cluster.stop_operator(op)

    mport = free_port()
    url = f"http://127.0.0.1:{mport}/metrics"
    cluster.start_operator("--metrics-port", str(mport), "--audit-interval", "1")
    m = wait_for(lambda: resynced(url, N), 60, 0.2, "every Instance known and reconciled")
    assert m["kova_operator_owned_instances"] == N
    # the periodic audit: what it checked, and its duration
    m = wait_for(lambda: (lambda s: s if s.get("kova_operator_audit_instances") == N
                          else None)(scrape(url)), 30, 0.2, "an audit pass")
    assert m["kova_operator_audit_duration_seconds"] > 0
    assert m["kova_operator_audit_orphan_allocations"] == 0
    assert m["kova_operator_audit_missing_allocations"] == 0
    code, report = audit(cluster)  # the command, on the same Instances
    assert code == 0 and report["instances"] == N and report["consumers"] == N, report
    assert not report["orphanAllocations"] and not report["missingAllocations"], report
    # nothing written to any Instance by the restart (nor by the audit)
    assert {i["metadata"]["name"]: i["metadata"]["resourceVersion"]
            for i in cluster.instances()} == versions
