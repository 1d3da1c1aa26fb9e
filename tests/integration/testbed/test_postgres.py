"""The local Postgres server, through psycopg 3 and SQLAlchemy 2."""

from __future__ import annotations

import psycopg
import sqlalchemy as sa

from kova.dev.postgres import create_database, drop_database, sqlalchemy_url


def test_psycopg_roundtrip(pg_database: str) -> None:
    with psycopg.connect(pg_database) as conn:
        conn.execute("CREATE TABLE psy (id serial PRIMARY KEY, name text NOT NULL)")
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO psy (name) VALUES (%s)", [("a",), ("b",)])
        rows = conn.execute("SELECT name FROM psy ORDER BY id").fetchall()
        assert rows == [("a",), ("b",)]
        assert conn.execute("SELECT current_database()").fetchone()[0] in pg_database


def test_sqlalchemy_core_roundtrip(pg_database: str) -> None:
    engine = sa.create_engine(sqlalchemy_url(pg_database))
    meta = sa.MetaData()
    things = sa.Table(
        "things",
        meta,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(64), nullable=False, unique=True),
    )
    try:
        meta.create_all(engine)
        with engine.begin() as conn:
            conn.execute(things.insert(), [{"name": "x"}, {"name": "y"}])
        with engine.connect() as conn:
            names = conn.execute(sa.select(things.c.name).order_by(things.c.id)).scalars().all()
        assert names == ["x", "y"]
        assert engine.dialect.driver == "psycopg"
    finally:
        engine.dispose()


def test_drop_database_terminates_connections(postgres_server_url: str) -> None:
    url = create_database("kova_test_drop_me", postgres_server_url)
    conn = psycopg.connect(url)
    try:
        drop_database("kova_test_drop_me", postgres_server_url)
        with psycopg.connect(postgres_server_url) as admin:
            exists = admin.execute(
                "SELECT 1 FROM pg_database WHERE datname = 'kova_test_drop_me'"
            ).fetchone()
        assert exists is None
    finally:
        conn.close()
    # Dropping again is a no-op.
    drop_database("kova_test_drop_me", postgres_server_url)
