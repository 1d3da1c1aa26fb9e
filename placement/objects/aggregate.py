"""Aggregates (plain UUIDs) and the aggregates a provider belongs to."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from kova.placement.db import tables as t
from kova.placement.db.engine import touch
from kova.placement.objects.common import insert_ignore, replace_links
from kova.placement.objects.resource_provider import ProviderRow, bump_generation, check_generation


def provider_aggregates(conn: Connection, provider: ProviderRow) -> list[str]:
    pa = t.provider_aggregates
    return sorted(conn.execute(
        sa.select(t.aggregates.c.uuid)
        .select_from(pa.join(t.aggregates, t.aggregates.c.id == pa.c.aggregate_id))
        .where(pa.c.resource_provider_id == provider.id)).scalars())


# Aggregate rows are never deleted or changed: their ids are cached.
AGGREGATE_IDS: dict[str, dict[str, int]] = {}


def aggregate_ids(conn: Connection, uuids: list[str]) -> dict[str, int]:
    """{uuid: id} for the aggregates, inserting the ones not yet known."""
    if not uuids:
        return {}
    cache = AGGREGATE_IDS.setdefault(str(conn.engine.url), {})
    found = {u: cache[u] for u in uuids if u in cache}
    wanted = [u for u in uuids if u not in found]
    if wanted:
        stmt = sa.select(t.aggregates.c.uuid, t.aggregates.c.id).where(
            t.aggregates.c.uuid.in_(wanted))
        found.update({r.uuid: r.id for r in conn.execute(stmt)})
        missing = [u for u in wanted if u not in found]
        if missing:
            insert_ignore(conn, t.aggregates, [{"uuid": u} for u in missing])
            found.update({r.uuid: r.id for r in conn.execute(stmt)})
        # Cache only after commit would be stricter; an id that a rolled-back
        # transaction inserted is simply looked up (and re-inserted) again.
        if not missing:
            cache.update({u: found[u] for u in wanted})
    return found


def set_provider_aggregates(conn: Connection, provider: ProviderRow, uuids: list[str],
                            generation: int | None, bump: bool) -> None:
    if generation is not None:
        check_generation(provider, generation)
    ids = aggregate_ids(conn, uuids)
    replace_links(conn, t.provider_aggregates, "aggregate_id", provider.id,
                  sorted(set(ids.values())))
    touch(conn, provider.id)
    if bump:
        bump_generation(conn, provider)
