"""Traits: the standard ones (os-traits), CUSTOM_*, and a provider's set."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from kova.placement import errors
from kova.placement.db import tables as t
from kova.placement.db.engine import touch_all
from kova.placement.objects.common import STANDARD_TRAITS, name_ids, replace_links
from kova.placement.objects.resource_provider import (
    ProviderRow,
    bump_generation,
    check_generation,
    get_provider,
)


def trait_ids(conn: Connection, names) -> dict[str, int]:
    return name_ids(conn, t.traits, names, STANDARD_TRAITS)


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
    pt = t.provider_traits
    return sorted(conn.execute(
        sa.select(t.traits.c.name)
        .select_from(pt.join(t.traits, t.traits.c.id == pt.c.trait_id))
        .where(pt.c.resource_provider_id == provider.id)).scalars())


def set_provider_traits(conn: Connection, provider: ProviderRow, names: list[str],
                        generation: int | None, bump: bool = True) -> None:
    """Replace a provider's traits (the caller locked/bumped it, or bump=True)."""
    if generation is not None:
        check_generation(provider, generation)
    ids = trait_ids(conn, names)
    missing = sorted(set(names) - set(ids))
    if missing:
        raise errors.BadRequest("No such trait %s" % ", ".join(missing))
    replace_links(conn, t.provider_traits, "trait_id", provider.id, sorted(set(ids.values())))
    if bump:
        bump_generation(conn, provider)


GENERATION_CHANGED = ("Resource provider's generation already changed. Please update the "
                      "generation and try again.")


def replace_provider_traits(conn: Connection, uuid: str, generation: int | None,
                            names: list[str]) -> ProviderRow:
    """PUT (``generation`` given) or DELETE of a provider's traits.  As in
    OpenStack, the generation changes only when the set of traits does."""
    provider = get_provider(conn, uuid, lock=True)
    if generation is not None and generation != provider.generation:
        raise errors.Conflict(GENERATION_CHANGED, code=errors.CONCURRENT_UPDATE)
    if set(names) == set(provider_traits(conn, provider)):
        return provider
    set_provider_traits(conn, provider, names, None, bump=True)
    return provider
