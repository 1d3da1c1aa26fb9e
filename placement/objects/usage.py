"""Usages: per provider, and per project/user (and consumer type)."""

from __future__ import annotations

from collections import defaultdict

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from kova.placement.db import tables as t
from kova.placement.objects.inventory import used_by_rc
from kova.placement.objects.resource_class import rc_names_by_id
from kova.placement.objects.resource_provider import ProviderRow

alloc = t.allocations
inv = t.inventories
rcs = t.resource_classes
consumers = t.consumers


def provider_usages(conn: Connection, provider: ProviderRow) -> dict[str, int]:
    names = {r.resource_class_id: r.name for r in conn.execute(
        sa.select(inv.c.resource_class_id, rcs.c.name)
        .select_from(inv.join(rcs, rcs.c.id == inv.c.resource_class_id))
        .where(inv.c.resource_provider_id == provider.id))}
    used = used_by_rc(conn, provider.id)
    out = {name: used.get(rc_id, 0) for rc_id, name in names.items()}
    if set(used) - set(names):
        all_names = rc_names_by_id(conn)
        for rc_id, amount in used.items():
            if rc_id not in names:
                out[all_names[rc_id]] = amount
    return out


def _filtered(stmt, project_id: str, user_id: str | None, consumer_type: str | None,
              type_col):
    stmt = stmt.where(consumers.c.project_id == project_id)
    if user_id is not None:
        stmt = stmt.where(consumers.c.user_id == user_id)
    if consumer_type not in (None, "all"):
        stmt = stmt.where(type_col == consumer_type)
    return stmt


def project_usages(conn: Connection, project_id: str, user_id: str | None,
                   consumer_type: str | None, by_type: bool) -> dict:
    c = consumers
    type_col = sa.func.coalesce(c.c.consumer_type, "unknown")
    stmt = (sa.select(type_col.label("ctype"), rcs.c.name, sa.func.sum(alloc.c.used))
            .select_from(alloc.join(c, c.c.uuid == alloc.c.consumer_id)
                         .join(rcs, rcs.c.id == alloc.c.resource_class_id))
            .group_by(type_col, rcs.c.name))
    rows = conn.execute(_filtered(stmt, project_id, user_id, consumer_type, type_col)).all()
    if not by_type:
        usages: dict = defaultdict(int)
        for _ctype, name, used in rows:
            usages[name] += int(used)
        return dict(usages)
    # consumer_count is per type: count distinct consumers separately.
    count_stmt = (sa.select(type_col.label("ctype"), sa.func.count(sa.distinct(c.c.uuid)))
                  .select_from(c.join(alloc, alloc.c.consumer_id == c.c.uuid))
                  .group_by(type_col))
    counts = {r[0]: int(r[1]) for r in conn.execute(
        _filtered(count_stmt, project_id, user_id, consumer_type, type_col))}
    if consumer_type == "all":
        total: dict = {"consumer_count": sum(counts.values())}
        for _ctype, name, used in rows:
            total[name] = total.get(name, 0) + int(used)
        return {"all": total} if rows else {}
    out: dict = {}
    for ctype, name, used in rows:
        entry = out.setdefault(ctype, {"consumer_count": counts.get(ctype, 0)})
        entry[name] = entry.get(name, 0) + int(used)
    return out
