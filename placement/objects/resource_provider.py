"""Resource providers: rows, trees, generations, create/update/delete."""

from __future__ import annotations

import datetime
import uuid as uuidlib
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from kova.placement import errors
from kova.placement.db import tables as t
from kova.placement.db.engine import touch, touch_all
from kova.placement.objects.common import utcnow

rp = t.resource_providers

GENERATION_CONFLICT = "resource provider generation conflict"


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


def bump_generation(conn: Connection, provider: ProviderRow,
                    expected: int | None = None) -> int:
    """Increment a (locked) provider's generation, checking ``expected``."""
    current = provider.generation if expected is None else expected
    res = conn.execute(
        sa.update(rp).where(rp.c.id == provider.id, rp.c.generation == current)
        .values(generation=current + 1, updated_at=utcnow()))
    if res.rowcount != 1:
        raise errors.Conflict(GENERATION_CONFLICT, code=errors.CONCURRENT_UPDATE)
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
                  conflict_detail: str = GENERATION_CONFLICT) -> ProviderRow:
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
        raise errors.Conflict(GENERATION_CONFLICT, code=errors.CONCURRENT_UPDATE)


def _name_taken(conn: Connection, name: str, except_id: int | None = None) -> bool:
    stmt = sa.select(rp.c.id).where(rp.c.name == name)
    if except_id is not None:
        stmt = stmt.where(rp.c.id != except_id)
    return conn.execute(stmt).first() is not None


def _insert_provider_pg(conn: Connection, uuid: str, name: str, parent_id: int | None,
                        root_id: int | None, now) -> int:
    """One INSERT that sets root_provider_id to the new id for a root."""
    new_id = sa.select(sa.func.nextval(
        sa.func.pg_get_serial_sequence("resource_providers", "id")).label("id")).cte("n")
    sel = sa.select(new_id.c.id, sa.literal(uuid), sa.literal(name), sa.literal(0),
                    sa.literal(parent_id, sa.Integer),
                    sa.func.coalesce(sa.literal(root_id, sa.Integer), new_id.c.id),
                    sa.literal(now), sa.literal(now))
    stmt = (sa.insert(rp).from_select(
        ["id", "uuid", "name", "generation", "parent_provider_id", "root_provider_id",
         "created_at", "updated_at"], sel).returning(rp.c.id))
    return conn.execute(stmt).scalar_one()


def _insert_provider(conn: Connection, uuid: str, name: str, parent_id: int | None,
                     root_id: int | None, now) -> int:
    new_id = conn.execute(
        sa.insert(rp).values(uuid=uuid, name=name, generation=0,
                             parent_provider_id=parent_id, root_provider_id=root_id,
                             created_at=now, updated_at=now)
        .returning(rp.c.id)).scalar_one()
    if root_id is None:
        conn.execute(sa.update(rp).where(rp.c.id == new_id).values(root_provider_id=new_id))
    return new_id


def create_provider(conn: Connection, name: str, uuid: str | None,
                    parent_uuid: str | None) -> ProviderRow:
    """Insert a provider.  A duplicate name or uuid violates a unique
    constraint; the caller maps that to 409 ``placement.duplicate_name``."""
    uuid = uuid or str(uuidlib.uuid4())
    parent_id = root_id = None
    parent_uuid_out = root_uuid = None
    if parent_uuid is not None:
        if parent_uuid == uuid:
            raise errors.BadRequest(
                f'Unable to create resource provider "{name}", {uuid}: Object action '
                "create failed because: parent provider UUID cannot be same as UUID. "
                "Please set parent provider UUID to None if there is no parent.")
        parent = find_provider(conn, parent_uuid)
        if parent is None:
            raise errors.BadRequest(
                f'Unable to create resource provider "{name}", {uuid}: '
                "Object action create failed because: parent provider UUID "
                "does not exist.")
        parent_id, root_id = parent.id, parent.root_id
        parent_uuid_out, root_uuid = parent.uuid, parent.root_uuid
    now = utcnow()
    insert = _insert_provider_pg if conn.dialect.name == "postgresql" else _insert_provider
    new_id = insert(conn, uuid, name, parent_id, root_id, now)
    touch(conn, new_id)
    if root_id is None:
        root_id, root_uuid = new_id, uuid
    return ProviderRow(new_id, uuid, name, 0, parent_id, root_id, parent_uuid_out,
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


def descendant_ids(conn: Connection, provider_id: int) -> set[int]:
    found: set[int] = set()
    frontier = [provider_id]
    while frontier:
        rows = conn.execute(sa.select(rp.c.id).where(
            rp.c.parent_provider_id.in_(frontier))).scalars().all()
        frontier = [r for r in rows if r not in found]
        found.update(frontier)
    return found


def _new_parent(conn: Connection, provider: ProviderRow, new_parent_uuid: str | None,
                allow_reparenting: bool) -> dict:
    """The column values that move ``provider`` (and its subtree) under a new
    parent, or make it a root; a 400 where OpenStack refuses the move."""
    prefix = (f"Unable to save resource provider {provider.uuid}: Object action update "
              "failed because: ")
    values: dict = {}
    if new_parent_uuid is None:
        if not allow_reparenting:
            raise errors.BadRequest(prefix + "un-parenting a provider is not currently allowed.")
        new_root = provider.id
        values["parent_provider_id"] = None
    else:
        if provider.parent_id is not None and not allow_reparenting:
            raise errors.BadRequest(prefix + "re-parenting a provider is not currently allowed.")
        parent = find_provider(conn, new_parent_uuid)
        if parent is None:
            raise errors.BadRequest(prefix + "parent provider UUID does not exist.")
        descendants = descendant_ids(conn, provider.id)
        if parent.id == provider.id or parent.id in descendants:
            raise errors.BadRequest(prefix + "creating loop in the provider tree is not allowed.")
        new_root = parent.root_id
        values["parent_provider_id"] = parent.id
    values["root_provider_id"] = new_root
    subtree = descendant_ids(conn, provider.id)
    if subtree:
        conn.execute(sa.update(rp).where(rp.c.id.in_(subtree))
                     .values(root_provider_id=new_root))
    return values


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
        values.update(_new_parent(conn, provider, data["parent_provider_uuid"],
                                  allow_reparenting))
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
    if conn.execute(sa.select(t.allocations.c.id).where(
            t.allocations.c.resource_provider_id == provider.id).limit(1)).first():
        raise errors.Conflict(
            f"Unable to delete resource provider {uuid}: Resource provider has "
            "allocations.", code=errors.PROVIDER_IN_USE)
    for table in (t.inventories, t.provider_traits, t.provider_aggregates):
        conn.execute(sa.delete(table).where(table.c.resource_provider_id == provider.id))
    conn.execute(sa.delete(rp).where(rp.c.id == provider.id))
    touch(conn, provider.id)
