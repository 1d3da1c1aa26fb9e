"""The local Postgres 15 server for development and tests.

``ensure_postgres()`` runs ``hack/start-postgres.sh`` (creates and starts the
``15 main`` cluster without systemd, and the superuser role) and returns the
server URL, ``postgresql://root:kova@127.0.0.1:5432/postgres`` by default
(``KOVA_PG_PORT``, ``KOVA_PG_USER`` and ``KOVA_PG_PASSWORD`` change it).  The
URL is accepted by psycopg 3 as is; ``sqlalchemy_url()`` turns it into the
``postgresql+psycopg://`` form SQLAlchemy wants.

``create_database()`` / ``drop_database()`` manage throwaway databases on that
server, for example one per test module.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from kova.dev.paths import run_hack

_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]{0,62}$")


def ensure_postgres() -> str:
    """Make sure the local Postgres server runs; return its URL (database ``postgres``)."""
    url = run_hack("start-postgres.sh")
    if not url.startswith("postgresql://"):
        raise RuntimeError(f"hack/start-postgres.sh printed no server URL (last line: {url!r})")
    return url


def database_url(server_url: str, name: str) -> str:
    """The URL of database ``name`` on the server of ``server_url``."""
    parts = urlsplit(server_url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))


def sqlalchemy_url(url: str) -> str:
    """``postgresql://…`` -> ``postgresql+psycopg://…`` (SQLAlchemy with psycopg 3)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ValueError(f"not a URL: {url!r}")
    if scheme in ("postgresql", "postgres"):
        scheme = "postgresql+psycopg"
    return f"{scheme}://{rest}"


def _check_name(name: str) -> str:
    if not _NAME_RE.match(name):
        raise ValueError(f"invalid database name {name!r}")
    return name


def _admin_connect(server_url: str | None) -> Any:
    import psycopg

    return psycopg.connect(server_url or ensure_postgres(), autocommit=True)


def create_database(name: str, server_url: str | None = None) -> str:
    """Create database ``name`` (which must not exist) and return its URL."""
    from psycopg import sql

    server_url = server_url or ensure_postgres()
    with _admin_connect(server_url) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(_check_name(name))))
    return database_url(server_url, name)


def drop_database(name: str, server_url: str | None = None) -> None:
    """Drop database ``name`` if it exists, terminating its connections first."""
    from psycopg import sql

    with _admin_connect(server_url) as conn:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = %s AND pid <> pg_backend_pid()",
            (_check_name(name),),
        )
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
