"""Unit tests: one per scheduler filter."""

from __future__ import annotations

from collections import Counter

from kova.operator.scheduler import filters as F
from kova.operator.scheduler.request import RequestSpec, ServerGroupInfo


def cand(name="h1", **host):
    info = F.HostInfo(name=name, rp_uuid=f"rp-{name}", alive=True, **host)
    return F.Candidate(rp_uuid=f"rp-{name}", host=info,
                       allocations={f"rp-{name}": {"resources": {"VCPU": 1}}})


def req(**kw):
    return RequestSpec(namespace="ns", name="vm", uid="u", resources={"VCPU": 1}, **kw)


def test_known_host():
    c = F.Candidate(rp_uuid="rp-x", host=None, allocations={})
    assert F.known_host_filter(c, req()) is not None
    assert F.known_host_filter(cand(), req()) is None


def test_enabled():
    assert F.enabled_filter(cand(enabled=False), req()) == "host disabled"
    assert F.enabled_filter(cand(), req()) is None


def test_maintenance():
    assert F.maintenance_filter(cand(maintenance=True), req()) is not None
    assert F.maintenance_filter(cand(), req()) is None


def test_heartbeat():
    c = cand()
    c.host.alive = False
    assert "down" in F.heartbeat_filter(c, req())
    assert F.heartbeat_filter(cand(), req()) is None


def test_availability_zone():
    assert F.availability_zone_filter(cand(zone="a"), req(zone="a")) is None
    assert F.availability_zone_filter(cand(zone="b"), req(zone="a")) is not None
    assert F.availability_zone_filter(cand(zone="b"), req()) is None


def sg(policy, hosts, max_per_host=1):
    return ServerGroupInfo(name="web", policy=policy, max_server_per_host=max_per_host,
                           member_hosts=Counter(hosts))


def test_affinity():
    assert F.server_group_affinity_filter(cand("h1"), req(server_group=sg("affinity", {}))) is None
    r = req(server_group=sg("affinity", {"h2": 1}))
    assert F.server_group_affinity_filter(cand("h1"), r) is not None
    assert F.server_group_affinity_filter(cand("h2"), r) is None


def test_anti_affinity_and_max_per_host():
    r = req(server_group=sg("anti-affinity", {"h1": 1}))
    assert F.server_group_anti_affinity_filter(cand("h1"), r) is not None
    assert F.server_group_anti_affinity_filter(cand("h2"), r) is None
    r2 = req(server_group=sg("anti-affinity", {"h1": 1}, max_per_host=2))
    assert F.server_group_anti_affinity_filter(cand("h1"), r2) is None
    r3 = req(server_group=sg("anti-affinity", {"h1": 2}, max_per_host=2))
    assert F.server_group_anti_affinity_filter(cand("h1"), r3) is not None


def test_soft_policies_do_not_filter():
    for policy in ("soft-affinity", "soft-anti-affinity"):
        r = req(server_group=sg(policy, {"h1": 5}))
        assert F.server_group_affinity_filter(cand("h2"), r) is None
        assert F.server_group_anti_affinity_filter(cand("h1"), r) is None


def test_same_and_different_host():
    assert F.same_host_filter(cand("h1"), req(same_host={"h1"})) is None
    assert F.same_host_filter(cand("h2"), req(same_host={"h1"})) is not None
    assert F.same_host_filter(cand("h2"), req()) is None
    assert F.different_host_filter(cand("h1"), req(different_host={"h1"})) is not None
    assert F.different_host_filter(cand("h2"), req(different_host={"h1"})) is None


def test_requested_host():
    assert F.requested_host_filter(cand("h1"), req(requested_host="h1")) is None
    assert F.requested_host_filter(cand("h2"), req(requested_host="h1")) is not None


def test_retry():
    assert F.retry_filter(cand("h1"), req(excluded_hosts={"h1"})) is not None
    assert F.retry_filter(cand("h2"), req(excluded_hosts={"h1"})) is None


def test_run_filters_counts_first_reason():
    cands = [cand("h1", enabled=False), cand("h2", maintenance=True), cand("h3"),
             cand("h4", enabled=False, maintenance=True)]
    passed, rejected = F.run_filters(cands, req())
    assert [c.name for c in passed] == ["h3"]
    assert rejected == Counter({("Enabled", "host disabled"): 2,
                                ("Maintenance", "host in maintenance"): 1})
    msg = F.describe_rejections(4, rejected)
    assert msg == ("4 candidate host(s) from Placement, none passed the filters: "
                   "Enabled removed 2 (host disabled), "
                   "Maintenance removed 1 (host in maintenance)")
