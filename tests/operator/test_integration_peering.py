"""Integration: two replicas with kopf peering -- only one acts."""

from __future__ import annotations

import pytest

from .conftest import wait_for

pytestmark = pytest.mark.integration


def test_only_the_leader_schedules_and_the_other_takes_over(cluster):
    cluster.add_host("h1")
    leader = cluster.start_operator("--priority", "100", peering=True, log_name="a.log")
    wait_for(lambda: "kova operator starting" in cluster.operator_log("a.log"), 30)
    cluster.create_instance("vm1")
    cluster.wait_scheduled("vm1", timeout=40)
    standby = cluster.start_operator("--priority", "10", peering=True, log_name="b.log")
    wait_for(lambda: "standing by" in cluster.operator_log("b.log"), 40,
             what="the standby to stand by")
    cluster.create_instance("vm2")
    cluster.wait_scheduled("vm2", timeout=40)
    assert "scheduled " not in cluster.operator_log("b.log")
    # The leader leaves cleanly: the standby resumes and schedules.
    cluster.stop_operator(leader)
    cluster.create_instance("vm3")
    cluster.wait_scheduled("vm3", timeout=60)
    assert "vm3" in cluster.operator_log("b.log")
    assert standby.poll() is None
