"""An index for quantity searches by unit text: `value-quantity=5.4||mg`.

Without a system, a quantity search matches the code or the unit text (Quantity.unit):
`code = 'mg' OR unit = 'mg'`. No index had the unit, so the database read every value of the
parameter (on PostgreSQL an index scan of ix_quantity_lookup on type and parameter alone,
comparing value, code and unit in each entry). ix_quantity_unit (type, parameter, unit, value)
makes the unit branch a range scan as ix_quantity_lookup makes the code branch one: a
BitmapOr on PostgreSQL, a MULTI-INDEX OR on SQLite.

Partial: only rows whose unit text is not their code (or that have no code). A row whose unit
is its code is found by the code branch already, and most UCUM quantities are written so
(`"unit": "mg", "code": "mg"`): their writes do not pay for this index. The search states the
same condition (criteria.UNIT_NOT_CODE), which is what lets either database use the index.

Revision ID: 0021
Revises: 0020
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

revision = "0021"
down_revision = "0020"
branch_labels = None
depends_on = None

# as app/fhir/tables.py QUANTITY_UNIT_ROWS
UNIT_ROWS = "unit IS NOT NULL AND (code IS NULL OR code <> unit)"


def upgrade() -> None:
    op.create_index(
        "ix_quantity_unit",
        "search_quantity",
        ["resource_type", "param", "unit", "value"],
        postgresql_where=sa.text(UNIT_ROWS),
        sqlite_where=sa.text(UNIT_ROWS),
    )


def downgrade() -> None:
    op.drop_index("ix_quantity_unit", table_name="search_quantity")
