"""Allocation candidates computed over an in-memory ``Snapshot``.

Semantics follow OpenStack Placement's documented behaviour:

* a granular (suffixed) group is satisfied by one provider;
* the unsuffixed group may be spread over the providers of one tree plus
  sharing providers (``MISC_SHARES_VIA_AGGREGATE``) that share an aggregate
  with that tree; its required traits are satisfied by the union of the
  traits of the providers it uses and none of them may have a forbidden one;
* candidates of all groups are combined per anchor (tree root), filtered by
  ``group_policy=isolate`` and ``same_subtree``, consolidated and checked
  against capacity and ``max_unit`` once more.

Unlike OpenStack Placement 16.0.0 every candidate allocates exactly the
amounts requested (amounts are never shared mutable objects), and the order
is deterministic: trees by provider id, then providers by id -- unless the
service runs with ``randomize_allocation_candidates`` (as OpenStack's
``[placement] randomize_allocation_candidates``): then ``limit`` takes a
random sample of all candidates instead of the first N, and without a limit
the candidates are shuffled.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass, field

from kova.placement.cache import Provider, Snapshot


@dataclass
class RequestGroup:
    suffix: str = ""
    use_same_provider: bool = False
    resources: dict[str, int] = field(default_factory=dict)
    required: list[frozenset[str]] = field(default_factory=list)
    forbidden: set[str] = field(default_factory=set)
    member_of: list[set[str]] = field(default_factory=list)
    forbidden_aggs: set[str] = field(default_factory=set)
    in_tree: str | None = None


@dataclass
class RequestWide:
    limit: int | None = None
    group_policy: str | None = None
    root_required: set[str] = field(default_factory=set)
    root_forbidden: set[str] = field(default_factory=set)
    same_subtrees: list[set[str]] = field(default_factory=list)
    #: The service's randomize_allocation_candidates setting.
    randomize: bool = False


def _apply_limit(items: list, rw: RequestWide) -> list:
    """OpenStack Placement's rule: a random sample of ``limit`` candidates (or
    a shuffle without a limit) when randomizing, else the first ``limit``."""
    if rw.limit is not None and rw.limit < len(items):
        return random.sample(items, rw.limit) if rw.randomize else items[:rw.limit]
    if rw.randomize and len(items) > 1:
        items = list(items)
        random.shuffle(items)
    return items


class AReq:
    """One allocation request: amounts per (provider, class) and mappings."""

    __slots__ = ("anchor", "amounts", "mappings", "same_provider")

    def __init__(self, anchor: int, amounts: dict, mappings: dict, same_provider: bool):
        self.anchor = anchor
        self.amounts = amounts            # {(provider_id, rc): amount}
        self.mappings = mappings          # {suffix: (provider_id, ...)}
        self.same_provider = same_provider

    def key(self):
        return (frozenset(self.amounts.items()),
                frozenset((s, frozenset(ids)) for s, ids in self.mappings.items()))

    def provider_ids(self) -> set[int]:
        return {pid for pid, _rc in self.amounts}


def _traits_ok(traits, required, forbidden) -> bool:
    if forbidden and not forbidden.isdisjoint(traits):
        return False
    for any_of in required:
        if any_of.isdisjoint(traits):
            return False
    return True


def _agg_sets(snap: Snapshot, group: RequestGroup):
    in_aggs = snap.providers_in_aggs(group.member_of) if group.member_of else None
    bad: set[int] = set()
    for agg in group.forbidden_aggs:
        bad |= snap.agg_members.get(agg, set())
    return in_aggs, bad


def _pool(snap: Snapshot, group: RequestGroup) -> list[Provider]:
    """The providers worth looking at: those with the rarest requested class."""
    if group.resources:
        first = min(group.resources, key=lambda rc: len(snap.by_rc.get(rc, ())))
        return snap.by_rc.get(first, [])
    return list(snap.by_id.values())


def _matching_providers(snap: Snapshot, group: RequestGroup,
                        tree_root: int | None) -> list[Provider]:
    """Providers that alone satisfy all of the group, in id order."""
    in_aggs, bad = _agg_sets(snap, group)
    if in_aggs is not None and not in_aggs:
        return []
    items = list(group.resources.items())
    pool = _pool(snap, group)
    required, forbidden = group.required, group.forbidden
    out: list[Provider] = []
    append = out.append
    for p in pool:
        if tree_root is not None and p.root_id != tree_root:
            continue
        if in_aggs is not None and p.id not in in_aggs:
            continue
        if bad and p.id in bad:
            continue
        if required or forbidden:
            traits = p.traits
            if forbidden and not forbidden.isdisjoint(traits):
                continue
            ok = True
            for any_of in required:
                if any_of.isdisjoint(traits):
                    ok = False
                    break
            if not ok:
                continue
        inv = p.inv
        used = p.used
        ok = True
        for rc, amount in items:
            i = inv.get(rc)
            if (i is None or amount < i.min_unit or amount > i.max_unit
                    or amount % i.step_size or used.get(rc, 0) + amount > i.capacity):
                ok = False
                break
        if ok:
            append(p)
    return out


#: A sample is drawn while it stays below 1/_SAMPLE_SHARE of the pool;
#: beyond that one pass over every provider is cheaper.
_SAMPLE_SHARE = 4


def _fits(group: RequestGroup, tree_root: int | None, anchors: set[int] | None):
    """The test of _matching_providers (plus ``anchors``) for one provider
    at a time, with aggregates looked up on the provider."""
    items = list(group.resources.items())
    required, forbidden = group.required, group.forbidden
    member_of, bad_aggs = group.member_of, group.forbidden_aggs

    def fits(p: Provider) -> bool:
        if tree_root is not None and p.root_id != tree_root:
            return False
        if anchors is not None and p.root_id not in anchors:
            return False
        aggs = p.aggs
        if member_of and any(options.isdisjoint(aggs) for options in member_of):
            return False
        if bad_aggs and not bad_aggs.isdisjoint(aggs):
            return False
        if (required or forbidden) and not _traits_ok(p.traits, required, forbidden):
            return False
        for rc, amount in items:
            i = p.inv.get(rc)
            if (i is None or amount < i.min_unit or amount > i.max_unit
                    or amount % i.step_size or p.used.get(rc, 0) + amount > i.capacity):
                return False
        return True
    return fits


def _sampled(snap: Snapshot, group: RequestGroup, tree_root: int | None,
             anchors: set[int] | None, limit: int) -> list[Provider] | None:
    """``limit`` providers drawn uniformly at random from all that satisfy
    the group, in random order, without finding all of them; None when a
    full pass is the cheaper way (few providers, or few of them match).

    The pool is visited in the order of a random sample of its positions
    (a prefix of a uniformly random permutation) and the first ``limit``
    providers that fit are the answer.  Which positions hold fitting
    providers decides whether an attempt succeeds, but not which of the
    fitting providers fill them: every ``limit``-subset of the fitting
    providers is equally likely, as with ``random.sample`` over all of them
    (``tests/unit/placement/test_candidates_sampling.py`` checks the
    spread).  An attempt that falls short is thrown away whole and the next
    one draws afresh, sized from the share of fits seen."""
    pool = _pool(snap, group)
    size = len(pool)
    want = 2 * limit
    fits = _fits(group, tree_root, anchors)
    while want * _SAMPLE_SHARE <= size:
        found: list[Provider] = []
        for i in random.sample(range(size), want):
            p = pool[i]
            if fits(p):
                found.append(p)
                if len(found) == limit:
                    return found
        if not found:
            return None
        want = int(want * limit / len(found) * 1.25) + 1
    return None


def _single_provider(snap: Snapshot, group: RequestGroup, anchors: set[int] | None,
                     tree_root: int | None) -> list[AReq]:
    """Each provider alone satisfying all of the group (granular groups)."""
    items = list(group.resources.items())
    suffix = group.suffix
    out: list[AReq] = []
    for p in _matching_providers(snap, group, tree_root):
        amounts = {(p.id, rc): amount for rc, amount in items}
        mappings = {suffix: (p.id,)}
        if anchors is None or p.root_id in anchors:
            out.append(AReq(p.root_id, amounts, mappings, group.use_same_provider))
        if p.traits and "MISC_SHARES_VIA_AGGREGATE" in p.traits:
            for anchor in snap.anchors(p):
                if anchor == p.root_id or (anchors is not None and anchor not in anchors):
                    continue
                out.append(AReq(anchor, amounts, mappings, group.use_same_provider))
    return out


class Simple:
    """Candidates of one group, one provider each (the common case):
    rendered straight from the provider list, without AReq objects."""

    __slots__ = ("providers", "resources", "suffix")

    def __init__(self, providers: list[Provider], resources: dict[str, int], suffix: str):
        self.providers = providers
        self.resources = resources
        self.suffix = suffix

    def __len__(self) -> int:
        return len(self.providers)


def _multi_roots(snap: Snapshot, p: Provider, tree_root: int | None,
                 anchors: set[int] | None, in_aggs: set[int] | None,
                 bad: set[int]) -> list[int]:
    """The trees (root ids) whose unsuffixed group ``p`` may serve: its own,
    and for a sharing provider the trees sharing an aggregate with it."""
    roots = [p.root_id]
    if tree_root is None and "MISC_SHARES_VIA_AGGREGATE" in p.traits:
        roots += [a for a in snap.anchors(p) if a != p.root_id]
    # member_of is about the provider itself (or its own tree's root), also
    # for a sharing provider serving another tree (bug 1792503)
    if in_aggs is not None and p.id not in in_aggs and p.root_id not in in_aggs:
        return []
    if bad and (p.id in bad or p.root_id in bad):
        return []
    return [root for root in roots if anchors is None or root in anchors]


def _providers_per_class(snap: Snapshot, group: RequestGroup, anchors: set[int] | None,
                         tree_root: int | None):
    """[(class, amount, {root_id: [providers that can give the amount]})] and
    the roots every class can be served in (None: no candidate at all)."""
    in_aggs, bad = _agg_sets(snap, group)
    if in_aggs is not None and not in_aggs:
        return [], None
    per_rc: list[tuple[str, int, dict[int, list[Provider]]]] = []
    common: set[int] | None = None
    for rc, amount in group.resources.items():
        by_root: dict[int, list[Provider]] = {}
        for p in snap.by_rc.get(rc, ()):
            if tree_root is not None and p.root_id != tree_root:
                continue
            if not p.can_fit(rc, amount):
                continue
            for root in _multi_roots(snap, p, tree_root, anchors, in_aggs, bad):
                by_root.setdefault(root, []).append(p)
        common = set(by_root) if common is None else common & set(by_root)
        if not common:
            return [], None
        per_rc.append((rc, amount, by_root))
    return per_rc, common


def _combo_traits_ok(combo, required, forbidden) -> bool:
    """The union of the providers' traits has every required one, and none
    of them has a forbidden one."""
    traits: set[str] = set()
    for p in combo:
        if forbidden and not forbidden.isdisjoint(p.traits):
            return False
        traits |= p.traits
    return not any(any_of.isdisjoint(traits) for any_of in required)


def _multi_provider(snap: Snapshot, group: RequestGroup, anchors: set[int] | None,
                    tree_root: int | None) -> list[AReq]:
    """The unsuffixed group spread over a tree and its sharing providers."""
    per_rc, common = _providers_per_class(snap, group, anchors, tree_root)
    if not common:
        return []
    out: list[AReq] = []
    required, forbidden = group.required, group.forbidden
    for root in sorted(common):
        lists = [by_root[root] for _rc, _amount, by_root in per_rc]
        for combo in itertools.product(*lists):
            if (required or forbidden) and not _combo_traits_ok(combo, required, forbidden):
                continue
            amounts = {}
            for (rc, amount, _), p in zip(per_rc, combo, strict=True):
                amounts[(p.id, rc)] = amount
            ids = tuple(sorted({p.id for p in combo}))
            out.append(AReq(root, amounts, {group.suffix: ids}, False))
    return out


def _ancestors(snap: Snapshot, pid: int) -> set[int]:
    out = set()
    cur = snap.by_id.get(pid)
    while cur is not None:
        out.add(cur.id)
        cur = snap.by_id.get(cur.parent_id) if cur.parent_id is not None else None
    return out


def _same_subtree_ok(snap: Snapshot, combo, same_subtrees) -> bool:
    for suffixes in same_subtrees:
        ids: set[int] = set()
        for areq in combo:
            for suffix in suffixes:
                ids.update(areq.mappings.get(suffix, ()))
        if len(ids) <= 1:
            continue
        common = set.intersection(*(_ancestors(snap, i) for i in ids))
        if not common & ids:
            return False
    return True


def _root_anchors(snap: Snapshot, rw: RequestWide) -> set[int] | None:
    """The roots ``root_required`` allows (None: no such parameter)."""
    if not (rw.root_required or rw.root_forbidden):
        return None
    return {p.id for p in snap.by_id.values() if p.parent_id is None
            and rw.root_required <= p.traits and rw.root_forbidden.isdisjoint(p.traits)}


def _group_candidates(snap: Snapshot, group: RequestGroup,
                      anchors: set[int] | None) -> list[AReq]:
    tree_root = None
    if group.in_tree:
        tree = snap.by_uuid.get(group.in_tree)
        if tree is None:
            return []
        tree_root = tree.root_id
    multi = not group.use_same_provider and (
        snap.has_trees or any(rc_p.inv.keys() & group.resources.keys()
                              for rc_p in snap.sharing))
    if multi and group.resources:
        return _multi_provider(snap, group, anchors, tree_root)
    return _single_provider(snap, group, anchors, tree_root)


def _not_nested(snap: Snapshot, results: list[AReq], rw: RequestWide):
    """Before 1.29: only candidates with one provider per tree; summaries
    of the providers used."""
    kept = []
    for areq in results:
        pids = areq.provider_ids()
        if len(pids) == len({snap.by_id[i].root_id for i in pids}):
            kept.append(areq)
    kept = _apply_limit(kept, rw)
    used: set[int] = set()
    for areq in kept:
        used |= areq.provider_ids()
    return kept, [snap.by_id[i] for i in sorted(used)]


def find(snap: Snapshot, groups: dict[str, RequestGroup], rw: RequestWide,
         nested_aware: bool):
    """Return (allocation requests, provider summaries)."""
    anchors = _root_anchors(snap, rw)
    if anchors is not None and not anchors:
        return [], []
    if len(groups) == 1:
        simple = _find_simple(snap, next(iter(groups.values())), rw, anchors, nested_aware)
        if simple is not None:
            return simple
    per_group: dict[str, list[AReq]] = {}
    for suffix, group in groups.items():
        areqs = _group_candidates(snap, group, anchors)
        if not areqs:
            return [], []
        per_group[suffix] = areqs
    if len(per_group) == 1:
        results = _dedupe(snap, next(iter(per_group.values())))
    else:
        results = _merge(snap, per_group, rw)
    if not nested_aware and snap.has_trees:
        return _not_nested(snap, results, rw)
    results = _apply_limit(results, rw)
    roots: set[int] = set()
    for areq in results:
        for pid, _rc in areq.amounts:
            roots.add(snap.by_id[pid].root_id)
        for ids in areq.mappings.values():
            for pid in ids:
                roots.add(snap.by_id[pid].root_id)
    summaries = [p for root in sorted(roots) for p in snap.tree_members[root]]
    return results, summaries


def _find_simple(snap: Snapshot, group: RequestGroup, rw: RequestWide,
                 anchors: set[int] | None, nested_aware: bool):
    """One group whose candidates are single providers: no trees to spread
    over (or a granular group), and no sharing provider whose extra anchors
    could matter."""
    if not group.resources:
        return None
    if not group.use_same_provider and (snap.has_trees or any(
            sp.inv.keys() & group.resources.keys() for sp in snap.sharing)):
        return None
    if anchors is not None and snap.sharing:
        return None
    tree_root = None
    if group.in_tree:
        tree = snap.by_uuid.get(group.in_tree)
        if tree is None:
            return [], []
        tree_root = tree.root_id
    providers = None
    if rw.randomize and rw.limit is not None:
        providers = _sampled(snap, group, tree_root, anchors, rw.limit)
    if providers is None:
        providers = _matching_providers(snap, group, tree_root)
        if anchors is not None:
            providers = [p for p in providers if p.root_id in anchors]
        providers = _apply_limit(providers, rw)
    if not snap.has_trees or (not nested_aware):
        summaries = providers
    else:
        roots = sorted({p.root_id for p in providers})
        summaries = [m for root in roots for m in snap.tree_members[root]]
    return Simple(providers, group.resources, group.suffix), summaries


def _dedupe(snap: Snapshot, areqs: list[AReq]) -> list[AReq]:
    """Drop repeats (a sharing provider appears once per anchor tree)."""
    if not snap.sharing:
        return areqs
    seen = set()
    out = []
    for areq in areqs:
        key = areq.key()
        if key in seen:
            continue
        seen.add(key)
        out.append(areq)
    return out


def _isolated(combo, granular: list[str]) -> bool:
    """group_policy=isolate: every granular group on its own provider."""
    used = set()
    for areq in combo:
        if areq.same_provider:
            used.update(next(iter(areq.mappings.values())))
    return len(used) == len(granular)


def _combine(snap: Snapshot, anchor: int, combo) -> AReq | None:
    """One candidate from one candidate of each group, or None when the
    summed amounts no longer fit a provider."""
    amounts: dict = {}
    mappings: dict = {}
    for areq in combo:
        for key, amount in areq.amounts.items():
            amounts[key] = amounts.get(key, 0) + amount
        for suffix, ids in areq.mappings.items():
            mappings[suffix] = tuple(sorted(set(mappings.get(suffix, ())) | set(ids)))
    for (pid, rc), amount in amounts.items():
        p = snap.by_id[pid]
        inv = p.inv[rc]
        if p.used.get(rc, 0) + amount > inv.capacity or amount > inv.max_unit:
            return None
    return AReq(anchor, amounts, mappings, False)


def _merge(snap: Snapshot, per_group: dict[str, list[AReq]], rw: RequestWide) -> list[AReq]:
    suffixes = list(per_group)
    by_anchor: dict[int, dict[str, list[AReq]]] = {}
    for suffix, areqs in per_group.items():
        for areq in areqs:
            by_anchor.setdefault(areq.anchor, {}).setdefault(suffix, []).append(areq)
    granular = [s for s in suffixes if s]
    isolate = rw.group_policy == "isolate"
    out: list[AReq] = []
    seen = set()
    for anchor in sorted(by_anchor):
        lists = by_anchor[anchor]
        if len(lists) != len(suffixes):
            continue
        for combo in itertools.product(*(lists[s] for s in suffixes)):
            if isolate and not _isolated(combo, granular):
                continue
            if rw.same_subtrees and not _same_subtree_ok(snap, combo, rw.same_subtrees):
                continue
            merged = _combine(snap, anchor, combo)
            if merged is None:
                continue
            key = merged.key()
            if key in seen:
                continue
            seen.add(key)
            out.append(merged)
    return out
