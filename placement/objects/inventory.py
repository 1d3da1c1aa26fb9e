"""Inventories of a provider, one record per resource class."""

from __future__ import annotations

import math

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from kova.placement import errors
from kova.placement.db import tables as t
from kova.placement.objects.common import MAX_INT, utcnow
from kova.placement.objects.resource_class import rc_ids, rc_names_by_id
from kova.placement.objects.resource_provider import ProviderRow, bump_generation, check_generation

inv = t.inventories

INVENTORY_FIELDS = ("total", "reserved", "min_unit", "max_unit", "step_size",
                    "allocation_ratio")
INVENTORY_DEFAULTS = {"reserved": 0, "min_unit": 1, "max_unit": MAX_INT,
                      "step_size": 1, "allocation_ratio": 1.0}


def record(data: dict) -> dict:
    """A full inventory record from a request's (partial) one."""
    rec = dict(INVENTORY_DEFAULTS)
    rec.update({k: v for k, v in data.items() if k in INVENTORY_FIELDS})
    rec["allocation_ratio"] = float(rec["allocation_ratio"])
    return rec


def capacity(rec: dict) -> int:
    value = (rec["total"] - rec["reserved"]) * rec["allocation_ratio"]
    if not math.isfinite(value):  # e.g. a huge negative ratio: -inf
        return -1 if value < 0 else MAX_INT
    return int(value)


def get_inventories(conn: Connection, provider: ProviderRow) -> dict[str, dict]:
    rows = conn.execute(
        sa.select(t.resource_classes.c.name, *[inv.c[f] for f in INVENTORY_FIELDS],
                  inv.c.updated_at)
        .select_from(inv.join(t.resource_classes,
                              t.resource_classes.c.id == inv.c.resource_class_id))
        .where(inv.c.resource_provider_id == provider.id)
        .order_by(t.resource_classes.c.id))
    out = {}
    for r in rows:
        rec = {f: getattr(r, f) for f in INVENTORY_FIELDS}
        rec["allocation_ratio"] = float(rec["allocation_ratio"])
        out[r.name] = rec
    return out


def validate_capacity(uuid: str, records: dict[str, dict], reserved_can_be_total: bool,
                      verb: str) -> None:
    for rc, rec in records.items():
        cap = capacity(rec)
        bad = cap < 0 if reserved_can_be_total else cap <= 0
        if bad:
            msg = ("Invalid inventory for '%s' on resource provider '%s'. The reserved "
                   "value is greater than total." if reserved_can_be_total else
                   "Invalid inventory for '%s' on resource provider '%s'. The reserved "
                   "value is greater than or equal to total.") % (rc, uuid)
            raise errors.BadRequest(
                f"Unable to {verb} inventory for resource provider {uuid}: {msg}")


def used_by_rc(conn: Connection, provider_id: int) -> dict[int, int]:
    a = t.allocations
    rows = conn.execute(
        sa.select(a.c.resource_class_id, sa.func.sum(a.c.used))
        .where(a.c.resource_provider_id == provider_id)
        .group_by(a.c.resource_class_id))
    return {r[0]: int(r[1]) for r in rows}


def _check_removed_unused(conn: Connection, provider: ProviderRow, removed: list[int],
                          in_use_code: str) -> None:
    used = used_by_rc(conn, provider.id) if removed else {}
    in_use = [rc_id for rc_id in removed if used.get(rc_id)]
    if in_use:
        names = rc_names_by_id(conn)
        raise errors.Conflict(
            "update conflict: Inventory for '%s' on resource provider '%s' in use."
            % (", ".join(names[i] for i in sorted(in_use)), provider.uuid),
            code=in_use_code)


def set_inventories(conn: Connection, provider: ProviderRow, records: dict[str, dict],
                    generation: int | None, in_use_code: str = errors.INVENTORY_INUSE,
                    bump: bool = True) -> None:
    """Replace all of a locked provider's inventory with ``records``."""
    if generation is not None:
        check_generation(provider, generation)
    ids = rc_ids(conn, records)
    unknown = sorted(set(records) - set(ids))
    if unknown:
        raise errors.BadRequest(
            f"Unknown resource class in inventory for resource provider "
            f"{provider.uuid}: No such resource class {unknown[0]}.")
    existing = {r.resource_class_id: r for r in conn.execute(
        sa.select(inv).where(inv.c.resource_provider_id == provider.id))}
    new_ids = {ids[name] for name in records}
    removed = [rc_id for rc_id in existing if rc_id not in new_ids]
    _check_removed_unused(conn, provider, removed, in_use_code)
    now = utcnow()
    if removed:
        conn.execute(sa.delete(inv).where(inv.c.resource_provider_id == provider.id,
                                          inv.c.resource_class_id.in_(removed)))
    inserts = []
    for name, rec in records.items():
        rc_id = ids[name]
        values = {f: rec[f] for f in INVENTORY_FIELDS}
        if rc_id in existing:
            old = existing[rc_id]
            if any(getattr(old, f) != values[f] for f in INVENTORY_FIELDS):
                conn.execute(sa.update(inv).where(inv.c.id == old.id)
                             .values(updated_at=now, **values))
        else:
            inserts.append(dict(resource_provider_id=provider.id, resource_class_id=rc_id,
                                created_at=now, updated_at=now, **values))
    if inserts:
        conn.execute(sa.insert(inv), inserts)
    if bump:
        bump_generation(conn, provider)


def add_inventory(conn: Connection, provider: ProviderRow, name: str, rec: dict,
                  bump: bool = True) -> None:
    ids = rc_ids(conn, [name])
    if not ids:
        raise errors.BadRequest(
            f"Unable to create inventory for resource provider {provider.uuid}: "
            f"No such resource class {name}.")
    rc_id = ids[name]
    if conn.execute(sa.select(inv.c.id).where(inv.c.resource_provider_id == provider.id,
                                              inv.c.resource_class_id == rc_id)).first():
        raise errors.Conflict(
            f"Update conflict: Inventory for {name} on resource provider "
            f"{provider.uuid} already exists.", code=errors.CONCURRENT_UPDATE)
    now = utcnow()
    conn.execute(sa.insert(inv).values(
        resource_provider_id=provider.id, resource_class_id=rc_id,
        created_at=now, updated_at=now, **{f: rec[f] for f in INVENTORY_FIELDS}))
    if bump:
        bump_generation(conn, provider)


def _inventory_row(conn: Connection, provider: ProviderRow, name: str):
    """The resource class ids for ``name`` and the provider's inventory row of
    that class (None when the class or the inventory does not exist)."""
    ids = rc_ids(conn, [name])
    row = None
    if ids:
        row = conn.execute(sa.select(inv.c.id).where(
            inv.c.resource_provider_id == provider.id,
            inv.c.resource_class_id == ids[name])).first()
    return ids, row


def update_inventory(conn: Connection, provider: ProviderRow, name: str, rec: dict,
                     generation: int | None, bump: bool = True) -> None:
    if generation is not None:
        check_generation(provider, generation)
    _ids, row = _inventory_row(conn, provider, name)
    if row is None:
        raise errors.BadRequest(
            f"No inventory record with resource class for resource provider "
            f"{provider.uuid}: No inventory of class {name} found.")
    conn.execute(sa.update(inv).where(inv.c.id == row.id).values(
        updated_at=utcnow(), **{f: rec[f] for f in INVENTORY_FIELDS}))
    if bump:
        bump_generation(conn, provider)


def delete_inventory(conn: Connection, provider: ProviderRow, name: str,
                     bump: bool = True) -> None:
    ids, row = _inventory_row(conn, provider, name)
    if row is None:
        raise errors.NotFound(
            f"No inventory of class {name} found for delete: No inventory of "
            f"class {name} found for delete.")
    if used_by_rc(conn, provider.id).get(ids[name]):
        raise errors.Conflict(
            f"Unable to delete inventory of class {name}: Inventory for '{name}' "
            f"on resource provider '{provider.uuid}' in use.",
            code=errors.CONCURRENT_UPDATE)
    conn.execute(sa.delete(inv).where(inv.c.id == row.id))
    if bump:
        bump_generation(conn, provider)
