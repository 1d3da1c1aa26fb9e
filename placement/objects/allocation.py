"""Allocations: reading them per consumer or provider, and replacing a set
of consumers' allocations atomically (capacity checked under row locks)."""

from __future__ import annotations

from collections import defaultdict

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from kova.placement import errors
from kova.placement.db import tables as t
from kova.placement.db.engine import touch
from kova.placement.objects.common import utcnow
from kova.placement.objects.consumer import ConsumerWrite, lock_consumers, write_consumers
from kova.placement.objects.resource_class import rc_ids
from kova.placement.objects.resource_provider import ProviderRow

rp = t.resource_providers
inv = t.inventories
alloc = t.allocations
rcs = t.resource_classes


def consumer_allocations(conn: Connection, consumer_uuid: str):
    """(consumer row or None, {rp_uuid: {"generation", "resources"}}, last change)."""
    c = t.consumers
    consumer = conn.execute(sa.select(c).where(c.c.uuid == consumer_uuid)).first()
    rows = conn.execute(
        sa.select(rp.c.uuid, rp.c.generation, rcs.c.name, alloc.c.used, alloc.c.updated_at)
        .select_from(alloc.join(rp, rp.c.id == alloc.c.resource_provider_id)
                     .join(rcs, rcs.c.id == alloc.c.resource_class_id))
        .where(alloc.c.consumer_id == consumer_uuid)
        .order_by(rp.c.id, rcs.c.id))
    out: dict = {}
    last = None
    for r in rows:
        entry = out.setdefault(r.uuid, {"generation": r.generation, "resources": {}})
        entry["resources"][r.name] = r.used
        if r.updated_at and (last is None or r.updated_at > last):
            last = r.updated_at
    return consumer, out, last


def provider_allocations(conn: Connection, provider: ProviderRow):
    c = t.consumers
    rows = conn.execute(
        sa.select(alloc.c.consumer_id, rcs.c.name, alloc.c.used, c.c.generation,
                  alloc.c.updated_at)
        .select_from(alloc.join(rcs, rcs.c.id == alloc.c.resource_class_id)
                     .outerjoin(c, c.c.uuid == alloc.c.consumer_id))
        .where(alloc.c.resource_provider_id == provider.id)
        .order_by(alloc.c.consumer_id, rcs.c.id))
    out: dict = {}
    last = None
    for r in rows:
        entry = out.setdefault(r.consumer_id,
                               {"resources": {}, "consumer_generation": r.generation})
        entry["resources"][r.name] = r.used
        if r.updated_at and (last is None or r.updated_at > last):
            last = r.updated_at
    return out, last


def _lock_providers(conn: Connection, writes: list[ConsumerWrite]):
    """Row-lock every provider the writes touch (old and new allocations),
    in id order so concurrent writers never deadlock.  ({uuid: id} of the
    new allocations' providers, which must exist; the locked ids.)"""
    new_uuids = sorted({u for w in writes for u in w.allocations})
    providers: dict[str, int] = {}
    if new_uuids:
        for r in conn.execute(sa.select(rp.c.id, rp.c.uuid).where(rp.c.uuid.in_(new_uuids))):
            providers[r.uuid] = r.id
    for u in new_uuids:
        if u not in providers:
            raise errors.BadRequest(
                f"Allocation for resource provider '{u}' that does not exist.")
    old = conn.execute(sa.select(alloc.c.consumer_id, alloc.c.resource_provider_id).where(
        alloc.c.consumer_id.in_([w.uuid for w in writes]))).all()
    old_rp_ids = {r.resource_provider_id for r in old}
    lock_ids = sorted(set(providers.values()) | old_rp_ids)
    if lock_ids:
        conn.execute(sa.select(rp.c.id).where(rp.c.id.in_(lock_ids))
                     .order_by(rp.c.id).with_for_update()).all()
    # OpenStack bumps the generation of the providers of the new allocations,
    # and of the old ones of a consumer whose allocations are emptied; not of
    # a provider that only loses a consumer's allocation to another provider.
    emptied = {w.uuid for w in writes if not w.allocations}
    bump_ids = set(providers.values()) | {r.resource_provider_id for r in old
                                          if r.consumer_id in emptied}
    return providers, lock_ids, sorted(bump_ids)


def _used(conn: Connection, provider_ids) -> dict[tuple[int, int], int]:
    return {(r[0], r[1]): int(r[2]) for r in conn.execute(
        sa.select(alloc.c.resource_provider_id, alloc.c.resource_class_id,
                  sa.func.sum(alloc.c.used))
        .where(alloc.c.resource_provider_id.in_(provider_ids))
        .group_by(alloc.c.resource_provider_id, alloc.c.resource_class_id))}


def _check_constraints(writes: list[ConsumerWrite], providers: dict, ids: dict,
                       inventory: dict) -> None:
    for w in writes:
        for u, res in w.allocations.items():
            for rc, amount in res.items():
                rec = inventory.get((providers[u], ids[rc]))
                if rec is None:
                    raise errors.Conflict(
                        f"Unable to allocate inventory: Inventory for '{rc}' on "
                        f"resource provider '{u}' invalid.")
                if (amount < rec.min_unit or amount > rec.max_unit
                        or amount % rec.step_size):
                    raise errors.Conflict(
                        f"Unable to allocate inventory: Unable to create allocation "
                        f"for '{rc}' on resource provider '{u}'. The requested "
                        "amount would violate inventory constraints.")


def _inventory_and_usage(conn: Connection, provider_ids: set[int]):
    """The providers' inventory rows by (provider id, class id), and usage."""
    inventory = {(r.resource_provider_id, r.resource_class_id): r for r in conn.execute(
        sa.select(inv).where(inv.c.resource_provider_id.in_(provider_ids)))}
    return inventory, _used(conn, provider_ids)


def replace_allocations(conn: Connection, writes: list[ConsumerWrite],
                        not_found_prefix: str = "Unable to allocate inventory") -> None:
    """Atomically replace the allocations of the given consumers.

    Order: lock consumers (generation check), lock every provider involved
    (old and new allocations, by id order so concurrent writers never
    deadlock), remove the old allocations, check the new ones against
    inventory and current usage read under the locks, insert, bump
    generations.
    """
    existing = lock_consumers(conn, writes)
    providers, lock_ids, bump_ids = _lock_providers(conn, writes)
    names = {rc for w in writes for res in w.allocations.values() for rc in res}
    ids = rc_ids(conn, names)
    missing = sorted(names - set(ids))
    if missing:
        raise errors.BadRequest(f"{not_found_prefix}: No such resource class {missing[0]}.")
    needed: dict[tuple[int, int], int] = defaultdict(int)
    for w in writes:
        for u, res in w.allocations.items():
            for rc, amount in res.items():
                needed[(providers[u], ids[rc])] += amount
    prev_used = _used(conn, {k[0] for k in needed}) if needed else {}
    conn.execute(sa.delete(alloc).where(alloc.c.consumer_id.in_([w.uuid for w in writes])))
    if needed:
        _check_fits(conn, writes, needed, prev_used, providers, ids)
    now = utcnow()
    rows = [
        {"resource_provider_id": providers[u], "consumer_id": w.uuid,
         "resource_class_id": ids[rc], "used": amount, "created_at": now, "updated_at": now}
        for w in writes for u, res in w.allocations.items() for rc, amount in res.items()
    ]
    if rows:
        conn.execute(sa.insert(alloc), rows)
    if bump_ids:
        conn.execute(sa.update(rp).where(rp.c.id.in_(bump_ids))
                     .values(generation=rp.c.generation + 1, updated_at=now))
    touch(conn, *lock_ids)
    write_consumers(conn, writes, existing, now)


def _check_fits(conn: Connection, writes: list[ConsumerWrite], needed: dict,
                prev_used: dict, providers: dict, ids: dict) -> None:
    """The new allocations against inventory constraints and capacity, read
    under the provider locks after the old allocations were removed.  Usage
    that does not grow passes even over capacity (e.g. after the
    inventory shrank)."""
    inventory, now_used = _inventory_and_usage(conn, {k[0] for k in needed})
    _check_constraints(writes, providers, ids, inventory)
    uuid_by_id = {v: k for k, v in providers.items()}
    name_by_id = {v: k for k, v in ids.items()}
    for key, amount in needed.items():
        rec = inventory[key]
        cap = int((rec.total - rec.reserved) * rec.allocation_ratio)
        total = now_used.get(key, 0) + amount
        if total > cap and total > prev_used.get(key, 0):
            raise errors.Conflict(
                "Unable to allocate inventory: Unable to create allocation for "
                f"'{name_by_id[key[1]]}' on resource provider "
                f"'{uuid_by_id[key[0]]}'. The requested amount would exceed "
                "the capacity.")


def delete_consumer_allocations(conn: Connection, consumer_uuid: str) -> None:
    rows = conn.execute(sa.select(alloc.c.resource_provider_id).where(
        alloc.c.consumer_id == consumer_uuid)).scalars().all()
    if not rows:
        raise errors.NotFound(f"No allocations for consumer '{consumer_uuid}'")
    lock_ids = sorted(set(rows))
    conn.execute(sa.select(rp.c.id).where(rp.c.id.in_(lock_ids)).order_by(rp.c.id)
                 .with_for_update()).all()
    # no provider generation changes (as in OpenStack Placement)
    conn.execute(sa.delete(alloc).where(alloc.c.consumer_id == consumer_uuid))
    touch(conn, *lock_ids)
    conn.execute(sa.delete(t.consumers).where(t.consumers.c.uuid == consumer_uuid))
