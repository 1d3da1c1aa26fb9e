"""Property test of the candidate search against a brute-force oracle
(flat providers, several request groups, both group policies): every
candidate allocates exactly the requested amounts from one tree, within
capacity and max_unit, and nothing that fits is missing."""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from kova.placement import candidates
from kova.placement.cache import Inv, Provider, _build

RCS = ["VCPU", "MEMORY_MB", "DISK_GB"]
TRAITS = ["T1", "T2"]


@st.composite
def worlds(draw):
    n = draw(st.integers(1, 4))
    providers = {}
    for pid in range(1, n + 1):
        p = Provider(pid, f"00000000-0000-0000-0000-{pid:012d}", f"p{pid}", 0, None, pid, None)
        for rc in draw(st.lists(st.sampled_from(RCS), unique=True, max_size=3)):
            total = draw(st.integers(1, 8))
            max_unit = draw(st.integers(1, total))
            step = draw(st.sampled_from([1, 1, 2]))
            p.inv[rc] = Inv(total, 0, 1, max_unit, step, 1.0, total)
            p.used[rc] = draw(st.integers(0, total))
        p.traits = frozenset(draw(st.lists(st.sampled_from(TRAITS), unique=True)))
        providers[pid] = p
    snap = _build(1, providers, set(RCS), set(TRAITS), ({}, {}))
    groups = {}
    for suffix in ["", "1", "2"][:draw(st.integers(1, 3))]:
        res = draw(st.dictionaries(st.sampled_from(RCS), st.integers(1, 4), min_size=1,
                                   max_size=2))
        req = draw(st.lists(st.sampled_from(TRAITS), unique=True, max_size=1))
        forb = draw(st.lists(st.sampled_from([t for t in TRAITS if t not in req]),
                             unique=True, max_size=1))
        groups[suffix] = candidates.RequestGroup(
            suffix=suffix, use_same_provider=bool(suffix), resources=res,
            required=[frozenset([t]) for t in req], forbidden=set(forb))
    policy = draw(st.sampled_from(["none", "isolate"]))
    return snap, groups, policy


def _fits_alone(p, group):
    if not all(frozenset(r) & p.traits for r in group.required):
        return False
    if group.forbidden & p.traits:
        return False
    return all(p.can_fit(rc, amt) for rc, amt in group.resources.items())


def oracle(snap, groups, policy):
    suffixes = list(groups)
    options = [[p for p in snap.by_id.values() if _fits_alone(p, groups[s])] for s in suffixes]
    out = set()
    for combo in itertools.product(*options):
        if len({p.root_id for p in combo}) != 1:
            continue  # all groups of a candidate come from one tree
        granular = [p.id for s, p in zip(suffixes, combo, strict=False) if s]
        if policy == "isolate" and len(set(granular)) != len(granular):
            continue
        amounts = {}
        for s, p in zip(suffixes, combo, strict=False):
            for rc, amt in groups[s].resources.items():
                amounts[(p.id, rc)] = amounts.get((p.id, rc), 0) + amt
        if any(snap.by_id[pid].used.get(rc, 0) + amt > snap.by_id[pid].inv[rc].capacity
               or amt > snap.by_id[pid].inv[rc].max_unit for (pid, rc), amt in amounts.items()):
            continue
        mappings = frozenset((s, frozenset([p.id])) for s, p in zip(suffixes, combo, strict=False))
        out.add((frozenset(amounts.items()), mappings))
    return out


def _as_set(result):
    areqs, _ = result
    if isinstance(areqs, candidates.Simple):
        return {(frozenset(((p.id, rc), amt) for rc, amt in areqs.resources.items()),
                 frozenset([(areqs.suffix, frozenset([p.id]))])) for p in areqs.providers}
    return {(frozenset(a.amounts.items()),
             frozenset((s, frozenset(ids)) for s, ids in a.mappings.items())) for a in areqs}


@settings(max_examples=150, deadline=None)
@given(worlds())
def test_candidates_match_brute_force(world):
    snap, groups, policy = world
    rw = candidates.RequestWide(group_policy=policy)
    got = _as_set(candidates.find(snap, groups, rw, nested_aware=True))
    assert got == oracle(snap, groups, policy)
    # and twice the same answer, in the same order
    first = candidates.find(snap, groups, rw, nested_aware=True)[0]
    second = candidates.find(snap, groups, rw, nested_aware=True)[0]
    key = (lambda r: [p.id for p in r.providers]) if isinstance(first, candidates.Simple) \
        else (lambda r: [sorted(a.amounts.items()) for a in r])
    assert key(first) == key(second)


@st.composite
def changes(draw):
    n = draw(st.integers(1, 8))
    def provider(pid, root):
        p = Provider(pid, f"00000000-0000-0000-0000-{pid:012d}", f"p{pid}", 0,
                     None if root == pid else root, root, None)
        for rc in draw(st.lists(st.sampled_from(RCS), unique=True, max_size=2)):
            p.inv[rc] = Inv(4, 0, 1, 4, 1, 1.0, 4)
        p.traits = frozenset(draw(st.lists(st.sampled_from(TRAITS + ["MISC_SHARES_VIA_AGGREGATE"]),
                                           unique=True)))
        p.aggs = frozenset(draw(st.lists(st.sampled_from(["a", "b"]), unique=True)))
        return p
    roots = {pid: (pid if pid <= 3 else draw(st.integers(1, 3))) for pid in range(1, n + 1)}
    before = {pid: provider(pid, roots[pid]) for pid in roots}
    changed = set(draw(st.lists(st.sampled_from(sorted(roots) + [n + 1, n + 2]), unique=True)))
    fresh = {}
    for pid in changed:
        deleted = pid in before and pid > 3 and draw(st.booleans())
        if not deleted:
            fresh[pid] = provider(pid, roots.get(pid, draw(st.integers(1, 3))))
    return before, changed, fresh


@settings(max_examples=150, deadline=None)
@given(changes())
def test_patched_snapshot_equals_full_build(change):
    """Incremental refresh gives the same indexes as a full rebuild."""
    from kova.placement.cache import patch_snapshot

    before, changed, fresh = change
    old = _build(1, dict(before), set(RCS), set(TRAITS), ({}, {}))
    patched = patch_snapshot(old, 2, changed, fresh)
    after = {pid: p for pid, p in before.items() if pid not in changed}
    after.update(fresh)
    full = _build(2, after, set(RCS), set(TRAITS), ({}, {}))

    def ids(mapping):
        return {k: [p.id for p in v] for k, v in mapping.items() if v}

    assert list(patched.by_id) == list(full.by_id)
    assert ({u: p.id for u, p in patched.by_uuid.items()}
            == {u: p.id for u, p in full.by_uuid.items()})
    assert ids(patched.tree_members) == ids(full.tree_members)
    assert ids(patched.by_rc) == ids(full.by_rc)
    assert {k: v for k, v in patched.agg_members.items() if v} == \
        {k: v for k, v in full.agg_members.items() if v}
    assert [p.id for p in patched.sharing] == [p.id for p in full.sharing]
    assert patched.has_trees == full.has_trees
