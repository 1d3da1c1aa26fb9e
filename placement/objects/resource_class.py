"""Resource classes: the standard ones (os-resource-classes) and CUSTOM_*."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from kova.placement import errors
from kova.placement.db import tables as t
from kova.placement.db.engine import touch_all
from kova.placement.objects.common import STANDARD_RCS, name_ids, utcnow

rc = t.resource_classes


def rc_ids(conn: Connection, names) -> dict[str, int]:
    return name_ids(conn, rc, names, STANDARD_RCS)


def rc_names_by_id(conn: Connection) -> dict[int, str]:
    return {r.id: r.name for r in conn.execute(sa.select(rc.c.id, rc.c.name))}


def list_resource_classes(conn: Connection) -> list[str]:
    return list(conn.execute(sa.select(rc.c.name).order_by(rc.c.id)).scalars())


def resource_class_exists(conn: Connection, name: str) -> bool:
    return bool(rc_ids(conn, [name]))


def create_resource_class(conn: Connection, name: str) -> None:
    touch_all(conn)
    if resource_class_exists(conn, name):
        raise errors.Conflict(f"Conflicting resource class already exists: {name}")
    try:
        with conn.begin_nested():
            conn.execute(sa.insert(rc).values(name=name))
    except sa.exc.IntegrityError:
        raise errors.Conflict(
            f"Conflicting resource class already exists: {name}") from None


def ensure_resource_class(conn: Connection, name: str) -> bool:
    """Create a custom class if missing; True when it was created."""
    if resource_class_exists(conn, name):
        return False
    try:
        with conn.begin_nested():
            conn.execute(sa.insert(rc).values(name=name))
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
    conn.execute(sa.update(rc).where(rc.c.name == name)
                 .values(name=new_name, updated_at=utcnow()))


def delete_resource_class(conn: Connection, name: str) -> None:
    touch_all(conn)
    if name in STANDARD_RCS:
        raise errors.BadRequest(
            f"Error in delete resource class: Cannot delete standard resource class {name}.")
    ids = rc_ids(conn, [name])
    if not ids:
        raise errors.NotFound(f"No such resource class {name}.")
    rc_id = ids[name]
    inv = t.inventories
    if conn.execute(sa.select(inv.c.id).where(inv.c.resource_class_id == rc_id).limit(1)).first():
        raise errors.Conflict(
            f"Error in delete resource class: Cannot delete resource class {name}. "
            "Class is in use in inventory.")
    conn.execute(sa.delete(rc).where(rc.c.id == rc_id))
