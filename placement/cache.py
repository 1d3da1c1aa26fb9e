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
        self._anchor_cache: dict[int, list[int]] = {}

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


def load_snapshot(conn, counter: int) -> Snapshot:
    snap = Snapshot(counter)
    rp = t.resource_providers
    by_id = snap.by_id
    for r in conn.execute(sa.select(rp.c.id, rp.c.uuid, rp.c.name, rp.c.generation,
                                    rp.c.parent_provider_id, rp.c.root_provider_id,
                                    rp.c.updated_at).order_by(rp.c.id)):
        p = Provider(r[0], r[1], r[2], r[3], r[4], r[5] or r[0], r[6])
        by_id[p.id] = p
        snap.by_uuid[p.uuid] = p
        if p.parent_id is not None:
            snap.has_trees = True
    for p in by_id.values():
        if p.parent_id is not None:
            p.parent_uuid = by_id[p.parent_id].uuid
        root = by_id.get(p.root_id)
        if root is not None:
            p.root_uuid = root.uuid
        snap.tree_members[p.root_id].append(p)
    rc_names = {}
    for r in conn.execute(sa.select(t.resource_classes.c.id, t.resource_classes.c.name)):
        rc_names[r[0]] = r[1]
    snap.rc_names = set(rc_names.values())
    i = t.inventories
    for r in conn.execute(sa.select(i.c.resource_provider_id, i.c.resource_class_id,
                                    i.c.total, i.c.reserved, i.c.min_unit, i.c.max_unit,
                                    i.c.step_size, i.c.allocation_ratio)
                          .order_by(i.c.resource_provider_id, i.c.resource_class_id)):
        p = by_id.get(r[0])
        if p is None:
            continue
        ratio = float(r[7])
        name = rc_names[r[1]]
        p.inv[name] = Inv(r[2], r[3], r[4], r[5], r[6], ratio, int((r[2] - r[3]) * ratio))
        snap.by_rc[name].append(p)
    a = t.allocations
    for r in conn.execute(sa.select(a.c.resource_provider_id, a.c.resource_class_id,
                                    sa.func.sum(a.c.used))
                          .group_by(a.c.resource_provider_id, a.c.resource_class_id)):
        p = by_id.get(r[0])
        if p is not None:
            p.used[rc_names[r[1]]] = int(r[2])
    trait_names = {}
    for r in conn.execute(sa.select(t.traits.c.id, t.traits.c.name)):
        trait_names[r[0]] = r[1]
    snap.trait_names = set(trait_names.values())
    ptraits: dict[int, list[str]] = defaultdict(list)
    pt = t.provider_traits
    for r in conn.execute(sa.select(pt.c.resource_provider_id, pt.c.trait_id)):
        ptraits[r[0]].append(trait_names[r[1]])
    for pid, names in ptraits.items():
        p = by_id.get(pid)
        if p is not None:
            p.traits = frozenset(names)
            if SHARING_TRAIT in p.traits:
                snap.sharing.append(p)
    snap.sharing.sort(key=lambda p: p.id)
    pa = t.provider_aggregates
    paggs: dict[int, list[str]] = defaultdict(list)
    for r in conn.execute(sa.select(pa.c.resource_provider_id, t.aggregates.c.uuid)
                          .select_from(pa.join(t.aggregates,
                                               t.aggregates.c.id == pa.c.aggregate_id))):
        paggs[r[0]].append(r[1])
        snap.agg_members[r[1]].add(r[0])
    for pid, uuids in paggs.items():
        p = by_id.get(pid)
        if p is not None:
            p.aggs = frozenset(uuids)
    return snap


class SnapshotCache:
    """The current snapshot for one process, rebuilt when the counter moves."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._snap: Snapshot | None = None
        self._lock = threading.Lock()
        self.reloads = 0

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
                snap = load_snapshot(conn, counter)
            self._snap = snap
            self.reloads += 1
            return snap

    def invalidate(self) -> None:
        self._snap = None
