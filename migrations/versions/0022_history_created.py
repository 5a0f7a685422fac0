"""Whether each history row created its resource, stored when it is written.

A PUT that brings back a deleted resource is a create (201), but history could only guess
from the row alone (POST, or version 1) and said 200; telling it from the previous version
at read time is a join that cost history 2-4x. resource_history.created is set by every
write from now on (true for a POST, an update-as-create and a PUT after a delete).

Rows written before stay NULL: history answers them as it did before (201 for a POST or a
version 1, else 200), so only a resurrection written before this migration still shows 200.

Revision ID: 0022
Revises: 0021
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

revision = "0022"
down_revision = "0021"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("resource_history", sa.Column("created", sa.Boolean, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("resource_history") as batch:
        batch.drop_column("created")
