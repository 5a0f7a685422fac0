"""Quantities in canonical UCUM units, so that a search in one unit finds values in another.

A Quantity with the system http://unitsofmeasure.org and a code that converts by a factor
(app/fhir/ucum.py) is indexed also as its value in UCUM base units and that unit's code
(`5.4 mg` is `0.0054 g`, `1 [lb_av]` `453.59237 g`): search_quantity.canonical_value and
canonical_code, and the same two for a composite's quantity (c2_canonical_*). Columns, not
extra rows: `_sort` (min/max of value), `:missing` and every search without the UCUM system
read the rows as they were. ix_quantity_canonical makes a search in UCUM units the index
range scan that ix_quantity_lookup makes of one in the stored unit.

Rows written before stay without the canonical form (NULL) until `medisentinel reindex`.

Revision ID: 0019
Revises: 0018
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("search_quantity", sa.Column("canonical_value", sa.Numeric, nullable=True))
    op.add_column("search_quantity", sa.Column("canonical_code", sa.Text, nullable=True))
    op.create_index(
        "ix_quantity_canonical",
        "search_quantity",
        ["resource_type", "param", "canonical_code", "canonical_value"],
    )
    op.add_column("search_composite", sa.Column("c2_canonical_value", sa.Numeric, nullable=True))
    op.add_column("search_composite", sa.Column("c2_canonical_code", sa.Text, nullable=True))


def downgrade() -> None:
    op.drop_index("ix_quantity_canonical", table_name="search_quantity")
    with op.batch_alter_table("search_quantity") as batch:
        batch.drop_column("canonical_code")
        batch.drop_column("canonical_value")
    with op.batch_alter_table("search_composite") as batch:
        batch.drop_column("c2_canonical_code")
        batch.drop_column("c2_canonical_value")
