"""Alembic environment for the Placement schema.

Run through ``kova.placement.db.engine.upgrade`` (``kova placement db
upgrade``); the caller passes an open connection in ``config.attributes``.
"""

from __future__ import annotations

from alembic import context

from kova.placement.db.tables import metadata

config = context.config


def run() -> None:
    connection = config.attributes.get("connection")
    if connection is None:
        from sqlalchemy import create_engine

        engine = create_engine(config.get_main_option("sqlalchemy.url"))
        with engine.begin() as conn:
            context.configure(connection=conn, target_metadata=metadata)
            with context.begin_transaction():
                context.run_migrations()
        engine.dispose()
        return
    context.configure(connection=connection, target_metadata=metadata)
    with context.begin_transaction():
        context.run_migrations()


run()
