"""Composite search parameter index (token paired with token / quantity / date / string).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-21
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    ordered = sa.Text(collation="C") if op.get_bind().dialect.name == "postgresql" else sa.Text()
    op.create_table(
        "search_composite",
        sa.Column("resource_type", sa.String(64), nullable=False),
        sa.Column("resource_id", sa.String(64), nullable=False),
        sa.Column("param", sa.String(64), nullable=False),
        sa.Column("c1_system", sa.Text, nullable=True),
        sa.Column("c1_code", sa.Text, nullable=True),
        sa.Column("c2_system", sa.Text, nullable=True),
        sa.Column("c2_code", sa.Text, nullable=True),
        sa.Column("c2_value", sa.Numeric, nullable=True),
        sa.Column("c2_unit", sa.Text, nullable=True),
        sa.Column("c2_low", sa.BigInteger, nullable=True),
        sa.Column("c2_high", sa.BigInteger, nullable=True),
        sa.Column("c2_text", ordered, nullable=True),
    )
    op.create_index(
        "ix_composite_lookup", "search_composite", ["resource_type", "param", "c1_code", "c2_code"]
    )
    op.create_index("ix_composite_owner", "search_composite", ["resource_type", "resource_id"])


def downgrade() -> None:
    op.drop_table("search_composite")
