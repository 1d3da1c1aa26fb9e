"""Fault: the operator is killed (``kill -9``) again and again mid-burst.

One ``kova operator run`` schedules a burst of Instances onto simulated hosts
(with room to spare); it is SIGKILLed at random moments -- each when the burst
has scheduled a random 1-3 more Instances, plus a random delay, so that a
kill can land between a claim in Placement and its record on the Instance --
and restarted at once each time.  The Instances arrive in waves that run a
few Instances past the next kill point: an operator that schedules faster
than the test sees its progress cannot finish the whole burst before the
last kill (every kill lands while the burst still has Instances to come).
Afterwards every Instance must be Scheduled with exactly one allocation on
the host its status names, no host ever changed, no provider over capacity,
and ``kova operator audit`` must find no orphan and no missing allocation.

Default: 100 Instances, 10 kills (the default run's time budget);
``KOVA_RELIABILITY_LONG=1``: the full size, 200 Instances, with 20 kills.
"""

from __future__ import annotations

import random
import time

import pytest

from tests.fixtures.operator import placement_server  # noqa: F401 (fixture: Placement on SQLite)
from tests.reliability import scheduling as s
from tests.reliability.record import long_run, record

pytestmark = [pytest.mark.reliability, pytest.mark.integration]


def test_kill_9_operator_during_burst(k8s_client, kubeconfig, kova_crds, namespace,
                                      placement_server, tmp_path):
    n, kills = (200, 20) if long_run() else (100, 10)
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    # Each run of the operator is killed once it has scheduled a random 1-3
    # more Instances (plus a short random delay); the Instances arrive in waves
    # that run `ahead` past that point, so even a run that schedules a whole
    # wave before the kill advances the burst by at most `step + ahead`, and
    # the last kill still leaves Instances to schedule.
    step, ahead = 3, 6
    assert kills * (step + ahead) < n
    with s.cluster_on(k8s_client, kubeconfig, namespace, placement_server, tmp_path) as cluster:
        # 20% spare capacity: the point is the crash, not the last slot.
        hosts = s.add_exact_hosts(cluster, n + n // 5)
        watch = s.InstanceWatch(cluster)
        created = 0

        def scheduled() -> int:
            return sum(1 for p in list(watch.phase.values()) if p == "Scheduled")

        def create_up_to(limit: int) -> None:
            nonlocal created
            limit = min(limit, n)
            if limit > created:
                s.create_instances(cluster, limit - created, start=created)
                created = limit

        proc = cluster.start_operator("--workers", "8")
        t0 = time.monotonic()
        at_kill, pending_at_kill = [], []
        for _ in range(kills):
            # Each run schedules something before it dies ...
            target = scheduled() + rng.randint(1, step)
            create_up_to(target + ahead)
            s.wait_for(lambda: scheduled() >= target or proc.poll() is not None, 300, 0.02,
                       f"{target} Instances Scheduled")
            assert proc.poll() is None, cluster.operator_log()[-5000:]
            # ... then a random delay, short beside a wave's scheduling.
            time.sleep(s.jitter(0.0, 0.02, rng))
            cluster.stop_operator(proc, kill=True)
            assert proc.returncode == -9
            at_kill.append(s.count_scheduled(cluster))
            pending_at_kill.append(created - at_kill[-1])
            proc = cluster.start_operator("--workers", "8")
        create_up_to(n)
        t_last = time.monotonic()
        s.wait_all_scheduled(cluster, n, 300)
        converge = time.monotonic() - t_last
        total = time.monotonic() - t0
        watch.stop()
        tally = s.tally(cluster)
        events = s.scheduled_events(cluster)
        twice_announced = {watch.names.get(u, u): c for u, c in events.items() if c > 1}
        rescheduled = watch.rescheduled()
        code, report = s.audit(cluster)
        log = cluster.operator_log()
        adopted = log.count("adopted=True")

        assert len(at_kill) == kills and all(k < n for k in at_kill), at_kill
        # At least one kill found the operator with a wave still to schedule.
        assert any(pending_at_kill), pending_at_kill
        assert tally.instances == n
        assert not tally.problems(), tally.problems()
        assert not tally.leaked
        assert not rescheduled, f"status.host set more than once: {rescheduled}"
        assert not twice_announced, f"more than one Scheduled Event: {twice_announced}"
        assert code == 0 and report["orphanAllocations"] == [] \
            and report["missingAllocations"] == [] and report["mismatchedHosts"] == [], report
        assert report["instances"] == n and report["consumers"] == n, report

    record(fault="Operator crash",
           injected=f"kill -9 of the operator {kills} times at random points of a "
                    f"{n}-Instance burst arriving in waves, restarted each time (100 Instances and "
                    "10 kills by default, 200 and 20 with KOVA_RELIABILITY_LONG=1)",
           times=kills, lost=len(tally.lost),
           duplicated=len(tally.duplicated) + len(rescheduled) + len(twice_announced),
           overcommitted=len(tally.overcommitted),
           result=f"all {n} Scheduled once, allocations = Instances, audit: 0 orphans, "
                  "0 missing",
           figures={"instances": n, "hosts": len(hosts), "kills": kills,
                    "scheduled_at_each_kill": at_kill,
                    "unscheduled_at_each_kill": pending_at_kill,
                    "claims_adopted_after_restart": adopted,
                    "seconds_total": round(total, 1),
                    "seconds_to_converge_after_last_restart": round(converge, 1),
                    "seed": seed})
