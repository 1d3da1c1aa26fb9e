"""Several active schedulers: ``kova operator run --share-instances``.

Two and three real operator processes share one namespace's Instances (each
owns those whose uid hashes to it among the live replicas, membership through
one Lease each) and schedule a burst onto simulated hosts whose capacity fits
it exactly.  Counted from Placement and the API server: every Instance
Scheduled once, no double claim, allocations equal to the Instances, every
replica did part of the work and no Instance was decided twice.

Then a replica is killed with SIGKILL in the middle of a burst (Instances
still arriving): its Lease expires, the others take its share over, and
every Instance still ends Scheduled with its allocation.
"""

from __future__ import annotations

import threading
import time

import pytest

from kova.operator.membership import member_name, owner_of
from tests.fixtures.operator import placement_server  # noqa: F401 (fixture: Placement on SQLite)
from tests.reliability import scheduling as s

pytestmark = [pytest.mark.reliability, pytest.mark.integration]

#: Seconds of a member Lease in the kill test (the default is 15): the
#: survivors take over after it.  The burst tests use a longer one, so that a
#: loaded machine holding up a renewal does not make the members change.
LEASE = 3


def _start(cluster, n: int, lease: int = 10) -> list[int]:
    ports = [s.free_port() for _ in range(n)]
    for i, port in enumerate(ports):
        cluster.start_operator("--metrics-port", str(port), "--share-instances",
                               "--member-namespace", cluster.ns,
                               "--member-lease-seconds", str(lease),
                               "--replica-identity", f"replica-{i}",
                               log_name=f"operator-{i}.log")
    return ports


def _metrics(port: int) -> dict:
    return s.scrape(f"http://127.0.0.1:{port}/metrics", True)


def _wait_ready(ports: list[int], hosts: int, replicas: int) -> None:
    for port in ports:
        s.wait_for(lambda port=port: _metrics(port).get(
            'kova_operator_hosts{state="Up"}', 0) >= hosts
            and _metrics(port).get("kova_operator_replicas", 0) == replicas, 60, 0.3,
            f"every operator to see every host Up and {replicas} replicas")


def _scheduled_by(m: dict) -> int:
    return int(m.get('kova_operator_schedule_outcomes_total{reason="Scheduled"}', 0))


def _check_clean(cluster, n: int, watch) -> None:
    tally = s.tally(cluster)
    events = s.scheduled_events(cluster)
    assert tally.instances == n
    assert not tally.problems(), tally.problems()
    assert not watch.rescheduled(), f"status.host set more than once: {watch.rescheduled()}"
    twice = {u: c for u, c in events.items() if c > 1}
    assert not twice, f"more than one Scheduled Event: {twice}"
    code, report = s.audit(cluster)
    assert code == 0 and report["orphanAllocations"] == [] \
        and report["missingAllocations"] == [], report


@pytest.mark.parametrize("replicas", [2, 3])
def test_replicas_share_a_burst(k8s_client, kubeconfig, kova_crds, namespace,
                                placement_server, tmp_path, replicas):
    n = 40 * replicas
    with s.cluster_on(k8s_client, kubeconfig, namespace, placement_server, tmp_path) as cluster:
        hosts = s.add_exact_hosts(cluster, n)
        ports = _start(cluster, replicas)
        _wait_ready(ports, len(hosts), replicas)
        watch = s.InstanceWatch(cluster)
        s.create_instances(cluster, n)
        s.wait_all_scheduled(cluster, n, 240,
                             tuple(f"operator-{i}.log" for i in range(replicas)))
        time.sleep(1)
        watch.stop()
        metrics = [_metrics(port) for port in ports]
        _check_clean(cluster, n, watch)
        by_each = [_scheduled_by(m) for m in metrics]
        owned = [int(m.get("kova_operator_owned_instances", 0)) for m in metrics]
        # Every replica scheduled its share, and none scheduled another's.
        assert all(by_each), by_each
        assert sum(by_each) == n, by_each
        assert sum(owned) == n and all(owned), owned
        # One leader among them.
        assert sum(int(m.get("kova_operator_leader", 0)) for m in metrics) == 1


def test_killed_replica_share_is_taken_over(k8s_client, kubeconfig, kova_crds, namespace,
                                           placement_server, tmp_path):
    n, replicas = 90, 3
    with s.cluster_on(k8s_client, kubeconfig, namespace, placement_server, tmp_path) as cluster:
        hosts = s.add_exact_hosts(cluster, n)
        ports = _start(cluster, replicas, LEASE)
        _wait_ready(ports, len(hosts), replicas)
        watch = s.InstanceWatch(cluster)
        # A burst that goes on while the replica dies: 30 at once, then the
        # rest one by one, 10 of them before the kill and 50 after it (the
        # Instances created after the kill that hash to the dead replica are
        # the share the survivors must take over; a fast replica schedules
        # everything of its share that exists before it dies).
        s.create_instances(cluster, 30, prefix="early")
        s.wait_for(lambda: _scheduled_by(_metrics(ports[0])) > 0, 60, 0.2,
                   "the first replica to schedule some of the burst")
        started, killed = threading.Event(), threading.Event()

        def late() -> None:
            for i in range(n - 30):
                if i == 10:
                    started.set()
                    killed.wait(60)
                cluster.create_instance(f"late-{i:03d}")

        rest = threading.Thread(target=late)
        rest.start()
        assert started.wait(60), "the first late Instances to be created"
        time.sleep(0.2)
        before_kill = _scheduled_by(_metrics(ports[0]))
        cluster.stop_operator(cluster.operators[0], kill=True)
        killed_at = time.monotonic()
        killed.set()
        rest.join()
        s.wait_all_scheduled(cluster, n, 240, ("operator-1.log", "operator-2.log"))
        taken_over_in = time.monotonic() - killed_at
        time.sleep(1)
        watch.stop()
        survivors = [_metrics(port) for port in ports[1:]]
        _check_clean(cluster, n, watch)
        assert all(m.get("kova_operator_replicas") == replicas - 1 for m in survivors)
        assert sum(int(m.get("kova_operator_owned_instances", 0)) for m in survivors) == n
        assert sum(int(m.get("kova_operator_leader", 0)) for m in survivors) == 1
        # The dead replica's share was placed by the survivors: more
        # Instances hash to it among the three than it had scheduled (50 of
        # the 90 were created after its death).
        members = [member_name("kova", f"replica-{i}") for i in range(replicas)]
        its_share = sum(1 for i in cluster.instances()
                        if owner_of(i["metadata"]["uid"], members) == members[0])
        assert its_share > before_kill, (its_share, before_kill)
        logs = cluster.operator_log("operator-1.log") + cluster.operator_log("operator-2.log")
        assert "operator replicas: 2 live" in logs
        print(f"all {n} Scheduled {taken_over_in:.1f}s after the kill "
              f"(member Lease {LEASE}s)")
