"""Several active replicas: the pure parts of :mod:`kova.operator.membership`
(who is live, who owns a key, the member Lease's name).  The replicas
themselves run against the API server in
tests/reliability/test_shared_schedulers.py."""

from __future__ import annotations

import datetime as dt
from collections import Counter

from kova.operator.membership import live_members, member_name, owner_of, share_key


def _lease(name: str, renewed: float, duration: int = 15, acquired: float | None = None) -> dict:
    def t(x: float) -> str:
        return dt.datetime.fromtimestamp(x, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return {"metadata": {"name": name},
            "spec": {"renewTime": t(renewed), "leaseDurationSeconds": duration,
                     "acquireTime": t(acquired if acquired is not None else renewed)}}


def test_owner_spreads_keys_evenly_and_a_leaving_member_moves_only_its_own():
    members = ["kova-a", "kova-b", "kova-c"]
    keys = [f"uid-{i}" for i in range(6000)]
    owners = {k: owner_of(k, members) for k in keys}
    counts = Counter(owners.values())
    assert set(counts) == set(members)
    assert all(1700 < n < 2300 for n in counts.values()), counts
    after = {k: owner_of(k, ["kova-a", "kova-c"]) for k in keys}
    moved = [k for k in keys if after[k] != owners[k]]
    assert moved and all(owners[k] == "kova-b" for k in moved)
    assert len(moved) == counts["kova-b"]
    # order of the members does not matter
    assert all(owner_of(k, list(reversed(members))) == owners[k] for k in keys[:500])
    assert owner_of("x", []) is None


def test_live_members_are_the_fresh_leases_oldest_first():
    now = 1_000_000.0
    leases = [_lease("kova-new", now - 1, acquired=now - 5),
              _lease("kova-old", now - 2, acquired=now - 500),
              _lease("kova-dead", now - 16, acquired=now - 900),
              {"metadata": {"name": "kova-never"}, "spec": {}}]
    assert live_members(leases, now) == ["kova-old", "kova-new"]


def test_member_name_is_a_lease_name_and_share_key_groups_server_group_members():
    assert member_name("kova", "Node_7.example/1234") == "kova-node-7.example-1234"
    assert len(member_name("kova", "x" * 400)) <= 253
    a = {"metadata": {"namespace": "t", "name": "a", "uid": "u1"},
         "spec": {"serverGroupRef": {"name": "g"}}}
    b = {"metadata": {"namespace": "t", "name": "b", "uid": "u2"},
         "spec": {"serverGroupRef": {"name": "g"}}}
    c = {"metadata": {"namespace": "t", "name": "c", "uid": "u3"}, "spec": {}}
    assert share_key(a) == share_key(b) == "t/servergroup/g"
    assert share_key(c) == "u3"


def test_a_replica_that_skipped_instances_while_stale_looks_again_once_fresh():
    import time

    from kova.operator.membership import Membership

    calls = []
    m = Membership(None, "ns", "kova", "a", 3, lambda: calls.append(1))  # type: ignore[arg-type]
    m._renewed = time.monotonic()
    m.update(("kova-a",))
    assert len(calls) == 1 and m.owns("uid-1") and m.is_leader()
    m.update(("kova-a",))
    assert len(calls) == 1  # nothing changed
    m._renewed = time.monotonic() - 10  # the renewal is late: owns nothing
    assert not m.owns("uid-1") and not m.is_leader()
    m.update(("kova-a",))
    assert len(calls) == 1  # still stale
    m._renewed = time.monotonic()  # renewed again, same members
    m.update(("kova-a",))
    assert len(calls) == 2  # what it skipped is looked at again
    m.update(("kova-a",))
    assert len(calls) == 2
