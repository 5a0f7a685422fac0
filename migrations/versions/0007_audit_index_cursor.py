"""The audit trail's searchable copy is built after the fact: how far each partition is copied.

Before 0007 every audited request also wrote the AuditEvent's resource, history and index
rows (about fifty b-tree inserts), which cost a read three quarters of its throughput. Now a
request writes only its chain record; `audit/indexing.py` copies new records into the FHIR
store in batches and moves this cursor, in one transaction. Records that already existed
were copied when they were written, so every partition starts fully indexed.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-21
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "audit_indexed",
        sa.Column("partition_id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("pseq", sa.BigInteger, nullable=False),
    )
    op.execute(
        "INSERT INTO audit_indexed (partition_id, pseq) "
        "SELECT partition_id, max(pseq) FROM audit_event GROUP BY partition_id"
    )


def downgrade() -> None:
    op.drop_table("audit_indexed")
