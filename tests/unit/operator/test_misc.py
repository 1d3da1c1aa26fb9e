"""Unit tests: work queue, conditions, candidate parsing, lease freshness."""

from __future__ import annotations

import asyncio
import json
import time

from kova.conditions import set_condition
from kova.crds import names as contract
from kova.operator.host.view import lease_fresh
from kova.operator.instance.status import attempts_history, is_build_failed
from kova.operator.scheduler.filters import HostInfo
from kova.operator.scheduler.scheduler import parse_candidates
from kova.workqueue import AsyncWorkQueue as WorkQueue


async def test_queue_dedups_and_requeues_dirty_keys():
    q = WorkQueue()
    q.add("a")
    q.add("a")
    q.add("b")
    assert len(q) == 2
    k = await q.get()
    assert k == "a"
    q.add("a")  # while processing: processed again after done
    assert len(q) == 1
    q.done("a")
    assert {await q.get(), await q.get()} == {"a", "b"}


async def test_queue_add_after():
    q = WorkQueue()
    q.add_after("x", 0.05)
    assert q.delayed("x") and len(q) == 0
    assert await asyncio.wait_for(q.get(), 1) == "x"
    q.done("x")
    q.add_after("y", 10)
    q.add("y")  # an immediate add cancels the timer
    assert not q.delayed("y")
    q.shutdown()


def test_set_condition_keeps_transition_time_when_status_unchanged():
    conds = set_condition(None, "Scheduled", "False", "NoValidHost", "x")
    t0 = conds[0]["lastTransitionTime"]
    conds[0]["lastTransitionTime"] = "2000-01-01T00:00:00Z"
    again = set_condition(conds, "Scheduled", "False", "NoValidHost", "y")
    assert again[0]["lastTransitionTime"] == "2000-01-01T00:00:00Z"
    assert again[0]["message"] == "y"
    flipped = set_condition(again, "Scheduled", "True", "Scheduled", "ok", 3)
    assert flipped[0]["lastTransitionTime"] != "2000-01-01T00:00:00Z"
    assert flipped[0]["observedGeneration"] == 3 and t0


def test_build_failed_and_history():
    obj = {"metadata": {"annotations": {contract.ANNOTATION_ATTEMPTS: json.dumps(
        [{"attempt": 1, "host": "h"}])}},
        "status": {"conditions": [{"type": "Built", "status": "False", "reason": "BuildFailed"}]}}
    assert is_build_failed(obj)
    assert attempts_history(obj) == [{"attempt": 1, "host": "h"}]
    assert attempts_history({"metadata": {}}) == []


def test_parse_candidates():
    body = {"allocation_requests": [
        {"allocations": {"rp1": {"resources": {"VCPU": 1}}}},
        {"allocations": {"rp2": {"resources": {"VCPU": 1}}}},
        {"allocations": {"rp1": {"resources": {"VCPU": 1}}, "rp3": {"resources": {"X": 1}}}},
    ], "provider_summaries": {"rp1": {"resources": {"VCPU": {"capacity": 4, "used": 1}},
                                      "traits": ["T"]}}}
    hosts = {"rp1": HostInfo(name="h1")}
    cands = parse_candidates(body, hosts.get)
    assert [c.rp_uuid for c in cands] == ["rp1", "rp2"]
    assert cands[0].name == "h1" and cands[0].free("VCPU") == 3 and cands[1].host is None


def test_lease_fresh():
    now = time.time()
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime(now - 5))
    lease = {"spec": {"renewTime": stamp, "leaseDurationSeconds": 10}}
    assert lease_fresh(lease, now)
    assert not lease_fresh(lease, now + 6)
    assert lease_fresh(lease, now + 6, grace=5)
    assert not lease_fresh(None, now)


def test_freeze_heap_keeps_cached_bodies_out_of_collections_and_still_frees_them():
    """The informer's caches after the first listing: out of the collector's
    generations, yet a body replaced by a newer copy is freed at once."""
    import gc
    import weakref

    from kova.operator.informer import freeze_heap

    class Body(dict):
        pass

    cache = {f"host-{i}": Body(metadata={"name": f"host-{i}"}) for i in range(100)}
    freed: list[str] = []
    ref = weakref.ref(cache["host-0"], lambda _: freed.append("host-0"))
    try:
        assert freeze_heap() >= 100
        tracked = {id(o) for o in gc.get_objects() if isinstance(o, Body)}
        assert not tracked & {id(b) for b in cache.values()}  # in no generation
        cache["host-0"] = Body(metadata={"name": "host-0", "resourceVersion": "2"})
        assert freed == ["host-0"] and ref() is None
    finally:
        gc.unfreeze()
    assert {id(b) for b in cache.values()} <= {id(o) for o in gc.get_objects()}
