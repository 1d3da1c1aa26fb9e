"""Placement's storage operations: every write is one short transaction.

Each function takes an open ``Connection`` (from ``Database.write()`` or
``Database.read()``) and raises ``kova.placement.errors`` exceptions with
the status and error code OpenStack Placement answers for the same failure.
Writers lock the provider rows they change (``FOR UPDATE``; SQLite already
serialises writers with ``BEGIN IMMEDIATE``) and check generations and
capacity against the database inside the transaction: nothing here trusts
the in-memory summaries of ``kova.placement.cache``.
"""

from __future__ import annotations

import datetime
import math
import uuid as uuidlib
from collections import defaultdict
from dataclasses import dataclass, field

import os_resource_classes
import os_traits
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from kova.placement import errors
from kova.placement.db import tables as t
from kova.placement.db.engine import touch, touch_all

STANDARD_RCS = frozenset(os_resource_classes.STANDARDS)
STANDARD_TRAITS = frozenset(os_traits.get_traits())
MAX_INT = 2147483647

# Consumers written before microversion 1.8 have no project or user.
INCOMPLETE_PROJECT = "00000000-0000-0000-0000-000000000000"
INCOMPLETE_USER = "00000000-0000-0000-0000-000000000000"

rp = t.resource_providers
inv = t.inventories
alloc = t.allocations


def utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)


# ---------------------------------------------------------------- providers
@dataclass
class ProviderRow:
    id: int
    uuid: str
    name: str
    generation: int
    parent_id: int | None
    root_id: int
    parent_uuid: str | None
    root_uuid: str
    updated_at: datetime.datetime | None = None
    created_at: datetime.datetime | None = None


def _provider_select():
    parent = rp.alias("parent")
    root = rp.alias("root")
    return (
        sa.select(rp.c.id, rp.c.uuid, rp.c.name, rp.c.generation,
                  rp.c.parent_provider_id, rp.c.root_provider_id,
                  parent.c.uuid.label("parent_uuid"), root.c.uuid.label("root_uuid"),
                  rp.c.updated_at, rp.c.created_at)
        .select_from(rp.outerjoin(parent, parent.c.id == rp.c.parent_provider_id)
                     .outerjoin(root, root.c.id == rp.c.root_provider_id))
    )


def _row_to_provider(row) -> ProviderRow:
    return ProviderRow(row.id, row.uuid, row.name, row.generation,
                       row.parent_provider_id, row.root_provider_id or row.id,
                       row.parent_uuid, row.root_uuid or row.uuid,
                       row.updated_at, row.created_at)


def find_provider(conn: Connection, uuid: str) -> ProviderRow | None:
    row = conn.execute(_provider_select().where(rp.c.uuid == uuid)).first()
    return _row_to_provider(row) if row else None


def get_provider(conn: Connection, uuid: str, lock: bool = False,
                 message: str | None = None) -> ProviderRow:
    """The provider, optionally row-locked (``FOR UPDATE``), or a 404."""
    stmt = _provider_select().where(rp.c.uuid == uuid)
    if lock:
        stmt = stmt.with_for_update(of=rp)
    row = conn.execute(stmt).first()
    if row is None:
        raise errors.NotFound(message or f"No resource provider with uuid {uuid} found")
    return _row_to_provider(row)


def _bump_generation(conn: Connection, provider: ProviderRow,
                     expected: int | None = None) -> int:
    """Increment a (locked) provider's generation, checking ``expected``."""
    current = provider.generation if expected is None else expected
    res = conn.execute(
        sa.update(rp).where(rp.c.id == provider.id, rp.c.generation == current)
        .values(generation=current + 1, updated_at=utcnow()))
    if res.rowcount != 1:
        raise errors.Conflict(
            "resource provider generation conflict", code=errors.CONCURRENT_UPDATE)
    provider.generation = current + 1
    touch(conn, provider.id)
    return provider.generation


_LOCK_AND_BUMP: dict = {}


def _lock_and_bump_stmt(conn: Connection, with_expected: bool):
    """The UPDATE ... RETURNING statement, built once per dialect/variant."""
    key = (conn.dialect.name, with_expected)
    stmt = _LOCK_AND_BUMP.get(key)
    if stmt is None:
        stmt = sa.update(rp).where(rp.c.uuid == sa.bindparam("b_uuid"))
        if with_expected:
            stmt = stmt.where(rp.c.generation == sa.bindparam("b_gen"))
        stmt = (stmt.values(generation=rp.c.generation + 1, updated_at=sa.bindparam("b_now"))
                .returning(rp.c.id, rp.c.name, rp.c.generation, rp.c.parent_provider_id,
                           rp.c.root_provider_id, rp.c.updated_at, rp.c.created_at))
        _LOCK_AND_BUMP[key] = stmt
    return stmt


def lock_and_bump(conn: Connection, uuid: str, expected: int | None = None,
                  conflict_detail: str = "resource provider generation conflict"
                  ) -> ProviderRow:
    """Increment a provider's generation (checking ``expected``) in one
    statement; the UPDATE also row-locks it until the transaction ends.

    Returns the provider with its new generation (parent/root uuids unset).
    """
    params = {"b_uuid": uuid, "b_now": utcnow()}
    if expected is not None:
        params["b_gen"] = expected
    # The change counter is NOT bumped here: its row lock must be taken last
    # in every transaction (Database.write does it just before COMMIT), or a
    # provider-locking claim and this writer could deadlock.
    row = conn.execute(_lock_and_bump_stmt(conn, expected is not None), params).first()
    if row is None:
        if find_provider(conn, uuid) is None:
            raise errors.NotFound(f"No resource provider with uuid {uuid} found")
        raise errors.Conflict(conflict_detail, code=errors.CONCURRENT_UPDATE)
    touch(conn, row.id)
    return ProviderRow(row.id, uuid, row.name, row.generation, row.parent_provider_id,
                       row.root_provider_id or row.id, None, None, row.updated_at,
                       row.created_at)


def check_generation(provider: ProviderRow, generation: int) -> None:
    if generation != provider.generation:
        raise errors.Conflict(
            "resource provider generation conflict", code=errors.CONCURRENT_UPDATE)


def _name_taken(conn: Connection, name: str, except_id: int | None = None) -> bool:
    stmt = sa.select(rp.c.id).where(rp.c.name == name)
    if except_id is not None:
        stmt = stmt.where(rp.c.id != except_id)
    return conn.execute(stmt).first() is not None


def create_provider(conn: Connection, name: str, uuid: str | None,
                    parent_uuid: str | None) -> ProviderRow:
    """Insert a provider.  A duplicate name or uuid violates a unique
    constraint; the caller maps that to 409 ``placement.duplicate_name``."""
    uuid = uuid or str(uuidlib.uuid4())
    parent_id = root_id = None
    parent_uuid_out = root_uuid = None
    if parent_uuid is not None:
        parent = find_provider(conn, parent_uuid)
        if parent is None:
            raise errors.BadRequest(
                f'Unable to create resource provider "{name}", {uuid}: '
                "Object action create failed because: parent provider UUID "
                "does not exist.")
        parent_id, root_id = parent.id, parent.root_id
        parent_uuid_out, root_uuid = parent.uuid, parent.root_uuid
    now = utcnow()
    if conn.dialect.name == "postgresql":
        new_id = sa.select(sa.func.nextval(
            sa.func.pg_get_serial_sequence("resource_providers", "id")).label("id")).cte("n")
        sel = sa.select(new_id.c.id, sa.literal(uuid), sa.literal(name), sa.literal(0),
                        sa.literal(parent_id, sa.Integer),
                        sa.func.coalesce(sa.literal(root_id, sa.Integer), new_id.c.id),
                        sa.literal(now), sa.literal(now))
        stmt = (sa.insert(rp).from_select(
            ["id", "uuid", "name", "generation", "parent_provider_id", "root_provider_id",
             "created_at", "updated_at"], sel).returning(rp.c.id))
        new_id_value = conn.execute(stmt).scalar_one()
        touch(conn, new_id_value)
        if root_id is None:
            root_id, root_uuid = new_id_value, uuid
        return ProviderRow(new_id_value, uuid, name, 0, parent_id, root_id, parent_uuid_out,
                           root_uuid, now, now)
    new_id_value = conn.execute(
        sa.insert(rp).values(uuid=uuid, name=name, generation=0,
                             parent_provider_id=parent_id, root_provider_id=root_id,
                             created_at=now, updated_at=now)
        .returning(rp.c.id)).scalar_one()
    touch(conn, new_id_value)
    if root_id is None:
        conn.execute(sa.update(rp).where(rp.c.id == new_id_value)
                     .values(root_provider_id=new_id_value))
        root_id, root_uuid = new_id_value, uuid
    return ProviderRow(new_id_value, uuid, name, 0, parent_id, root_id, parent_uuid_out,
                       root_uuid, now, now)


def duplicate_provider_detail(conn: Connection, name: str, uuid: str | None) -> str:
    duplicates = []
    for row in conn.execute(sa.select(rp.c.name, rp.c.uuid).where(
            sa.or_(rp.c.name == name, rp.c.uuid == (uuid or "")))):
        if row.name == name:
            duplicates.append(f"name: {name}")
        if uuid and row.uuid == uuid:
            duplicates.append(f"uuid: {uuid}")
    return "Conflicting resource provider %s already exists." % (
        ", ".join(duplicates) or f"name: {name}")


def _descendant_ids(conn: Connection, provider_id: int) -> set[int]:
    found: set[int] = set()
    frontier = [provider_id]
    while frontier:
        rows = conn.execute(sa.select(rp.c.id).where(
            rp.c.parent_provider_id.in_(frontier))).scalars().all()
        frontier = [r for r in rows if r not in found]
        found.update(frontier)
    return found


def update_provider(conn: Connection, uuid: str, data: dict,
                    allow_reparenting: bool) -> ProviderRow:
    provider = get_provider(conn, uuid, lock=True)
    values: dict = {}
    if "name" in data and data["name"] != provider.name:
        if _name_taken(conn, data["name"], except_id=provider.id):
            raise errors.Conflict(
                "Conflicting resource provider %s already exists." % data["name"],
                code=errors.DUPLICATE_NAME)
        values["name"] = data["name"]
    if "parent_provider_uuid" in data and data["parent_provider_uuid"] != provider.parent_uuid:
        new_parent_uuid = data["parent_provider_uuid"]
        prefix = f"Unable to save resource provider {uuid}: Object action update failed because: "
        if new_parent_uuid is None:
            if not allow_reparenting:
                raise errors.BadRequest(
                    prefix + "un-parenting a provider is not currently allowed.")
            new_root = provider.id
            values["parent_provider_id"] = None
        else:
            if provider.parent_id is not None and not allow_reparenting:
                raise errors.BadRequest(
                    prefix + "re-parenting a provider is not currently allowed.")
            parent = find_provider(conn, new_parent_uuid)
            if parent is None:
                raise errors.BadRequest(prefix + "parent provider UUID does not exist.")
            descendants = _descendant_ids(conn, provider.id)
            if parent.id == provider.id or parent.id in descendants:
                raise errors.BadRequest(
                    prefix + "creating loop in the provider tree is not allowed.")
            new_root = parent.root_id
            values["parent_provider_id"] = parent.id
        values["root_provider_id"] = new_root
        subtree = _descendant_ids(conn, provider.id)
        if subtree:
            conn.execute(sa.update(rp).where(rp.c.id.in_(subtree))
                         .values(root_provider_id=new_root))
    if "root_provider_id" in values:
        touch_all(conn)
    touch(conn, provider.id)
    if values:
        values["updated_at"] = utcnow()
        try:
            with conn.begin_nested():
                conn.execute(sa.update(rp).where(rp.c.id == provider.id).values(**values))
        except sa.exc.IntegrityError:
            raise errors.Conflict(
                "Conflicting resource provider %s already exists." % data.get("name"),
                code=errors.DUPLICATE_NAME) from None
    return find_provider(conn, uuid)  # type: ignore[return-value]


def delete_provider(conn: Connection, uuid: str) -> None:
    provider = get_provider(
        conn, uuid, lock=True,
        message=f"No resource provider with uuid {uuid} found for delete")
    # Children are checked first, as OpenStack Placement does: a parent
    # with allocations and children answers cannot_delete_parent.
    if conn.execute(sa.select(rp.c.id).where(
            rp.c.parent_provider_id == provider.id).limit(1)).first():
        raise errors.Conflict(
            f"Unable to delete parent resource provider {uuid}: It has child "
            "resource providers.", code=errors.PROVIDER_CANNOT_DELETE_PARENT)
    if conn.execute(sa.select(alloc.c.id).where(
            alloc.c.resource_provider_id == provider.id).limit(1)).first():
        raise errors.Conflict(
            f"Unable to delete resource provider {uuid}: Resource provider has "
            "allocations.", code=errors.PROVIDER_IN_USE)
    conn.execute(sa.delete(inv).where(inv.c.resource_provider_id == provider.id))
    conn.execute(sa.delete(t.provider_traits).where(
        t.provider_traits.c.resource_provider_id == provider.id))
    conn.execute(sa.delete(t.provider_aggregates).where(
        t.provider_aggregates.c.resource_provider_id == provider.id))
    conn.execute(sa.delete(rp).where(rp.c.id == provider.id))
    touch(conn, provider.id)


# --------------------------------------------------------- resource classes
# Standard classes and traits are never deleted or renamed: their ids are
# cached per database URL.  Custom names are always looked up.
_STANDARD_IDS: dict[tuple[str, str], dict[str, int]] = {}


def _ids(conn: Connection, table, names, standard: frozenset) -> dict[str, int]:
    names = set(names)
    if not names:
        return {}
    key = (str(conn.engine.url), table.name)
    cache = _STANDARD_IDS.setdefault(key, {})
    out = {n: cache[n] for n in names if n in cache}
    wanted = names - set(out)
    if wanted:
        for r in conn.execute(sa.select(table.c.name, table.c.id)
                              .where(table.c.name.in_(wanted))):
            out[r.name] = r.id
            if r.name in standard:
                cache[r.name] = r.id
    return out


def rc_ids(conn: Connection, names) -> dict[str, int]:
    return _ids(conn, t.resource_classes, names, STANDARD_RCS)


def rc_names_by_id(conn: Connection) -> dict[int, str]:
    return {r.id: r.name for r in conn.execute(
        sa.select(t.resource_classes.c.id, t.resource_classes.c.name))}


def list_resource_classes(conn: Connection) -> list[str]:
    return list(conn.execute(sa.select(t.resource_classes.c.name)
                             .order_by(t.resource_classes.c.id)).scalars())


def resource_class_exists(conn: Connection, name: str) -> bool:
    return bool(rc_ids(conn, [name]))


def create_resource_class(conn: Connection, name: str) -> None:
    touch_all(conn)
    if resource_class_exists(conn, name):
        raise errors.Conflict(f"Conflicting resource class already exists: {name}")
    try:
        with conn.begin_nested():
            conn.execute(sa.insert(t.resource_classes).values(name=name))
    except sa.exc.IntegrityError:
        raise errors.Conflict(
            f"Conflicting resource class already exists: {name}") from None


def ensure_resource_class(conn: Connection, name: str) -> bool:
    """Create a custom class if missing; True when it was created."""
    if resource_class_exists(conn, name):
        return False
    try:
        with conn.begin_nested():
            conn.execute(sa.insert(t.resource_classes).values(name=name))
    except sa.exc.IntegrityError:
        return False
    touch_all(conn)
    return True


def rename_resource_class(conn: Connection, name: str, new_name: str) -> None:
    touch_all(conn)
    if name in STANDARD_RCS:
        raise errors.BadRequest(f"Cannot update standard resource class {name}")
    if not resource_class_exists(conn, name):
        raise errors.NotFound(f"No such resource class {name}.")
    if new_name != name and resource_class_exists(conn, new_name):
        raise errors.Conflict(f"Resource class already exists: {new_name}")
    conn.execute(sa.update(t.resource_classes).where(t.resource_classes.c.name == name)
                 .values(name=new_name, updated_at=utcnow()))


def delete_resource_class(conn: Connection, name: str) -> None:
    touch_all(conn)
    if name in STANDARD_RCS:
        raise errors.BadRequest(f"Cannot delete standard resource class {name}")
    ids = rc_ids(conn, [name])
    if not ids:
        raise errors.NotFound(f"No such resource class {name}.")
    rc_id = ids[name]
    if conn.execute(sa.select(inv.c.id).where(inv.c.resource_class_id == rc_id).limit(1)).first():
        raise errors.Conflict(
            f"Unable to delete resource class {name}. The resource class is in "
            "use in inventory.")
    conn.execute(sa.delete(t.resource_classes).where(t.resource_classes.c.id == rc_id))


# -------------------------------------------------------------- inventories
INVENTORY_FIELDS = ("total", "reserved", "min_unit", "max_unit", "step_size",
                    "allocation_ratio")
INVENTORY_DEFAULTS = {"reserved": 0, "min_unit": 1, "max_unit": MAX_INT,
                      "step_size": 1, "allocation_ratio": 1.0}


def capacity(record: dict) -> int:
    value = (record["total"] - record["reserved"]) * record["allocation_ratio"]
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


def _used_by_rc(conn: Connection, provider_id: int) -> dict[int, int]:
    rows = conn.execute(
        sa.select(alloc.c.resource_class_id, sa.func.sum(alloc.c.used))
        .where(alloc.c.resource_provider_id == provider_id)
        .group_by(alloc.c.resource_class_id))
    return {r[0]: int(r[1]) for r in rows}


def set_inventories(conn: Connection, provider: ProviderRow, records: dict[str, dict],
                    generation: int | None, in_use_code: str = errors.INVENTORY_INUSE,
                    verb: str = "update", bump: bool = True) -> None:
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
    used = _used_by_rc(conn, provider.id) if removed else {}
    in_use = [rc_id for rc_id in removed if used.get(rc_id)]
    if in_use:
        names = rc_names_by_id(conn)
        raise errors.Conflict(
            "update conflict: Inventory for '%s' on resource provider '%s' in use."
            % (", ".join(sorted(names[i] for i in in_use)), provider.uuid),
            code=in_use_code)
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
        _bump_generation(conn, provider)


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
        _bump_generation(conn, provider)


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
    ids, row = _inventory_row(conn, provider, name)
    if row is None:
        raise errors.BadRequest(
            f"No inventory record with resource class for resource provider "
            f"{provider.uuid}: No inventory of class {name} found.")
    conn.execute(sa.update(inv).where(inv.c.id == row.id).values(
        updated_at=utcnow(), **{f: rec[f] for f in INVENTORY_FIELDS}))
    if bump:
        _bump_generation(conn, provider)


def delete_inventory(conn: Connection, provider: ProviderRow, name: str,
                     bump: bool = True) -> None:
    ids, row = _inventory_row(conn, provider, name)
    if row is None:
        raise errors.NotFound(
            f"No inventory of class {name} found for delete: No inventory of "
            f"class {name} found for delete.")
    if _used_by_rc(conn, provider.id).get(ids[name]):
        raise errors.Conflict(
            f"Unable to delete inventory of class {name}: Inventory for '{name}' "
            f"on resource provider '{provider.uuid}' in use.",
            code=errors.CONCURRENT_UPDATE)
    conn.execute(sa.delete(inv).where(inv.c.id == row.id))
    if bump:
        _bump_generation(conn, provider)


# ------------------------------------------------------------------ traits
def trait_ids(conn: Connection, names) -> dict[str, int]:
    return _ids(conn, t.traits, names, STANDARD_TRAITS)


def list_traits(conn: Connection, name_filter: tuple[str, object] | None,
                associated: bool | None) -> list[str]:
    stmt = sa.select(t.traits.c.name)
    if name_filter:
        kind, value = name_filter
        if kind == "in":
            stmt = stmt.where(t.traits.c.name.in_(value))
        else:
            stmt = stmt.where(t.traits.c.name.startswith(value, autoescape=True))
    if associated is not None:
        used = sa.select(t.provider_traits.c.trait_id).distinct()
        stmt = stmt.where(t.traits.c.id.in_(used) if associated
                          else t.traits.c.id.not_in(used))
    return sorted(conn.execute(stmt).scalars())


def ensure_trait(conn: Connection, name: str) -> bool:
    if trait_ids(conn, [name]):
        return False
    try:
        with conn.begin_nested():
            conn.execute(sa.insert(t.traits).values(name=name))
    except sa.exc.IntegrityError:
        return False
    touch_all(conn)
    return True


def delete_trait(conn: Connection, name: str) -> None:
    touch_all(conn)
    if name in STANDARD_TRAITS or not name.startswith("CUSTOM_"):
        raise errors.BadRequest(f"Cannot delete standard trait {name}.")
    ids = trait_ids(conn, [name])
    if not ids:
        raise errors.NotFound(f"No such trait(s): {name}.")
    if conn.execute(sa.select(t.provider_traits.c.trait_id).where(
            t.provider_traits.c.trait_id == ids[name]).limit(1)).first():
        raise errors.Conflict(f"The trait {name} is in use by a resource provider.")
    conn.execute(sa.delete(t.traits).where(t.traits.c.id == ids[name]))


def provider_traits(conn: Connection, provider: ProviderRow) -> list[str]:
    return sorted(conn.execute(
        sa.select(t.traits.c.name)
        .select_from(t.provider_traits.join(
            t.traits, t.traits.c.id == t.provider_traits.c.trait_id))
        .where(t.provider_traits.c.resource_provider_id == provider.id)).scalars())


def set_provider_traits(conn: Connection, provider: ProviderRow, names: list[str],
                        generation: int | None, bump: bool = True) -> None:
    """Replace a provider's traits (the caller locked/bumped it, or bump=True)."""
    if generation is not None:
        check_generation(provider, generation)
    ids = trait_ids(conn, names)
    missing = sorted(set(names) - set(ids))
    if missing:
        raise errors.BadRequest("No such trait %s" % ", ".join(missing))
    _replace_links(conn, t.provider_traits, "trait_id", provider.id, sorted(set(ids.values())))
    if bump:
        _bump_generation(conn, provider)


# -------------------------------------------------------------- aggregates
def provider_aggregates(conn: Connection, provider: ProviderRow) -> list[str]:
    pa = t.provider_aggregates
    return sorted(conn.execute(
        sa.select(t.aggregates.c.uuid)
        .select_from(pa.join(t.aggregates, t.aggregates.c.id == pa.c.aggregate_id))
        .where(pa.c.resource_provider_id == provider.id)).scalars())


def _insert_ignore(conn: Connection, table, rows: list[dict]) -> None:
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    elif conn.dialect.name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    else:  # pragma: no cover
        conn.execute(sa.insert(table), rows)
        return
    conn.execute(insert(table).on_conflict_do_nothing(), rows)


# Aggregate rows are never deleted or changed: their ids are cached.
_AGGREGATE_IDS: dict[str, dict[str, int]] = {}


def _aggregate_ids(conn: Connection, uuids: list[str]) -> dict[str, int]:
    if not uuids:
        return {}
    cache = _AGGREGATE_IDS.setdefault(str(conn.engine.url), {})
    found = {u: cache[u] for u in uuids if u in cache}
    wanted = [u for u in uuids if u not in found]
    if wanted:
        stmt = sa.select(t.aggregates.c.uuid, t.aggregates.c.id).where(
            t.aggregates.c.uuid.in_(wanted))
        found.update({r.uuid: r.id for r in conn.execute(stmt)})
        missing = [u for u in wanted if u not in found]
        if missing:
            _insert_ignore(conn, t.aggregates, [{"uuid": u} for u in missing])
            found.update({r.uuid: r.id for r in conn.execute(stmt)})
        # Cache only after commit would be stricter; an id that a rolled-back
        # transaction inserted is simply looked up (and re-inserted) again.
        if not missing:
            cache.update({u: found[u] for u in wanted})
    return found


def _replace_links(conn: Connection, table, column: str, provider_id: int,
                   ids: list[int]) -> None:
    """Make (provider_id, ids) the provider's rows in a link table.

    On Postgres the change rides on the transaction's final statement (see
    ``Database._finish_write``): one round trip less.  Nothing later in the
    transaction may read the link table.  The caller holds the provider's
    row lock, so no other writer touches these rows meanwhile.
    """
    if conn.dialect.name == "postgresql":
        final = conn.info.setdefault("kova_final", [])
        n = len(final)
        final.append((
            f"d{n} AS (DELETE FROM {table.name} WHERE resource_provider_id = :rp{n} "
            f"AND NOT ({column} = ANY(CAST(:ids{n} AS integer[])))), "
            f"n{n} AS (INSERT INTO {table.name} (resource_provider_id, {column}) "
            f"SELECT :rp{n}, unnest(CAST(:ids{n} AS integer[])) ON CONFLICT DO NOTHING)",
            {f"rp{n}": provider_id, f"ids{n}": ids}))
        return
    conn.execute(sa.delete(table).where(table.c.resource_provider_id == provider_id))
    if ids:
        conn.execute(sa.insert(table), [{"resource_provider_id": provider_id, column: i}
                                        for i in ids])


def set_provider_aggregates(conn: Connection, provider: ProviderRow, uuids: list[str],
                            generation: int | None, bump: bool) -> None:
    if generation is not None:
        check_generation(provider, generation)
    ids = _aggregate_ids(conn, uuids)
    _replace_links(conn, t.provider_aggregates, "aggregate_id", provider.id,
                   sorted(set(ids.values())))
    touch(conn, provider.id)
    if bump:
        _bump_generation(conn, provider)


# ------------------------------------------------------------------ usages
def provider_usages(conn: Connection, provider: ProviderRow) -> dict[str, int]:
    names = {r.resource_class_id: r.name for r in conn.execute(
        sa.select(inv.c.resource_class_id, t.resource_classes.c.name)
        .select_from(inv.join(
            t.resource_classes, t.resource_classes.c.id == inv.c.resource_class_id))
        .where(inv.c.resource_provider_id == provider.id))}
    used = _used_by_rc(conn, provider.id)
    out = {name: used.get(rc_id, 0) for rc_id, name in names.items()}
    if set(used) - set(names):
        all_names = rc_names_by_id(conn)
        for rc_id, amount in used.items():
            if rc_id not in names:
                out[all_names[rc_id]] = amount
    return out


def project_usages(conn: Connection, project_id: str, user_id: str | None,
                   consumer_type: str | None, by_type: bool) -> dict:
    c = t.consumers
    type_col = sa.func.coalesce(c.c.consumer_type, "unknown")
    stmt = (sa.select(type_col.label("ctype"), t.resource_classes.c.name,
                      sa.func.sum(alloc.c.used), sa.func.count(sa.distinct(c.c.uuid)))
            .select_from(alloc.join(c, c.c.uuid == alloc.c.consumer_id)
                         .join(t.resource_classes,
                               t.resource_classes.c.id == alloc.c.resource_class_id))
            .where(c.c.project_id == project_id)
            .group_by(type_col, t.resource_classes.c.name))
    if user_id is not None:
        stmt = stmt.where(c.c.user_id == user_id)
    if consumer_type not in (None, "all"):
        stmt = stmt.where(type_col == consumer_type)
    rows = conn.execute(stmt).all()
    if not by_type:
        usages: dict = defaultdict(int)
        for _ctype, name, used, _count in rows:
            usages[name] += int(used)
        return dict(usages)
    # consumer_count is per type: count distinct consumers separately.
    count_stmt = (sa.select(type_col.label("ctype"), sa.func.count(sa.distinct(c.c.uuid)))
                  .select_from(c.join(alloc, alloc.c.consumer_id == c.c.uuid))
                  .where(c.c.project_id == project_id).group_by(type_col))
    if user_id is not None:
        count_stmt = count_stmt.where(c.c.user_id == user_id)
    if consumer_type not in (None, "all"):
        count_stmt = count_stmt.where(type_col == consumer_type)
    counts = {r[0]: int(r[1]) for r in conn.execute(count_stmt)}
    out: dict = {}
    if consumer_type == "all":
        total: dict = {"consumer_count": sum(counts.values())}
        for _ctype, name, used, _count in rows:
            total[name] = total.get(name, 0) + int(used)
        return {"all": total} if rows else {}
    for ctype, name, used, _count in rows:
        entry = out.setdefault(ctype, {"consumer_count": counts.get(ctype, 0)})
        entry[name] = entry.get(name, 0) + int(used)
    return out


# -------------------------------------------------------------- allocations
def consumer_allocations(conn: Connection, consumer_uuid: str):
    """(consumer row or None, {rp_uuid: {"generation", "resources"}})."""
    c = t.consumers
    consumer = conn.execute(sa.select(c).where(c.c.uuid == consumer_uuid)).first()
    rows = conn.execute(
        sa.select(rp.c.uuid, rp.c.generation, t.resource_classes.c.name, alloc.c.used,
                  alloc.c.updated_at)
        .select_from(alloc.join(rp, rp.c.id == alloc.c.resource_provider_id)
                     .join(t.resource_classes,
                           t.resource_classes.c.id == alloc.c.resource_class_id))
        .where(alloc.c.consumer_id == consumer_uuid)
        .order_by(rp.c.id, t.resource_classes.c.id))
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
        sa.select(alloc.c.consumer_id, t.resource_classes.c.name, alloc.c.used,
                  c.c.generation, alloc.c.updated_at)
        .select_from(alloc.join(t.resource_classes,
                                t.resource_classes.c.id == alloc.c.resource_class_id)
                     .outerjoin(c, c.c.uuid == alloc.c.consumer_id))
        .where(alloc.c.resource_provider_id == provider.id)
        .order_by(alloc.c.consumer_id, t.resource_classes.c.id))
    out: dict = {}
    last = None
    for r in rows:
        entry = out.setdefault(r.consumer_id,
                               {"resources": {}, "consumer_generation": r.generation})
        entry["resources"][r.name] = r.used
        if r.updated_at and (last is None or r.updated_at > last):
            last = r.updated_at
    return out, last


@dataclass
class ConsumerWrite:
    """What one consumer's allocations should become."""

    uuid: str
    allocations: dict  # rp_uuid -> {rc_name: amount}
    project_id: str | None
    user_id: str | None
    generation: int | None = None
    check_generation: bool = False
    consumer_type: str | None = None
    set_type: bool = False
    extra: dict = field(default_factory=dict)


def replace_allocations(conn: Connection, writes: list[ConsumerWrite],
                        not_found_prefix: str = "Unable to allocate inventory") -> None:
    """Atomically replace the allocations of the given consumers.

    Order: lock consumers (generation check), lock every provider involved
    (old and new allocations, by id order so concurrent writers never
    deadlock), remove the old allocations, check the new ones against
    inventory and current usage read under the locks, insert, bump
    generations.
    """
    c = t.consumers
    # 1. consumers and generations
    existing = {}
    for w in writes:
        row = conn.execute(sa.select(c).where(c.c.uuid == w.uuid).with_for_update()).first()
        existing[w.uuid] = row
        if w.check_generation:
            if row is None and w.generation is not None:
                raise errors.Conflict(
                    "consumer generation conflict - expected null but got %s" % w.generation,
                    code=errors.CONCURRENT_UPDATE)
            if row is not None and row.generation != w.generation:
                raise errors.Conflict(
                    "consumer generation conflict - expected %s but got %s"
                    % (row.generation, w.generation), code=errors.CONCURRENT_UPDATE)
    # 2. providers: new ones must exist
    new_uuids = sorted({u for w in writes for u in w.allocations})
    providers = {}
    if new_uuids:
        for r in conn.execute(sa.select(rp.c.id, rp.c.uuid).where(rp.c.uuid.in_(new_uuids))):
            providers[r.uuid] = r.id
    for u in new_uuids:
        if u not in providers:
            raise errors.BadRequest(
                f"Allocation for resource provider '{u}' that does not exist.")
    consumer_uuids = [w.uuid for w in writes]
    old_rp_ids = set(conn.execute(sa.select(alloc.c.resource_provider_id).where(
        alloc.c.consumer_id.in_(consumer_uuids))).scalars())
    lock_ids = sorted(set(providers.values()) | old_rp_ids)
    if lock_ids:
        conn.execute(sa.select(rp.c.id).where(rp.c.id.in_(lock_ids))
                     .order_by(rp.c.id).with_for_update()).all()
    # 3. resource classes
    names = {rc for w in writes for res in w.allocations.values() for rc in res}
    ids = rc_ids(conn, names)
    missing = sorted(names - set(ids))
    if missing:
        raise errors.BadRequest(
            f"{not_found_prefix}: No such resource class {missing[0]}.")
    # 4. previous usage, then remove the old allocations
    needed: dict[tuple[int, int], int] = defaultdict(int)
    for w in writes:
        for u, res in w.allocations.items():
            for rc, amount in res.items():
                needed[(providers[u], ids[rc])] += amount
    prev_used: dict[tuple[int, int], int] = {}
    if needed:
        pairs_rp = {k[0] for k in needed}
        for r in conn.execute(
                sa.select(alloc.c.resource_provider_id, alloc.c.resource_class_id,
                          sa.func.sum(alloc.c.used))
                .where(alloc.c.resource_provider_id.in_(pairs_rp))
                .group_by(alloc.c.resource_provider_id, alloc.c.resource_class_id)):
            prev_used[(r[0], r[1])] = int(r[2])
    conn.execute(sa.delete(alloc).where(alloc.c.consumer_id.in_(consumer_uuids)))
    # 5. capacity and constraints against inventory, under the locks
    if needed:
        now_used: dict[tuple[int, int], int] = {}
        for r in conn.execute(
                sa.select(alloc.c.resource_provider_id, alloc.c.resource_class_id,
                          sa.func.sum(alloc.c.used))
                .where(alloc.c.resource_provider_id.in_({k[0] for k in needed}))
                .group_by(alloc.c.resource_provider_id, alloc.c.resource_class_id)):
            now_used[(r[0], r[1])] = int(r[2])
        inventory = {(r.resource_provider_id, r.resource_class_id): r for r in conn.execute(
            sa.select(inv).where(inv.c.resource_provider_id.in_({k[0] for k in needed})))}
        uuid_by_id = {v: k for k, v in providers.items()}
        name_by_id = {v: k for k, v in ids.items()}
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
    # 6. write
    now = utcnow()
    rows = [
        {"resource_provider_id": providers[u], "consumer_id": w.uuid,
         "resource_class_id": ids[rc], "used": amount, "created_at": now, "updated_at": now}
        for w in writes for u, res in w.allocations.items() for rc, amount in res.items()
    ]
    if rows:
        conn.execute(sa.insert(alloc), rows)
    if lock_ids:
        conn.execute(sa.update(rp).where(rp.c.id.in_(lock_ids))
                     .values(generation=rp.c.generation + 1, updated_at=now))
        touch(conn, *lock_ids)
    for w in writes:
        row = existing[w.uuid]
        if not w.allocations:
            if row is not None:
                conn.execute(sa.delete(c).where(c.c.id == row.id))
            continue
        if w.project_id is None:
            project, user = INCOMPLETE_PROJECT, INCOMPLETE_USER
        else:
            project, user = w.project_id, w.user_id or INCOMPLETE_USER
        if row is None:
            # A racing creator of the same consumer makes this INSERT fail;
            # Database.run_write answers 409 placement.concurrent_update.
            conn.execute(sa.insert(c).values(
                uuid=w.uuid, project_id=project, user_id=user,
                consumer_type=w.consumer_type if w.set_type else None,
                generation=1, created_at=now, updated_at=now))
        else:
            values = {"project_id": project, "user_id": user,
                      "generation": row.generation + 1, "updated_at": now}
            if w.set_type:
                values["consumer_type"] = w.consumer_type
            res = conn.execute(sa.update(c).where(c.c.id == row.id,
                                                  c.c.generation == row.generation)
                               .values(**values))
            if res.rowcount != 1:
                raise errors.Conflict("consumer generation conflict",
                                      code=errors.CONCURRENT_UPDATE)


def check_consumer_generations(conn: Connection, writes: list[ConsumerWrite]) -> None:
    c = t.consumers
    for w in writes:
        row = conn.execute(sa.select(c).where(c.c.uuid == w.uuid).with_for_update()).first()
        expected = row.generation if row is not None else None
        if expected != w.generation:
            raise errors.Conflict(
                "consumer generation conflict - expected %s but got %s"
                % ("null" if expected is None else expected, w.generation),
                code=errors.CONCURRENT_UPDATE)


def remove_allocations(conn: Connection, consumer_uuids: list[str]) -> None:
    """Delete allocation rows (keeping the consumers) under provider locks."""
    rows = conn.execute(sa.select(alloc.c.resource_provider_id).where(
        alloc.c.consumer_id.in_(consumer_uuids))).scalars().all()
    lock_ids = sorted(set(rows))
    if lock_ids:
        conn.execute(sa.select(rp.c.id).where(rp.c.id.in_(lock_ids)).order_by(rp.c.id)
                     .with_for_update()).all()
        conn.execute(sa.delete(alloc).where(alloc.c.consumer_id.in_(consumer_uuids)))
        touch(conn, *lock_ids)


def delete_consumer_allocations(conn: Connection, consumer_uuid: str) -> None:
    rows = conn.execute(sa.select(alloc.c.resource_provider_id).where(
        alloc.c.consumer_id == consumer_uuid)).scalars().all()
    if not rows:
        raise errors.NotFound(f"No allocations for consumer '{consumer_uuid}'")
    lock_ids = sorted(set(rows))
    conn.execute(sa.select(rp.c.id).where(rp.c.id.in_(lock_ids)).order_by(rp.c.id)
                 .with_for_update()).all()
    conn.execute(sa.delete(alloc).where(alloc.c.consumer_id == consumer_uuid))
    conn.execute(sa.update(rp).where(rp.c.id.in_(lock_ids))
                 .values(generation=rp.c.generation + 1, updated_at=utcnow()))
    touch(conn, *lock_ids)
    conn.execute(sa.delete(t.consumers).where(t.consumers.c.uuid == consumer_uuid))
