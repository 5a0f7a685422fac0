"""Failed sign-ins, counted per username given, so that password guessing is throttled.

Revision ID: 0018
Revises: 0017
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "auth_login_failure",
        sa.Column("username", sa.String(255), nullable=False),
        sa.Column("at", sa.BigInteger, nullable=False),  # epoch microseconds
    )
    op.create_index("ix_auth_login_failure_user_at", "auth_login_failure", ["username", "at"])
    op.create_index("ix_auth_login_failure_at", "auth_login_failure", ["at"])


def downgrade() -> None:
    op.drop_table("auth_login_failure")
