"""Fault: Placement, then its Postgres, restarted while the operator schedules.

Placement runs on a Postgres server of the test's own (its own data directory
and port: restarting it cannot disturb the session's shared server or the
tests using it).  During a burst of Instances:

1. Placement is killed (SIGKILL) and started again on the same port;
2. Postgres is restarted with ``pg_ctl restart -m fast`` (every session is
   ended, as an admin's or an orchestrator's restart does);
3. Postgres is restarted with ``-m immediate`` (a crash: no shutdown
   checkpoint, recovery on start).

The operator's Placement client must retry connection errors and 503s with
back-off; afterwards every Instance is Scheduled with exactly one allocation
on its host (no write lost), no consumer has two allocations and no provider
is over capacity (nothing claimed twice), and the audit is clean.

Default: 100 Instances; ``KOVA_RELIABILITY_LONG=1``: 300.
"""

from __future__ import annotations

import time
import uuid

import pytest

from tests.reliability import scheduling as s
from tests.reliability.record import long_run, record

pytestmark = [pytest.mark.reliability, pytest.mark.integration]


@pytest.fixture
def postgres():
    pg = s.PrivatePostgres()
    yield pg
    pg.destroy()


@pytest.fixture
def placement(postgres, tmp_path):
    url = postgres.create_database(f"placement_{uuid.uuid4().hex[:8]}")
    server = s.PlacementProcess(tmp_path, url)
    yield server
    server.stop()


def test_restart_placement_then_postgres_during_burst(k8s_client, kubeconfig, kova_crds,
                                                      namespace, postgres, placement,
                                                      tmp_path):
    n = 300 if long_run() else 100
    with s.cluster_on(k8s_client, kubeconfig, namespace, placement, tmp_path) as cluster:
        hosts = s.add_exact_hosts(cluster, n + n // 5)
        watch = s.InstanceWatch(cluster)

        def scheduled() -> int:
            return sum(1 for p in list(watch.phase.values()) if p == "Scheduled")

        mport = s.free_port()
        proc = cluster.start_operator("--workers", "8", "--metrics-port", str(mport))
        s.wait_for(lambda: s.scrape(f"http://127.0.0.1:{mport}/metrics", True).get(
            'kova_operator_hosts{state="Up"}', 0) >= len(hosts), 60, 0.3,
            "the operator to see every host Up")
        t0 = time.monotonic()
        s.create_instances(cluster, n)
        faults = []

        def when(fraction: float) -> int:
            point = int(n * fraction)
            s.wait_for(lambda: scheduled() >= point or proc.poll() is not None, 300, 0.02,
                       f"{point} Instances Scheduled")
            assert proc.poll() is None, cluster.operator_log()[-5000:]
            return scheduled()

        at = when(0.2)
        t = time.monotonic()
        placement.kill()
        placement.start()
        faults.append({"fault": "placement kill -9 + start", "scheduled_at": at,
                       "down_s": round(time.monotonic() - t, 1)})
        at = when(0.45)
        t = time.monotonic()
        postgres.restart("fast")
        faults.append({"fault": "postgres restart -m fast", "scheduled_at": at,
                       "down_s": round(time.monotonic() - t, 1)})
        at = when(0.7)
        t = time.monotonic()
        postgres.restart("immediate")
        faults.append({"fault": "postgres restart -m immediate", "scheduled_at": at,
                       "down_s": round(time.monotonic() - t, 1)})
        t_last = time.monotonic()
        s.wait_all_scheduled(cluster, n, 300)
        converge = time.monotonic() - t_last
        total = time.monotonic() - t0
        watch.stop()
        metrics = s.scrape(f"http://127.0.0.1:{mport}/metrics")
        pmetrics = s.scrape(f"{placement.url}/metrics")
        tally = s.tally(cluster)
        rescheduled = watch.rescheduled()
        events = s.scheduled_events(cluster)
        twice_announced = {watch.names.get(u, u): c for u, c in events.items() if c > 1}
        code, report = s.audit(cluster)
        adopted = cluster.operator_log().count("adopted=True")
        retries = {k.split('reason="')[1].rstrip('"}'): int(v) for k, v in metrics.items()
                   if k.startswith("kova_operator_placement_retries_total{")}
        errors = int(s.metric_sum(metrics, "kova_operator_errors_total"))
        unavailable = sum(int(v) for k, v in pmetrics.items()
                          if k.startswith("placement_requests_total{") and 'status="503"' in k)
        server_errors = sum(int(v) for k, v in pmetrics.items()
                            if k.startswith("placement_requests_total{")
                            and 'status="500"' in k)

        assert all(f["scheduled_at"] < n for f in faults), faults
        assert proc.poll() is None, "the operator exited"
        assert tally.instances == n
        assert not tally.problems(), tally.problems()
        assert not rescheduled, f"status.host set more than once: {rescheduled}"
        assert not twice_announced, f"more than one Scheduled Event: {twice_announced}"
        assert code == 0 and report["orphanAllocations"] == [] \
            and report["missingAllocations"] == [] and report["mismatchedHosts"] == [], report
        # The outages were seen and ridden out by the client's retries, not
        # by failed reconciles; and a database outage is a 503, never a 500.
        assert sum(retries.values()) > 0, retries
        assert server_errors == 0, f"{server_errors} answers 500 after the Postgres restarts"

    record(fault="Placement and Postgres restart",
           injected=f"during a {n}-Instance burst (100 by default, 300 with "
                    "KOVA_RELIABILITY_LONG=1): "
                    "Placement kill -9 + start, then Postgres restart -m fast, then "
                    "Postgres restart -m immediate (crash)",
           times=3, lost=len(tally.lost),
           duplicated=len(tally.duplicated) + len(rescheduled) + len(twice_announced),
           overcommitted=len(tally.overcommitted),
           result=f"all {n} Scheduled once, allocations = Instances, audit clean; the "
                  "client retried through every outage",
           figures={"instances": n, "hosts": len(hosts), "faults": faults,
                    "client_retries": retries, "reconcile_errors": errors,
                    "claims_adopted": adopted,
                    "placement_503_after_its_restart": unavailable,
                    "seconds_total": round(total, 1),
                    "seconds_to_converge_after_last_fault": round(converge, 1)})
