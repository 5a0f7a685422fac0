"""Audit partitions a process appends to on its own (`audit_partition.dedicated`).

Reads on PostgreSQL hand their records to their process's appender (audit/appender.py),
which writes them in batches onto a partition it holds for as long as it runs. Writers'
transactions keep taking any free shared head with `audit_take_head`, which from now on
skips dedicated partitions, so a dedicated chain has one writer and its head can live in
that writer's memory.

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-21
"""

import importlib

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

TAKE_HEAD = """
CREATE OR REPLACE FUNCTION audit_take_head(n bigint) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    pid integer;
    prev bigint;
BEGIN
    LOOP
        UPDATE audit_partition SET last_pseq = last_pseq + n
        WHERE partition_id = (SELECT partition_id FROM audit_partition
                              WHERE NOT dedicated
                              ORDER BY partition_id LIMIT 1 FOR UPDATE SKIP LOCKED)
        RETURNING partition_id, last_pseq - n INTO pid, prev;
        IF FOUND THEN
            RETURN pid || ' ' || prev;
        END IF;
        -- every shared partition is held by a transaction in flight: add one (ours until commit)
        INSERT INTO audit_partition (partition_id, last_pseq, created, dedicated)
        SELECT coalesce(max(partition_id), 0) + 1, n,
               (extract(epoch FROM clock_timestamp()) * 1000000)::bigint, false
        FROM audit_partition
        ON CONFLICT DO NOTHING
        RETURNING partition_id INTO pid;
        IF FOUND THEN
            RETURN pid || ' 0';
        END IF;
    END LOOP;
END $$;
"""


def upgrade() -> None:
    op.add_column(
        "audit_partition",
        sa.Column("dedicated", sa.Boolean, nullable=False, server_default=sa.false()),
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute(TAKE_HEAD)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION audit_take_head(bigint)")
        op.execute(_previous_take_head())
    op.drop_column("audit_partition", "dedicated")


def _previous_take_head() -> str:
    """Migration 0009's function (module names starting with a digit need importlib)."""
    previous = importlib.import_module("migrations.versions.0009_audit_take_head")
    return str(previous.TAKE_HEAD)
