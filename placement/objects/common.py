"""Names and helpers shared by the storage modules."""

from __future__ import annotations

import datetime

import os_resource_classes
import os_traits
import sqlalchemy as sa
from sqlalchemy.engine import Connection

STANDARD_RCS = frozenset(os_resource_classes.STANDARDS)
STANDARD_TRAITS = frozenset(os_traits.get_traits())
MAX_INT = 2147483647


def utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)


def insert_ignore(conn: Connection, table, rows: list[dict]) -> None:
    """INSERT the rows, skipping those that violate a unique constraint."""
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    elif conn.dialect.name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    else:  # pragma: no cover
        conn.execute(sa.insert(table), rows)
        return
    conn.execute(insert(table).on_conflict_do_nothing(), rows)


def replace_links(conn: Connection, table, column: str, provider_id: int,
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


# Standard classes and traits are never deleted or renamed: their ids are
# cached per database URL.  Custom names are always looked up.
_STANDARD_IDS: dict[tuple[str, str], dict[str, int]] = {}


def name_ids(conn: Connection, table, names, standard: frozenset) -> dict[str, int]:
    """{name: id} for the names that exist in ``table`` (classes or traits)."""
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
