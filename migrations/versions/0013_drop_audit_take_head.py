"""PostgreSQL: `audit_take_head` dropped; every record goes to a partition a process holds.

Writes' records, too, are now chained in Python onto partitions their process holds (a pool
of write partitions, audit/appender.py) and sent with the write's COMMIT in one statement.
Taking a shared head in SQL (this function) and linking in SQL cost a write about 220 µs of
PostgreSQL time for its record. Shared partitions made before stay in the chain (and are
verified) but receive no more records on PostgreSQL; SQLite still appends to one.

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-22
"""

import importlib

from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION audit_take_head(bigint)")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        previous = importlib.import_module("migrations.versions.0012_audit_dedicated_partitions")
        op.execute(previous.TAKE_HEAD)
