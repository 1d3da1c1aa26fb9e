"""The host monitor's, the leadership check's, the provider sync's and the
server groups' decisions as pure functions."""

from __future__ import annotations

from collections import Counter

import pytest

from kova.crds import names
from kova.crds.names import HostState, ServerGroupPolicy
from kova.operator.host.controller import provider_state
from kova.operator.host.monitor import (
    fence_recorded,
    fenced_condition,
    ready_condition,
    wanted_state,
)
from kova.operator.host.view import lease_duration, lease_fresh, parse_time
from kova.operator.leadership import is_leader, peering_path
from kova.operator.servergroup.controller import group_status, policy_satisfied


@pytest.mark.parametrize("alive, has_lease, current, want", [
    (True, True, None, HostState.UP),
    (True, True, HostState.DOWN, HostState.UP),
    (False, True, HostState.UP, HostState.DOWN),
    (False, True, None, HostState.DOWN),
    (False, False, HostState.UP, HostState.DOWN),  # its Lease was deleted
    (False, False, None, HostState.UNKNOWN),  # never had one
    (False, False, HostState.UNKNOWN, HostState.UNKNOWN),
])
def test_wanted_state(alive, has_lease, current, want):
    assert wanted_state(alive, has_lease, current) == want


def test_ready_condition():
    assert ready_condition(HostState.UP, "kova-system", "h1", None)[:2] == (
        "True", names.HOST_REASON_UP)
    down = ready_condition(HostState.DOWN, "kova-system", "h1", "2026-01-01T00:00:00Z")
    assert down == ("False", names.HOST_REASON_DOWN, "the heartbeat Lease kova-system/h1 "
                    "expired (last renewed 2026-01-01T00:00:00Z)")
    assert ready_condition(HostState.UNKNOWN, "ops", "h1", None) == (
        "Unknown", names.HOST_REASON_NO_HEARTBEAT, "no heartbeat Lease ops/h1 yet")


def test_fenced_condition_and_whether_it_is_recorded():
    spec = fenced_condition("h1", names.HOST_REASON_FENCED_SPEC)
    node = fenced_condition("h1", names.HOST_REASON_FENCED_NODE)
    assert spec[:2] == ("True", names.HOST_REASON_FENCED_SPEC)
    assert node[:2] == ("True", names.HOST_REASON_FENCED_NODE) and "Node h1" in node[2]
    assert fenced_condition("h1", None)[:2] == ("False", names.HOST_REASON_NOT_FENCED)

    def body(status: str, reason: str) -> dict:
        return {"status": {"conditions": [{"type": names.HOST_COND_FENCED, "status": status,
                                           "reason": reason}]}}

    assert fence_recorded({}, None)
    assert not fence_recorded({}, names.HOST_REASON_FENCED_SPEC)
    assert fence_recorded(body("True", names.HOST_REASON_FENCED_SPEC),
                          names.HOST_REASON_FENCED_SPEC)
    assert not fence_recorded(body("True", names.HOST_REASON_FENCED_SPEC),
                              names.HOST_REASON_FENCED_NODE)
    assert not fence_recorded(body("True", names.HOST_REASON_FENCED_SPEC), None)
    assert fence_recorded(body("False", names.HOST_REASON_NOT_FENCED), None)


def test_leases():
    lease = {"spec": {"renewTime": "2026-01-01T00:00:10.000000Z", "leaseDurationSeconds": 5}}
    renewed = parse_time("2026-01-01T00:00:10Z")
    assert lease_fresh(lease, renewed + 5) and not lease_fresh(lease, renewed + 5.1)
    assert lease_fresh(lease, renewed + 7, grace=2)
    acquired = {"spec": {"acquireTime": "2026-01-01T00:00:10Z"}}
    assert lease_duration(acquired) == names.LEASE_DURATION_SECONDS
    assert lease_fresh(acquired, renewed + 39)
    assert not lease_fresh({"spec": {}}, renewed) and not lease_fresh(None, renewed)
    assert parse_time("yesterday") is None and parse_time(None) is None


@pytest.mark.parametrize("spec, fenced, want", [
    ({}, False, (False, None)),
    ({"enabled": False}, False, (True, None)),
    ({"maintenance": {"enabled": True}}, False, (True, None)),
    ({"maintenance": {"enabled": False}, "availabilityZone": "az1"}, False, (False, "az1")),
    ({"availabilityZone": "az1"}, True, (True, "az1")),
])
def test_provider_state(spec, fenced, want):
    assert provider_state({"spec": spec}, fenced) == want


# ============================================================ leadership
NOW = parse_time("2026-01-01T00:01:00Z")


def peering(**peers: tuple[int, str]) -> dict:
    return {"status": {name: {"priority": prio, "lastseen": seen, "lifetime": 60}
                       for name, (prio, seen) in peers.items()}}


def test_leader_when_no_live_peer_outranks():
    fresh, stale = "2026-01-01T00:00:30Z", "2026-01-01T00:00:00Z"
    assert is_leader(peering(me=(5, fresh)), "me", 5, NOW)
    assert is_leader(peering(me=(5, fresh), other=(3, fresh)), "me", 5, NOW)
    assert not is_leader(peering(me=(5, fresh), other=(7, fresh)), "me", 5, NOW)
    assert not is_leader(peering(other=(5, fresh)), "me", 5, NOW)  # a tie: nobody wins
    assert is_leader(peering(other=(7, stale)), "me", 5, NOW + 1)  # its lifetime is over
    assert not is_leader(None, "me", 5, NOW)  # no peering object yet
    assert is_leader({"status": {"junk": "not a peer"}}, "me", 5, NOW)


def test_peering_path():
    assert peering_path(True, (), "kova") == "/apis/kopf.dev/v1/clusterkopfpeerings/kova"
    assert peering_path(False, ("a", "b"), "kova") == (
        "/apis/kopf.dev/v1/namespaces/a/kopfpeerings/kova")


# ============================================================ server groups
@pytest.mark.parametrize("policy, max_per_host, hosts, ok", [
    (ServerGroupPolicy.AFFINITY, None, {}, True),
    (ServerGroupPolicy.AFFINITY, None, {"h1": 3}, True),
    (ServerGroupPolicy.AFFINITY, None, {"h1": 1, "h2": 1}, False),
    (ServerGroupPolicy.ANTI_AFFINITY, None, {"h1": 1, "h2": 1}, True),
    (ServerGroupPolicy.ANTI_AFFINITY, None, {"h1": 2}, False),
    (ServerGroupPolicy.ANTI_AFFINITY, 2, {"h1": 2, "h2": 1}, True),
    (ServerGroupPolicy.SOFT_ANTI_AFFINITY, None, {"h1": 5}, True),
])
def test_policy_satisfied(policy, max_per_host, hosts, ok):
    assert policy_satisfied(policy, max_per_host, Counter(hosts)) is ok


def test_group_status_written_only_when_it_changes():
    current = {"metadata": {"generation": 1}, "status": {}}
    out = group_status(current, ["b", "a"], Counter({"h1": 2}), "affinity", True)
    assert out["members"] == ["a", "b"] and out["hosts"] == ["h1"]
    cond = out["conditions"][0]
    assert (cond["type"], cond["status"], cond["reason"], cond["message"]) == (
        names.SG_COND_POLICY_SATISFIED, "True", names.SG_REASON_SATISFIED,
        "2 member(s) on 1 host(s)")
    current["status"] = out
    assert group_status(current, ["a", "b"], Counter({"h1": 2}), "affinity", True) is None
    broken = group_status(current, ["a", "b"], Counter({"h1": 1, "h2": 1}), "affinity", False)
    assert broken["conditions"][0]["reason"] == names.SG_REASON_VIOLATED
    empty = group_status({"metadata": {}, "status": {}}, [], Counter(), None, True)
    assert empty["members"] is None and empty["hosts"] is None
