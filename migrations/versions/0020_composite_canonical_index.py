"""An index for composite searches whose quantity is in UCUM units.

Migration 0019 gave a composite's quantity its canonical form (c2_canonical_code,
c2_canonical_value) but no index: `component-code-value-quantity=8480-6$gt16|<ucum>|kPa` used
ix_composite_lookup up to the first component's code and then read every row of that code to
compare the canonical columns (or, on PostgreSQL, walked the owner index of the whole
parameter). ix_composite_canonical is that search's range scan: type, parameter, first code,
canonical code, canonical value.

Partial (only rows with a canonical form): token, date and string composites, and quantities
that do not convert, never need it, so their writes do not pay for it. A search in UCUM units
compares c2_canonical_code with `=`, which implies the index's condition on either database.

Revision ID: 0020
Revises: 0019
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None

CANONICAL_ROWS = "c2_canonical_code IS NOT NULL"


def upgrade() -> None:
    op.create_index(
        "ix_composite_canonical",
        "search_composite",
        ["resource_type", "param", "c1_code", "c2_canonical_code", "c2_canonical_value"],
        postgresql_where=sa.text(CANONICAL_ROWS),
        sqlite_where=sa.text(CANONICAL_ROWS),
    )


def downgrade() -> None:
    op.drop_index("ix_composite_canonical", table_name="search_composite")
