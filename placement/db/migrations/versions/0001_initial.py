"""Initial Placement schema.

Revision ID: 0001
Revises:
Create Date: 2026-11-25

The tables are spelled out here (not imported from ``tables.py``) so that
later changes to ``tables.py`` need their own revision.
"""
import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _stamps():
    return [
        sa.Column("created_at", sa.DateTime, server_default=sa.func.current_timestamp()),
        sa.Column("updated_at", sa.DateTime, server_default=sa.func.current_timestamp()),
    ]


def upgrade() -> None:
    op.create_table(
        "resource_classes",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(255), nullable=False, unique=True),
        *_stamps(),
    )
    op.create_table(
        "traits",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(255), nullable=False, unique=True),
        *_stamps(),
    )
    op.create_table(
        "resource_providers",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("uuid", sa.String(36), nullable=False, unique=True),
        sa.Column("name", sa.String(200), nullable=False, unique=True),
        sa.Column("generation", sa.Integer, nullable=False, server_default="0"),
        sa.Column("root_provider_id", sa.Integer, nullable=True, index=True),
        sa.Column("parent_provider_id", sa.Integer, nullable=True, index=True),
        *_stamps(),
    )
    op.create_table(
        "inventories",
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
        *_stamps(),
        sa.UniqueConstraint("resource_provider_id", "resource_class_id",
                            name="uniq_inventories0rp0rc"),
    )
    op.create_table(
        "consumers",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("uuid", sa.String(36), nullable=False, unique=True),
        sa.Column("project_id", sa.String(255), nullable=False, index=True),
        sa.Column("user_id", sa.String(255), nullable=False),
        sa.Column("consumer_type", sa.String(255), nullable=True),
        sa.Column("generation", sa.Integer, nullable=False, server_default="0"),
        *_stamps(),
    )
    op.create_table(
        "allocations",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("resource_provider_id", sa.Integer, nullable=False),
        sa.Column("consumer_id", sa.String(36), nullable=False, index=True),
        sa.Column("resource_class_id", sa.Integer, nullable=False),
        sa.Column("used", sa.Integer, nullable=False),
        *_stamps(),
        sa.Index("allocations_rp_rc_idx", "resource_provider_id", "resource_class_id"),
    )
    op.create_table(
        "placement_aggregates",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("uuid", sa.String(36), nullable=False, unique=True),
    )
    op.create_table(
        "resource_provider_aggregates",
        sa.Column("resource_provider_id", sa.Integer,
                  sa.ForeignKey("resource_providers.id", ondelete="CASCADE"),
                  primary_key=True),
        sa.Column("aggregate_id", sa.Integer, primary_key=True, index=True),
    )
    op.create_table(
        "resource_provider_traits",
        sa.Column("resource_provider_id", sa.Integer,
                  sa.ForeignKey("resource_providers.id", ondelete="CASCADE"),
                  primary_key=True),
        sa.Column("trait_id", sa.Integer, primary_key=True, index=True),
    )
    op.create_table(
        "placement_state",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("counter", sa.BigInteger, nullable=False),
    )
    op.execute("INSERT INTO placement_state (id, counter) VALUES (1, 0)")


def downgrade() -> None:
    for name in ("placement_state", "resource_provider_traits",
                 "resource_provider_aggregates", "placement_aggregates",
                 "allocations", "consumers", "inventories",
                 "resource_providers", "traits", "resource_classes"):
        op.drop_table(name)
