"""Engines, transactions and migrations for Placement's database.

``Database.read()`` and ``Database.write()`` are the only ways handlers touch
the database.  On SQLite a write transaction starts with ``BEGIN IMMEDIATE``
so writers serialise on the database lock instead of failing half-way; on
Postgres writes take row locks (``SELECT ... FOR UPDATE``) on the providers
they change, and a deadlock or serialisation failure is retried.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from pathlib import Path
from typing import Iterator

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine

from kova.placement.db import tables as t

LOG = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


def default_database_url() -> str:
    state = Path(os.environ.get("KOVA_STATE",
                                Path.home() / ".local" / "state" / "kova"))
    return f"sqlite:///{state / 'placement.db'}"


def normalise_url(url: str) -> str:
    """Accept ``postgresql://`` and ``postgres://`` as psycopg 3 URLs."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://"):]
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://"):]
    return url


def make_engine(url: str, pool_size: int = 10) -> Engine:
    url = normalise_url(url)
    if url.startswith("sqlite"):
        path = url.split("///", 1)[1] if "///" in url else ""
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(
            url, connect_args={"check_same_thread": False, "timeout": 30},
            pool_size=pool_size, max_overflow=10)

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn, _record):  # pragma: no cover - trivial
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn):
            if conn.get_execution_options().get("kova_write"):
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            else:
                conn.exec_driver_sql("BEGIN")

        return engine
    # pool_pre_ping: a pooled connection that died with a database restart
    # is replaced at checkout instead of failing the request that drew it.
    return sa.create_engine(url, pool_size=pool_size, max_overflow=20,
                            pool_recycle=1800, pool_pre_ping=True)


def _is_retryable(exc: Exception) -> bool:
    orig = getattr(exc, "orig", None)
    sqlstate = getattr(orig, "sqlstate", None)
    if sqlstate in ("40001", "40P01"):  # serialization failure, deadlock
        return True
    return "database is locked" in str(exc)


_PG_FINISH_SQL = (
    "WITH c AS (UPDATE placement_state SET counter = counter + 1 "
    "WHERE id = 1 RETURNING counter), "
    "i AS (INSERT INTO placement_changes (counter, provider_id) "
    "SELECT c.counter, p FROM c, unnest(CAST(:ids AS integer[])) AS p) "
    "SELECT counter FROM c")
_PG_FINISH = sa.text(_PG_FINISH_SQL)


class Database:
    """A SQLAlchemy engine plus Placement's transaction conventions."""

    def __init__(self, url: str, pool_size: int = 10) -> None:
        self.url = normalise_url(url)
        self.engine = make_engine(self.url, pool_size=pool_size)
        self.is_sqlite = self.engine.dialect.name == "sqlite"
        self.is_postgres = self.engine.dialect.name == "postgresql"
        self.on_dispose: list = []  # callables run by dispose()

    @contextlib.contextmanager
    def read(self) -> Iterator[Connection]:
        with self.engine.connect() as conn:
            with conn.begin():
                yield conn

    @contextlib.contextmanager
    def write(self) -> Iterator[Connection]:
        """One short write transaction that bumps the change counter."""
        with self.engine.connect() as conn:
            if self.is_sqlite:
                conn = conn.execution_options(kova_write=True)
            with conn.begin():
                conn.info["kova_touched"] = set()
                conn.info.pop("kova_final", None)
                yield conn
                self._finish_write(conn)

    PRUNE_EVERY = 500
    KEEP_CHANGES = 5000

    def _should_prune(self, counter: int) -> bool:
        return counter % self.PRUNE_EVERY == 0 and counter > self.KEEP_CHANGES

    def _prune(self, conn: Connection, counter: int) -> None:
        horizon = counter - self.KEEP_CHANGES
        conn.execute(sa.delete(t.changes).where(t.changes.c.counter <= horizon))
        # Prunes may commit out of order (fastwrite prunes after its statement):
        # the horizon only moves forward.
        conn.execute(sa.update(t.state).where(t.state.c.id == 2, t.state.c.counter < horizon)
                     .values(counter=horizon))

    def _finish_write(self, conn: Connection) -> None:
        """Bump the change counter (the last lock a writer takes) and log
        which providers changed, in one statement on Postgres."""
        touched = sorted(conn.info.get("kova_touched") or ())
        if self.is_postgres:
            final = conn.info.pop("kova_final", None)
            if final:
                # statements deferred to ride on this one (objects.common.replace_links)
                params = {"ids": touched}
                for _sql, p in final:
                    params.update(p)
                sql = _PG_FINISH_SQL.replace(
                    "WITH ", "WITH " + ", ".join(f for f, _p in final) + ", ", 1)
                counter = conn.execute(sa.text(sql), params).scalar_one()
            else:
                counter = conn.execute(_PG_FINISH, {"ids": touched}).scalar_one()
        else:
            counter = conn.execute(
                sa.update(t.state).where(t.state.c.id == 1)
                .values(counter=t.state.c.counter + 1).returning(t.state.c.counter)
            ).scalar_one()
            if touched:
                conn.execute(sa.insert(t.changes),
                             [{"counter": counter, "provider_id": p} for p in touched])
        if self._should_prune(counter):
            self._prune(conn, counter)

    def run_write(self, fn, *args, attempts: int = 5, conflict=None, **kwargs):
        """Run ``fn(conn, ...)`` in a write transaction, retrying deadlocks.

        A unique-constraint violation (a racing writer inserted the same row)
        becomes ``conflict`` or a 409 ``placement.concurrent_update``.
        """
        from kova.placement import errors

        for attempt in range(attempts):
            try:
                with self.write() as conn:
                    return fn(conn, *args, **kwargs)
            except sa.exc.IntegrityError:
                if callable(conflict):
                    raise conflict() from None
                if conflict is not None:
                    raise conflict from None
                raise errors.Conflict(
                    "Another request changed the same data; please retry.",
                    code=errors.CONCURRENT_UPDATE) from None
            except sa.exc.DBAPIError as exc:
                if attempt + 1 < attempts and _is_retryable(exc):
                    LOG.info("retrying write after %s", exc.__class__.__name__)
                    time.sleep(0.01 * (attempt + 1))
                    continue
                raise

    def counter(self, conn: Connection | None = None) -> int:
        stmt = sa.select(t.state.c.counter).where(t.state.c.id == 1)
        if conn is not None:
            return conn.execute(stmt).scalar_one()
        with self.engine.connect() as c:
            return c.execute(stmt).scalar_one()

    def dispose(self) -> None:
        for close in self.on_dispose:
            close()
        self.engine.dispose()


def touch(conn: Connection, *provider_ids: int) -> None:
    """Record that this write transaction changed these providers."""
    conn.info.setdefault("kova_touched", set()).update(provider_ids)


def touch_all(conn: Connection) -> None:
    """Record a change that invalidates every provider summary."""
    conn.info.setdefault("kova_touched", set()).add(0)


def alembic_config(url: str):
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", normalise_url(url).replace("%", "%%"))
    return cfg


def upgrade(url: str, revision: str = "head") -> None:
    """Bring the schema to ``revision`` and seed standard classes/traits."""
    from alembic import command

    db = Database(url, pool_size=1)
    try:
        cfg = alembic_config(url)
        with db.engine.begin() as conn:
            if db.is_postgres:
                # Several workers may start at once: one migrates at a time.
                conn.exec_driver_sql("SELECT pg_advisory_xact_lock(424242)")
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, revision)
        sync_standard_names(db)
    finally:
        db.dispose()


def sync_standard_names(db: Database) -> None:
    """Insert the os-resource-classes and os-traits names that are missing."""
    import os_resource_classes
    import os_traits

    def _sync(conn: Connection) -> None:
        have_rc = set(conn.execute(sa.select(t.resource_classes.c.name)).scalars())
        missing = [n for n in os_resource_classes.STANDARDS if n not in have_rc]
        if missing:
            conn.execute(sa.insert(t.resource_classes), [{"name": n} for n in missing])
        have_tr = set(conn.execute(sa.select(t.traits.c.name)).scalars())
        missing = [n for n in os_traits.get_traits() if n not in have_tr]
        if missing:
            conn.execute(sa.insert(t.traits), [{"name": n} for n in missing])
        touch_all(conn)

    db.run_write(_sync)
