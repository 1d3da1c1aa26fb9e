"""The Alembic migrations produce exactly the schema of ``tables.py``."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from kova.placement.db.engine import normalise_url, upgrade
from kova.placement.db.tables import metadata


def test_migrations_match_tables(backend_url):
    upgrade(backend_url)
    upgrade(backend_url)  # idempotent
    engine = sa.create_engine(normalise_url(backend_url))
    try:
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), metadata)
            assert diff == []
            counters = dict(conn.execute(sa.text("SELECT id, counter FROM placement_state")).all())
            assert set(counters) == {1, 2}
    finally:
        engine.dispose()


@pytest.mark.parametrize("url", ["postgres://u@h/db", "postgresql://u@h/db"])
def test_url_normalisation(url):
    assert normalise_url(url) == "postgresql+psycopg://u@h/db"
