"""Change log for incremental refresh of the in-memory provider summaries.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""
import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "placement_changes",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("counter", sa.BigInteger, nullable=False, index=True),
        sa.Column("provider_id", sa.Integer, nullable=False),
    )
    # row 2 of placement_state: changes with counter <= this were pruned
    op.execute("INSERT INTO placement_state (id, counter) VALUES (2, 0)")


def downgrade() -> None:
    op.execute("DELETE FROM placement_state WHERE id = 2")
    op.drop_table("placement_changes")
