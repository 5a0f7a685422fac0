"""An EHR launch may be bound to the client it was made for.

The EHR launches one app (its launch_uri) with a `launch` value; bound, that value gives its
patient context to that client only: another app that learns it gets "unknown launch", and
the launch stays for the right one. Launches made without a client (the column is NULL) work
for any client, as before.

Revision ID: 0017
Revises: 0016
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("auth_launch", sa.Column("client_id", sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("auth_launch") as batch:
        batch.drop_column("client_id")
