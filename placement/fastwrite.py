"""One-statement writes for the common case, on Postgres, from the event loop.

The four writes that register a compute host (create a provider; replace its
inventory; replace its aggregates; replace its traits) are each done here as
ONE data-modifying SQL statement in autocommit mode, sent with psycopg's
asyncio connection straight from the event loop: one database round trip and
no hand-off to a worker thread, where the general path in
``kova.placement.objects`` needs BEGIN, the generation-checked provider update,
the change itself, the change-counter bump and COMMIT (4–6 round trips) in a
worker thread.

Every statement has the same shape::

    WITH <look up the named traits / aggregates / classes>,
         p AS (UPDATE resource_providers SET generation = generation + 1 ...
               WHERE uuid = ... AND generation = ... AND <precondition>
               RETURNING ...),
         <the change, reading p: it happens only if p matched>,
         c AS (UPDATE placement_state SET counter = counter + 1
               WHERE id = 1 AND EXISTS (SELECT 1 FROM p) RETURNING counter),
         i AS (INSERT INTO placement_changes SELECT c.counter, p.id FROM c, p)
    SELECT ... FROM p, c

One statement is atomic on its own.  The provider's row lock (taken by
``p``) comes before the change-counter row lock (``c`` needs ``p``'s row
first): the order every writer keeps (see ``Database.write``).

When ``p`` matches nothing — unknown provider, generation conflict, a name
that does not exist, or the precondition of the fast case does not hold
(e.g. the new inventory leaves out a class the provider has, which needs the
in-use check) — the statement changed nothing and the methods here return
None.  So does any database error.  The caller then runs the general path,
which decides again under its locks and answers with the right error: the
rules live in one place, ``kova.placement.objects``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re

import psycopg

from kova.placement.objects.common import utcnow
from kova.placement.objects.resource_provider import ProviderRow

LOG = logging.getLogger(__name__)

_TAIL = (
    "c AS (UPDATE placement_state SET counter = counter + 1 "
    "WHERE id = 1 AND EXISTS (SELECT 1 FROM p) RETURNING counter), "
    "i AS (INSERT INTO placement_changes (counter, provider_id) "
    "SELECT c.counter, p.id FROM c, p) ")

_RESULT = ("SELECT p.id, p.name, p.generation, p.parent_provider_id, p.root_provider_id, "
           "p.created_at, p.updated_at, c.counter FROM p, c")


def _bump(extra: str) -> str:
    return (
        "p AS (UPDATE resource_providers SET generation = generation + 1, "
        "updated_at = %(now)s WHERE uuid = %(uuid)s AND generation = %(gen)s" + extra +
        " RETURNING id, name, generation, parent_provider_id, root_provider_id, "
        "created_at, updated_at), ")


def _links(lookup: str, table: str, column: str, only_if_changed: bool = False) -> str:
    """Replace a provider's rows in a link table by the ids in ``k``, which
    must have found every name (``%(n)s`` distinct ones).  With
    ``only_if_changed`` the statement matches only when the set differs (an
    unchanged set keeps its generation: the general path answers it)."""
    changed = ""
    if only_if_changed:
        mine = f"FROM {table} WHERE resource_provider_id = resource_providers.id"
        changed = (f" AND ((SELECT count(*) {mine}) <> %(n)s OR EXISTS (SELECT 1 {mine} "
                   f"AND {column} NOT IN (SELECT id FROM k)))")
    return (
        f"WITH k AS ({lookup}), "
        + _bump(" AND (SELECT count(*) FROM k) = %(n)s" + changed)
        + f"d AS (DELETE FROM {table} WHERE resource_provider_id = (SELECT id FROM p) "
        f"AND {column} NOT IN (SELECT id FROM k)), "
        f"a AS (INSERT INTO {table} (resource_provider_id, {column}) "
        f"SELECT p.id, k.id FROM p, k ON CONFLICT DO NOTHING), "
        + _TAIL + _RESULT)


CREATE = (
    "WITH p AS (INSERT INTO resource_providers (id, uuid, name, generation, "
    "parent_provider_id, root_provider_id, created_at, updated_at) "
    "SELECT n.id, %(uuid)s, %(name)s, 0, NULL, n.id, %(now)s, %(now)s FROM (SELECT nextval("
    "pg_get_serial_sequence('resource_providers', 'id')) AS id) AS n RETURNING id), "
    + _TAIL + "SELECT p.id, c.counter FROM p, c")

TRAITS = _links("SELECT id FROM traits WHERE name = ANY(%(names)s::text[])",
                "resource_provider_traits", "trait_id", only_if_changed=True)

AGGREGATES = _links("SELECT id FROM placement_aggregates WHERE uuid = ANY(%(names)s::text[])",
                    "resource_provider_aggregates", "aggregate_id")

# PUT .../inventories, fast case: every class exists and no class the
# provider has now is left out (nothing is deleted, so no allocation can be
# in the way).  Classes are inserted, or updated where a field differs.
INVENTORIES = (
    "WITH x AS (SELECT rc.id AS rc, v.total, v.reserved, v.min_unit, v.max_unit, "
    "v.step_size, v.allocation_ratio AS ratio FROM jsonb_to_recordset(%(inv)s::jsonb) "
    "AS v(name text, total integer, reserved integer, min_unit integer, max_unit integer, "
    "step_size integer, allocation_ratio float8) "
    "JOIN resource_classes AS rc ON rc.name = v.name), "
    + _bump(" AND (SELECT count(*) FROM x) = %(n)s AND NOT EXISTS ("
            "SELECT 1 FROM inventories AS old "
            "WHERE old.resource_provider_id = resource_providers.id "
            "AND old.resource_class_id NOT IN (SELECT rc FROM x))")
    + "u AS (INSERT INTO inventories (resource_provider_id, resource_class_id, total, "
    "reserved, min_unit, max_unit, step_size, allocation_ratio, created_at, updated_at) "
    "SELECT p.id, x.rc, x.total, x.reserved, x.min_unit, x.max_unit, x.step_size, x.ratio, "
    "%(now)s, %(now)s FROM p, x "
    "ON CONFLICT (resource_provider_id, resource_class_id) DO UPDATE SET "
    "total = excluded.total, reserved = excluded.reserved, min_unit = excluded.min_unit, "
    "max_unit = excluded.max_unit, step_size = excluded.step_size, "
    "allocation_ratio = excluded.allocation_ratio, updated_at = excluded.updated_at "
    "WHERE (inventories.total, inventories.reserved, inventories.min_unit, "
    "inventories.max_unit, inventories.step_size, inventories.allocation_ratio) "
    "IS DISTINCT FROM (excluded.total, excluded.reserved, excluded.min_unit, "
    "excluded.max_unit, excluded.step_size, excluded.allocation_ratio)), "
    + _TAIL + _RESULT)

PRUNE_DELETE = "DELETE FROM placement_changes WHERE counter <= %(h)s"
PRUNE_HORIZON = "UPDATE placement_state SET counter = %(h)s WHERE id = 2 AND counter < %(h)s"


class Statement:
    """A statement written with ``%(name)s`` placeholders, turned once into
    PostgreSQL's ``$n`` form for psycopg's raw cursor (no per-call parsing)."""

    def __init__(self, sql: str) -> None:
        self.names: list[str] = []

        def number(m: re.Match) -> str:
            if m.group(1) not in self.names:
                self.names.append(m.group(1))
            return f"${self.names.index(m.group(1)) + 1}"

        self.sql = re.sub(r"%\((\w+)\)s", number, sql)

    def params(self, values: dict) -> list:
        return [values[n] for n in self.names]


CREATE, TRAITS, AGGREGATES, INVENTORIES, PRUNE_DELETE, PRUNE_HORIZON = map(
    Statement, (CREATE, TRAITS, AGGREGATES, INVENTORIES, PRUNE_DELETE, PRUNE_HORIZON))


def conninfo(sqlalchemy_url) -> str:
    """libpq connection string for a ``postgresql+psycopg://`` SQLAlchemy URL."""
    url = sqlalchemy_url.set(drivername="postgresql")
    return url.render_as_string(hide_password=False)


class FastWriter:
    """A few autocommit asyncio connections of one worker process.

    Connections belong to the event loop that opened them; when the app is
    driven from another loop (the test client starts one per client), the
    old ones are closed and new ones opened.
    """

    def __init__(self, db, max_connections: int = 4) -> None:
        self.db = db
        self.dsn = conninfo(db.engine.url)
        self.max_connections = max_connections
        self._loop: asyncio.AbstractEventLoop | None = None
        self._idle: list[psycopg.AsyncConnection] = []
        self._slots: asyncio.Semaphore | None = None
        self.statements = 0   # statements that did the write (for tests/metrics)
        self.fallbacks = 0    # statements that left it to the general path

    # ------------------------------------------------------------ connections
    def _bind_loop(self) -> None:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self.close()
            self._loop = loop
            self._slots = asyncio.Semaphore(self.max_connections)

    async def _execute(self, stmt: Statement, params: dict):
        """Run one statement; its first row, or None on a database error."""
        self._bind_loop()
        async with self._slots:
            conn = self._idle.pop() if self._idle else None
            try:
                if conn is None:
                    conn = await psycopg.AsyncConnection.connect(
                        self.dsn, autocommit=True, cursor_factory=psycopg.AsyncRawCursor)
                cur = await conn.execute(stmt.sql, stmt.params(params), prepare=True)
                row = await cur.fetchone()
            except psycopg.Error as exc:
                LOG.debug("fast write fell back after %s: %s", type(exc).__name__, exc)
                if conn is not None and (conn.closed or conn.broken):
                    conn = None
                if conn is not None:
                    self._idle.append(conn)
                return None
            except BaseException:  # cancelled mid-statement: the connection is unusable
                if conn is not None:
                    conn.pgconn.finish()
                raise
            self._idle.append(conn)
            if row is not None and self.db._should_prune(row[-1]):
                await self._prune(row[-1])
            return row

    async def _prune(self, counter: int) -> None:
        conn = self._idle.pop()
        try:
            async with conn.transaction():
                h = counter - self.db.KEEP_CHANGES
                for stmt in (PRUNE_DELETE, PRUNE_HORIZON):
                    await conn.execute(stmt.sql, stmt.params({"h": h}))
        except psycopg.Error as exc:  # the next prune catches up
            LOG.warning("pruning the change log failed: %s", exc)
        if not (conn.closed or conn.broken):
            self._idle.append(conn)

    def close(self) -> None:
        """Close the idle connections (also from outside their event loop)."""
        idle, self._idle = self._idle, []
        for conn in idle:
            try:
                conn.pgconn.finish()
            except Exception:  # noqa: BLE001 - closing anyway
                pass

    # ------------------------------------------------------------ writes
    def _done(self, row):
        if row is None:
            self.fallbacks += 1
        else:
            self.statements += 1
        return row

    @staticmethod
    def _provider(row, uuid: str) -> ProviderRow:
        pid, name, generation, parent_id, root_id, created, updated = row[:7]
        return ProviderRow(pid, uuid, name, generation, parent_id, root_id or pid,
                                 None, None, updated, created)

    async def create_provider(self, name: str, uuid: str) -> ProviderRow | None:
        now = utcnow()
        row = self._done(await self._execute(CREATE, {"uuid": uuid, "name": name, "now": now}))
        if row is None:
            return None
        return ProviderRow(row[0], uuid, name, 0, None, row[0], None, uuid, now, now)

    async def _links(self, sql: str, uuid: str, generation: int, names: list[str]):
        distinct = sorted(set(names))
        row = self._done(await self._execute(sql, {
            "uuid": uuid, "gen": generation, "now": utcnow(), "names": distinct,
            "n": len(distinct)}))
        return self._provider(row, uuid) if row is not None else None

    async def set_traits(self, uuid: str, generation: int, names: list[str]):
        return await self._links(TRAITS, uuid, generation, names)

    async def set_aggregates(self, uuid: str, generation: int, uuids: list[str]):
        return await self._links(AGGREGATES, uuid, generation, uuids)

    async def set_inventories(self, uuid: str, generation: int, records: dict[str, dict]):
        rows = [dict(rec, name=name) for name, rec in records.items()]
        row = self._done(await self._execute(INVENTORIES, {
            "uuid": uuid, "gen": generation, "now": utcnow(),
            "inv": json.dumps(rows), "n": len(rows)}))
        return self._provider(row, uuid) if row is not None else None

