"""Owner indexes of the search tables also cover the parameter.

A criterion checked per candidate resource (a correlated EXISTS) looks up
(resource_type, resource_id, param): with `param` in the index the lookup is exact, and
SQLite's planner (which has no statistics by default) then prefers it over a range scan of
the value index.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-21
"""

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

TABLES = ("token", "string", "reference", "date", "number", "quantity", "uri", "composite")


def upgrade() -> None:
    for short in TABLES:
        op.drop_index(f"ix_{short}_owner", table_name=f"search_{short}")
        op.create_index(
            f"ix_{short}_owner", f"search_{short}", ["resource_type", "resource_id", "param"]
        )


def downgrade() -> None:
    for short in TABLES:
        op.drop_index(f"ix_{short}_owner", table_name=f"search_{short}")
        op.create_index(f"ix_{short}_owner", f"search_{short}", ["resource_type", "resource_id"])
