"""The Placement schema as SQLAlchemy Core tables.

The tables hold only what Placement is the source of truth for: providers
and their trees, inventories, allocations, consumers, traits, aggregates and
resource classes.  ``placement_state`` is a single row whose ``counter`` is
bumped by every write transaction; readers compare it with the counter their
in-memory summaries were built at (see ``kova.placement.cache``).
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

_now = sa.func.current_timestamp

resource_classes = sa.Table(
    "resource_classes", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(255), nullable=False, unique=True),
    sa.Column("created_at", sa.DateTime, server_default=_now()),
    sa.Column("updated_at", sa.DateTime, server_default=_now()),
)

traits = sa.Table(
    "traits", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(255), nullable=False, unique=True),
    sa.Column("created_at", sa.DateTime, server_default=_now()),
    sa.Column("updated_at", sa.DateTime, server_default=_now()),
)

resource_providers = sa.Table(
    "resource_providers", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("uuid", sa.String(36), nullable=False, unique=True),
    sa.Column("name", sa.String(200), nullable=False, unique=True),
    sa.Column("generation", sa.Integer, nullable=False, server_default="0"),
    sa.Column("root_provider_id", sa.Integer, nullable=True, index=True),
    sa.Column("parent_provider_id", sa.Integer, nullable=True, index=True),
    sa.Column("created_at", sa.DateTime, server_default=_now()),
    sa.Column("updated_at", sa.DateTime, server_default=_now()),
)

inventories = sa.Table(
    "inventories", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("resource_provider_id", sa.Integer,
              sa.ForeignKey("resource_providers.id", ondelete="CASCADE"),
              nullable=False),
    sa.Column("resource_class_id", sa.Integer, nullable=False),
    sa.Column("total", sa.Integer, nullable=False),
    sa.Column("reserved", sa.Integer, nullable=False),
    sa.Column("min_unit", sa.Integer, nullable=False),
    sa.Column("max_unit", sa.Integer, nullable=False),
    sa.Column("step_size", sa.Integer, nullable=False),
    sa.Column("allocation_ratio", sa.Float, nullable=False),
    sa.Column("created_at", sa.DateTime, server_default=_now()),
    sa.Column("updated_at", sa.DateTime, server_default=_now()),
    sa.UniqueConstraint("resource_provider_id", "resource_class_id",
                        name="uniq_inventories0rp0rc"),
)

consumers = sa.Table(
    "consumers", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("uuid", sa.String(36), nullable=False, unique=True),
    sa.Column("project_id", sa.String(255), nullable=False, index=True),
    sa.Column("user_id", sa.String(255), nullable=False),
    sa.Column("consumer_type", sa.String(255), nullable=True),
    sa.Column("generation", sa.Integer, nullable=False, server_default="0"),
    sa.Column("created_at", sa.DateTime, server_default=_now()),
    sa.Column("updated_at", sa.DateTime, server_default=_now()),
)

allocations = sa.Table(
    "allocations", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("resource_provider_id", sa.Integer, nullable=False),
    sa.Column("consumer_id", sa.String(36), nullable=False, index=True),
    sa.Column("resource_class_id", sa.Integer, nullable=False),
    sa.Column("used", sa.Integer, nullable=False),
    sa.Column("created_at", sa.DateTime, server_default=_now()),
    sa.Column("updated_at", sa.DateTime, server_default=_now()),
    sa.Index("allocations_rp_rc_idx", "resource_provider_id", "resource_class_id"),
)

aggregates = sa.Table(
    "placement_aggregates", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("uuid", sa.String(36), nullable=False, unique=True),
)

provider_aggregates = sa.Table(
    "resource_provider_aggregates", metadata,
    sa.Column("resource_provider_id", sa.Integer,
              sa.ForeignKey("resource_providers.id", ondelete="CASCADE"),
              primary_key=True),
    sa.Column("aggregate_id", sa.Integer, primary_key=True, index=True),
)

provider_traits = sa.Table(
    "resource_provider_traits", metadata,
    sa.Column("resource_provider_id", sa.Integer,
              sa.ForeignKey("resource_providers.id", ondelete="CASCADE"),
              primary_key=True),
    sa.Column("trait_id", sa.Integer, primary_key=True, index=True),
)

state = sa.Table(
    "placement_state", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("counter", sa.BigInteger, nullable=False),
)

# Which providers each write transaction changed, by the counter value that
# transaction set (provider_id 0: "everything", e.g. a trait was deleted).
# Readers refresh only those providers; old rows are pruned and the prune
# horizon is kept in placement_state row id=2.
changes = sa.Table(
    "placement_changes", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("counter", sa.BigInteger, nullable=False, index=True),
    sa.Column("provider_id", sa.Integer, nullable=False),
)
