"""Unit tests: one per weigher, normalisation and ordering."""

from __future__ import annotations

from collections import Counter

import pytest

from kova.operator.scheduler.filters import Candidate, HostInfo
from kova.operator.scheduler.request import RequestSpec, ServerGroupInfo
from kova.operator.scheduler.weighers import (
    BuildFailures,
    WeighConfig,
    WeighContext,
    normalize,
    order_candidates,
    weigh,
)


def cand(name, mem=1000, vcpu=8, disk=100):
    res = {"MEMORY_MB": {"capacity": mem, "used": 0}, "VCPU": {"capacity": vcpu, "used": 0},
           "DISK_GB": {"capacity": disk, "used": 0}}
    return Candidate(rp_uuid="rp-" + name, host=HostInfo(name=name, alive=True),
                     allocations={}, resources=res)


def req(**kw):
    return RequestSpec(namespace="ns", name="vm", uid="u",
                       resources={"VCPU": 1, "MEMORY_MB": 1, "DISK_GB": 1}, **kw)


def names(weighed):
    return [c.name for _, c in weighed]


ONLY = dict(ram=0.0, cpu=0.0, disk=0.0, soft_affinity=0.0, soft_anti_affinity=0.0,
            build_failure=0.0)


def test_normalize():
    assert normalize([1, 3, 2]) == [0.0, 1.0, 0.5]
    assert normalize([5, 5]) == [0.0, 0.0]
    assert normalize([]) == []


def test_ram_spread_and_pack():
    cs = [cand("a", mem=100), cand("b", mem=900), cand("c", mem=500)]
    assert names(weigh(cs, req(), WeighConfig.strategy("spread", **dict(ONLY, ram=1.0)))) == [
        "b", "c", "a"]
    assert names(weigh(cs, req(), WeighConfig.strategy("pack", **dict(ONLY, ram=1.0)))) == [
        "a", "c", "b"]


def test_cpu_weigher():
    cs = [cand("a", vcpu=4), cand("b", vcpu=64)]
    assert names(weigh(cs, req(), WeighConfig(**dict(ONLY, cpu=1.0)))) == ["b", "a"]
    cs[0].resources["VCPU"]["used"] = 0
    cs[1].resources["VCPU"]["used"] = 63
    assert names(weigh(cs, req(), WeighConfig(**dict(ONLY, cpu=1.0)))) == ["a", "b"]


def test_disk_weigher():
    cs = [cand("a", disk=10), cand("b", disk=1000)]
    assert names(weigh(cs, req(), WeighConfig(**dict(ONLY, disk=1.0)))) == ["b", "a"]
    assert names(weigh(cs, req(), WeighConfig(**dict(ONLY, disk=-1.0)))) == ["a", "b"]


def test_soft_affinity():
    cs = [cand("a"), cand("b")]
    r = req(server_group=ServerGroupInfo("g", "soft-affinity", member_hosts=Counter({"b": 2})))
    assert names(weigh(cs, r, WeighConfig(**dict(ONLY, soft_affinity=1.0)))) == ["b", "a"]


def test_soft_anti_affinity():
    cs = [cand("a"), cand("b")]
    r = req(server_group=ServerGroupInfo("g", "soft-anti-affinity",
                                         member_hosts=Counter({"a": 1})))
    assert names(weigh(cs, r, WeighConfig(**dict(ONLY, soft_anti_affinity=1.0)))) == ["b", "a"]


def test_build_failure_weigher_and_window():
    t = [0.0]
    fails = BuildFailures(window=10, clock=lambda: t[0])
    fails.record("a")
    ctx = WeighContext(failures=fails)
    cs = [cand("a", mem=900), cand("b", mem=100)]
    cfg = WeighConfig()  # RAM spread would prefer a; the failure outweighs it
    assert names(weigh(cs, req(), cfg, ctx)) == ["b", "a"]
    t[0] = 11.0
    assert fails.count("a") == 0
    assert names(weigh(cs, req(), cfg, ctx)) == ["a", "b"]


def test_unknown_strategy():
    with pytest.raises(ValueError):
        WeighConfig.strategy("random")


def test_order_candidates_prefers_alternates():
    weighed = [(3.0, cand("a")), (2.0, cand("b")), (1.0, cand("c"))]
    assert [c.name for c in order_candidates(weighed, ["c", "x", "b"])] == ["c", "b", "a"]
    assert [c.name for c in order_candidates(weighed)] == ["a", "b", "c"]
