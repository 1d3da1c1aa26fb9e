"""In-memory provider summaries for the read paths.

A ``Snapshot`` holds every provider with its inventory, usage, traits and
aggregates, plus lazily rendered JSON fragments.  It is tagged with the
database's change counter (``placement_state.counter``, bumped by every write
transaction).  Each read request costs one indexed single-row SELECT to
compare counters; only when they differ is the snapshot rebuilt.

The snapshot serves ``GET /allocation_candidates`` and the filtered
``GET /resource_providers`` listing.  It never decides a claim: ``PUT/POST
/allocations`` check capacity against the database under row locks.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from typing import NamedTuple

import sqlalchemy as sa

from kova.placement.db import tables as t
from kova.placement.db.engine import Database

SHARING_TRAIT = "MISC_SHARES_VIA_AGGREGATE"


class Inv(NamedTuple):
    total: int
    reserved: int
    min_unit: int
    max_unit: int
    step_size: int
    allocation_ratio: float
    capacity: int


class Provider:
    __slots__ = ("id", "uuid", "name", "generation", "parent_id", "root_id",
                 "parent_uuid", "root_uuid", "inv", "used", "traits", "aggs",
                 "updated_at", "frags")

    def __init__(self, id, uuid, name, generation, parent_id, root_id, updated_at):
        self.id = id
        self.uuid = uuid
        self.name = name
        self.generation = generation
        self.parent_id = parent_id
        self.root_id = root_id
        self.parent_uuid = None
        self.root_uuid = uuid
        self.inv: dict[str, Inv] = {}
        self.used: dict[str, int] = {}
        self.traits: frozenset[str] = frozenset()
        self.aggs: frozenset[str] = frozenset()
        self.updated_at = updated_at
        self.frags: dict = {}

    def free(self, rc: str) -> int:
        inv = self.inv.get(rc)
        if inv is None:
            return 0
        return inv.capacity - self.used.get(rc, 0)

    def can_fit(self, rc: str, amount: int) -> bool:
        inv = self.inv.get(rc)
        if inv is None:
            return False
        return (inv.min_unit <= amount <= inv.max_unit
                and amount % inv.step_size == 0
                and self.used.get(rc, 0) + amount <= inv.capacity)


class Snapshot:
    def __init__(self, counter: int) -> None:
        self.counter = counter
        self.by_id: dict[int, Provider] = {}
        self.by_uuid: dict[str, Provider] = {}
        self.rc_names: set[str] = set()
        self.trait_names: set[str] = set()
        self.agg_members: dict[str, set[int]] = defaultdict(set)
        self.tree_members: dict[int, list[Provider]] = defaultdict(list)
        self.sharing: list[Provider] = []
        self.has_trees = False
        self.by_rc: dict[str, list[Provider]] = defaultdict(list)
        self.names_by_id: tuple = ({}, {})
        self._anchor_cache: dict[int, list[int]] = {}
        self._trait_rank = None

    def trait_rank(self):
        """Sort key of trait names: their ids (creation order)."""
        if self._trait_rank is None:
            ids = {name: tid for tid, name in self.names_by_id[1].items()}
            self._trait_rank = ids.get
        return self._trait_rank

    def anchors(self, sharing: Provider) -> list[int]:
        """Root ids of the trees sharing an aggregate with ``sharing``."""
        cached = self._anchor_cache.get(sharing.id)
        if cached is not None:
            return cached
        roots = set()
        for agg in sharing.aggs:
            for member in self.agg_members.get(agg, ()):
                roots.add(self.by_id[member].root_id)
        result = sorted(roots)
        self._anchor_cache[sharing.id] = result
        return result

    def providers_in_aggs(self, member_of: list[set[str]]) -> set[int]:
        """Providers in (any of each set) for every set of ``member_of``."""
        result: set[int] | None = None
        for options in member_of:
            ids: set[int] = set()
            for agg in options:
                ids |= self.agg_members.get(agg, set())
            result = ids if result is None else result & ids
            if not result:
                return set()
        return result or set()


def _chunks(ids: list[int], size: int = 500):
    for i in range(0, len(ids), size):
        yield ids[i:i + size]


def _fetch_providers(conn, ids: list[int] | None, rc_names: dict[int, str],
                     trait_names: dict[int, str]) -> dict[int, Provider]:
    """Provider rows with inventory, usage, traits and aggregates (all, or ``ids``)."""
    rp = t.resource_providers
    i = t.inventories
    a = t.allocations
    pt = t.provider_traits
    pa = t.provider_aggregates
    out: dict[int, Provider] = {}
    groups = [None] if ids is None else list(_chunks(ids))
    for chunk in groups:
        def only(col, _chunk=chunk):
            if _chunk is None:
                return lambda stmt: stmt
            return lambda stmt: stmt.where(col.in_(_chunk))
        for r in conn.execute(only(rp.c.id)(
                sa.select(rp.c.id, rp.c.uuid, rp.c.name, rp.c.generation,
                          rp.c.parent_provider_id, rp.c.root_provider_id, rp.c.updated_at))):
            out[r[0]] = Provider(r[0], r[1], r[2], r[3], r[4], r[5] or r[0], r[6])
        for r in conn.execute(only(i.c.resource_provider_id)(
                sa.select(i.c.resource_provider_id, i.c.resource_class_id, i.c.total,
                          i.c.reserved, i.c.min_unit, i.c.max_unit, i.c.step_size,
                          i.c.allocation_ratio)
                .order_by(i.c.resource_provider_id, i.c.resource_class_id))):
            p = out.get(r[0])
            if p is not None:
                ratio = float(r[7])
                p.inv[rc_names[r[1]]] = Inv(r[2], r[3], r[4], r[5], r[6], ratio,
                                            int((r[2] - r[3]) * ratio))
        for r in conn.execute(only(a.c.resource_provider_id)(
                sa.select(a.c.resource_provider_id, a.c.resource_class_id,
                          sa.func.sum(a.c.used))
                .group_by(a.c.resource_provider_id, a.c.resource_class_id))):
            p = out.get(r[0])
            if p is not None:
                p.used[rc_names[r[1]]] = int(r[2])
        ptraits: dict[int, list[str]] = defaultdict(list)
        for r in conn.execute(only(pt.c.resource_provider_id)(
                sa.select(pt.c.resource_provider_id, pt.c.trait_id))):
            ptraits[r[0]].append(trait_names[r[1]])
        for pid, names in ptraits.items():
            if pid in out:
                out[pid].traits = frozenset(names)
        paggs: dict[int, list[str]] = defaultdict(list)
        for r in conn.execute(only(pa.c.resource_provider_id)(
                sa.select(pa.c.resource_provider_id, t.aggregates.c.uuid)
                .select_from(pa.join(t.aggregates, t.aggregates.c.id == pa.c.aggregate_id)))):
            paggs[r[0]].append(r[1])
        for pid, uuids in paggs.items():
            if pid in out:
                out[pid].aggs = frozenset(uuids)
    return out


def _build(counter: int, providers: dict[int, Provider], rc_names: set[str],
           trait_names: set[str], names_by_id: tuple) -> Snapshot:
    """Derive every index of a snapshot from its providers."""
    snap = Snapshot(counter)
    snap.rc_names = rc_names
    snap.trait_names = trait_names
    snap.names_by_id = names_by_id
    by_id = snap.by_id
    for pid in sorted(providers):
        p = providers[pid]
        by_id[pid] = p
        snap.by_uuid[p.uuid] = p
        if p.parent_id is not None:
            snap.has_trees = True
    for p in by_id.values():
        parent = by_id.get(p.parent_id) if p.parent_id is not None else None
        p.parent_uuid = parent.uuid if parent is not None else None
        root = by_id.get(p.root_id)
        p.root_uuid = root.uuid if root is not None else p.uuid
        snap.tree_members[p.root_id].append(p)
        for rc in p.inv:
            snap.by_rc[rc].append(p)
        if SHARING_TRAIT in p.traits:
            snap.sharing.append(p)
        for agg in p.aggs:
            snap.agg_members[agg].add(p.id)
    return snap


def load_snapshot(conn, counter: int) -> Snapshot:
    rc_by_id = {r[0]: r[1] for r in conn.execute(
        sa.select(t.resource_classes.c.id, t.resource_classes.c.name))}
    trait_by_id = {r[0]: r[1] for r in conn.execute(
        sa.select(t.traits.c.id, t.traits.c.name))}
    providers = _fetch_providers(conn, None, rc_by_id, trait_by_id)
    return _build(counter, providers, set(rc_by_id.values()), set(trait_by_id.values()),
                  (rc_by_id, trait_by_id))


def refresh_snapshot(conn, old: Snapshot, counter: int, changed: set[int]) -> Snapshot:
    """A new snapshot reusing ``old``'s unchanged providers (and their cached
    JSON fragments); only the ``changed`` providers are read again."""
    rc_by_id, trait_by_id = old.names_by_id
    fresh = _fetch_providers(conn, sorted(changed), rc_by_id, trait_by_id)
    return patch_snapshot(old, counter, changed, fresh)


def _patch_indexes(snap: Snapshot, old: Snapshot, changed: set[int],
                   removed: list[Provider], new: list[Provider]) -> None:
    """Rebuild the index entries (trees, classes, aggregates) that the
    removed and the new providers touch; the others are shared with ``old``."""

    def _by_id(p):
        return p.id

    snap.tree_members = defaultdict(list, old.tree_members)
    for root in {p.root_id for p in removed} | {p.root_id for p in new}:
        members = [m for m in old.tree_members.get(root, ()) if m.id not in changed]
        members += [p for p in new if p.root_id == root]
        members.sort(key=_by_id)
        if members:
            snap.tree_members[root] = members
        else:
            snap.tree_members.pop(root, None)
    snap.by_rc = defaultdict(list, old.by_rc)
    for rc in {rc for p in removed for rc in p.inv} | {rc for p in new for rc in p.inv}:
        holders = [m for m in old.by_rc.get(rc, ()) if m.id not in changed]
        holders += [p for p in new if rc in p.inv]
        holders.sort(key=_by_id)
        snap.by_rc[rc] = holders
    snap.agg_members = defaultdict(set, old.agg_members)
    for agg in {a for p in removed for a in p.aggs} | {a for p in new for a in p.aggs}:
        members_ids = set(old.agg_members.get(agg, ())) - changed
        members_ids |= {p.id for p in new if agg in p.aggs}
        snap.agg_members[agg] = members_ids


def patch_snapshot(old: Snapshot, counter: int, changed: set[int],
                   fresh: dict[int, Provider]) -> Snapshot:
    """``old`` with the ``changed`` providers replaced by ``fresh`` (a changed
    id missing from ``fresh`` was deleted).  Only the index entries those
    providers touch are rebuilt; tree structure changes (re-parenting) never
    come here (they invalidate everything)."""
    snap = Snapshot(counter)
    snap.rc_names, snap.trait_names = old.rc_names, old.trait_names
    snap.names_by_id = old.names_by_id
    removed = [old.by_id[pid] for pid in changed if pid in old.by_id]
    by_id = dict(old.by_id)
    for p in removed:
        if p.id not in fresh:
            del by_id[p.id]  # deleted; replaced ones keep their position
    added_new_ids = False
    for pid, p in fresh.items():
        if pid not in old.by_id:
            added_new_ids = True
        by_id[pid] = p
    if added_new_ids:
        by_id = dict(sorted(by_id.items()))
    snap.by_id = by_id
    by_uuid = dict(old.by_uuid)
    for p in removed:
        by_uuid.pop(p.uuid, None)
    for p in fresh.values():
        by_uuid[p.uuid] = p
        parent = by_id.get(p.parent_id) if p.parent_id is not None else None
        p.parent_uuid = parent.uuid if parent is not None else None
        root = by_id.get(p.root_id)
        p.root_uuid = root.uuid if root is not None else p.uuid
    snap.by_uuid = by_uuid
    new = list(fresh.values())

    def _by_id(p):
        return p.id

    _patch_indexes(snap, old, changed, removed, new)
    snap.sharing = sorted([p for p in old.sharing if p.id not in changed]
                          + [p for p in new if SHARING_TRAIT in p.traits], key=_by_id)
    if old.has_trees or any(p.parent_id is not None for p in new):
        snap.has_trees = any(p.parent_id is not None for p in by_id.values())
    return snap


class SnapshotCache:
    """The current snapshot for one process, rebuilt when the counter moves."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._snap: Snapshot | None = None
        self._lock = threading.Lock()
        self.reloads = 0
        self.refreshes = 0

    def get(self) -> Snapshot:
        with self.db.engine.connect() as conn:
            counter = conn.execute(
                sa.select(t.state.c.counter).where(t.state.c.id == 1)).scalar_one()
            conn.rollback()
        snap = self._snap
        if snap is not None and snap.counter == counter:
            return snap
        with self._lock:
            snap = self._snap
            if snap is not None and snap.counter >= counter:
                return snap
            with self.db.read() as conn:
                # Read the counter again inside the loading transaction: the
                # data loaded is at least as new as the tag.
                counter = conn.execute(
                    sa.select(t.state.c.counter).where(t.state.c.id == 1)).scalar_one()
                new = None
                if snap is not None:
                    new = self._incremental(conn, snap, counter)
                if new is None:
                    new = load_snapshot(conn, counter)
                    self.reloads += 1
                else:
                    self.refreshes += 1
            self._snap = new
            return new

    def _incremental(self, conn, snap: Snapshot, counter: int) -> Snapshot | None:
        changed = set(conn.execute(
            sa.select(t.changes.c.provider_id).where(t.changes.c.counter > snap.counter)
        ).scalars())
        # The horizon is read after the changes: a prune that committed before
        # the changes were read (and may have removed some) shows here.
        horizon = conn.execute(
            sa.select(t.state.c.counter).where(t.state.c.id == 2)).scalar_one_or_none()
        if horizon is None or snap.counter < horizon:
            return None
        if 0 in changed or len(changed) > max(200, len(snap.by_id) // 3):
            return None
        return refresh_snapshot(conn, snap, counter, changed)

    def invalidate(self) -> None:
        self._snap = None
