"""Fault: two schedulers racing.

Two ``kova operator run --standalone`` processes (kopf peering, i.e. leader
election, turned off: both act on every Instance at once) schedule a burst of
Instances onto simulated hosts whose capacity fits the burst exactly, so the
last claims fight over the last free slots.  Placement's claim (keyed by the
Instance uid, checked against capacity in one transaction) must make every
Instance land once: one host each, never changed, one ``Scheduled`` Event, no
provider over capacity, and allocations equal to the Instances.

Default: 120 Instances on 12 hosts; ``KOVA_RELIABILITY_LONG=1``: the full
size, 500 on 50 hosts.
"""

from __future__ import annotations

import time

import pytest

from tests.fixtures.operator import placement_server  # noqa: F401 (fixture: Placement on SQLite)
from tests.reliability import scheduling as s
from tests.reliability.record import long_run, record

pytestmark = [pytest.mark.reliability, pytest.mark.integration]


def test_two_schedulers_fill_exact_capacity_once(k8s_client, kubeconfig, kova_crds, namespace,
                                                 placement_server, tmp_path):
    n = 500 if long_run() else 120
    with s.cluster_on(k8s_client, kubeconfig, namespace, placement_server, tmp_path) as cluster:
        hosts = s.add_exact_hosts(cluster, n)
        ports = [s.free_port(), s.free_port()]
        for i, port in enumerate(ports):
            cluster.start_operator("--metrics-port", str(port), "--workers", "16",
                                   log_name=f"operator-{i}.log")
        # Both have listed the hosts and found them Up before the burst.
        for port in ports:
            s.wait_for(lambda port=port: s.scrape(f"http://127.0.0.1:{port}/metrics", True).get(
                'kova_operator_hosts{state="Up"}', 0) >= len(hosts), 60, 0.3,
                "both operators to see every host Up")
        watch = s.InstanceWatch(cluster)
        t0 = time.monotonic()
        s.create_instances(cluster, n)
        logs = ("operator-0.log", "operator-1.log")
        s.wait_all_scheduled(cluster, n, 600 if long_run() else 240, logs)
        total = time.monotonic() - t0
        # Let the operators' event queues drain, then stop watching.
        time.sleep(2)
        watch.stop()
        metrics = [s.scrape(f"http://127.0.0.1:{port}/metrics") for port in ports]
        tally = s.tally(cluster)
        events = s.scheduled_events(cluster)
        rescheduled = watch.rescheduled()
        twice_announced = {watch.names.get(u, u): c for u, c in events.items() if c > 1}
        regressed = sorted(watch.names.get(u, u) for u in watch.regressed)
        code, report = s.audit(cluster)

        def key(name):
            return f'kova_operator_schedule_outcomes_total{{reason="{name}"}}'

        # Decisions (a claim won, or a rival's claim adopted) and the
        # Scheduled statuses each one wrote.
        decisions = [int(m.get("kova_operator_schedule_duration_seconds_count", 0))
                     for m in metrics]
        scheduled_by = [int(m.get(key("Scheduled"), 0)) for m in metrics]
        no_valid_host = sum(int(m.get(key("NoValidHost"), 0)) for m in metrics)
        lost_races = sum(int(m.get("kova_operator_claim_tries_sum", 0)
                             - m.get("kova_operator_claim_tries_count", 0)) for m in metrics)

        assert tally.instances == n
        assert not tally.problems(), tally.problems()
        assert not rescheduled, f"status.host set more than once: {rescheduled}"
        assert not regressed, f"Scheduled Instances put back to Pending: {regressed}"
        assert not twice_announced, f"more than one Scheduled Event: {twice_announced}"
        assert code == 0 and report["orphanAllocations"] == [] \
            and report["missingAllocations"] == [], report
        # Both really decided: the race was run, not left to one process.
        assert all(decisions), decisions
        assert sum(scheduled_by) == n, scheduled_by
        assert tally.hosts_used == len(hosts) and tally.max_per_host == s.SLOTS

    duplicated = len(tally.duplicated) + len(rescheduled) + len(twice_announced)
    record(fault="Racing schedulers",
           injected=f"2 operators, leader election off (--standalone), {n} Instances on "
                    f"{len(hosts)} hosts that fit them exactly (120 on 12 by default, 500 on 50 "
                    "with KOVA_RELIABILITY_LONG=1)",
           times=1, lost=len(tally.lost), duplicated=duplicated,
           overcommitted=len(tally.overcommitted),
           result=f"all {n} Scheduled once, every host full to exactly {s.SLOTS}, "
                  "allocations = Instances, audit clean",
           figures={"instances": n, "hosts": len(hosts),
                    "seconds_to_all_scheduled": round(total, 1),
                    "decisions_by_each_operator": decisions,
                    "scheduled_statuses_written_by_each": scheduled_by,
                    "claim_races_lost": lost_races, "no_valid_host_retries": no_valid_host,
                    "leaked": len(tally.leaked), "scheduled_events": sum(events.values()),
                    "watch_events": watch.events})
