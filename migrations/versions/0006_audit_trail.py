"""The audit trail: the append-only AuditEvent chain, partition heads, signed checkpoints and
archive markers. On PostgreSQL a trigger refuses UPDATE of any audit row, TRUNCATE, and DELETE
of anything not covered by an archive marker (which `medisentinel audit archive` writes only
for records older than the retention period).

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-21
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

SequenceId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

REFUSE_CHANGES = """
CREATE FUNCTION audit_event_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' AND OLD.recorded < (SELECT max("before") FROM audit_archive) THEN
        RETURN OLD;  -- an archived segment (its copy and verification data are outside)
    END IF;
    RAISE EXCEPTION 'audit_event is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END $$;
CREATE TRIGGER audit_event_no_update BEFORE UPDATE OR DELETE ON audit_event
    FOR EACH ROW EXECUTE FUNCTION audit_event_append_only();
CREATE TRIGGER audit_event_no_truncate BEFORE TRUNCATE ON audit_event
    FOR EACH STATEMENT EXECUTE FUNCTION audit_event_append_only();
"""


def upgrade() -> None:
    op.create_table(
        "audit_event",
        sa.Column("seq", SequenceId, primary_key=True, autoincrement=True),
        sa.Column("id", sa.String(64), nullable=False, unique=True),
        sa.Column("partition_id", sa.Integer, nullable=False),
        sa.Column("pseq", sa.BigInteger, nullable=False),
        sa.Column("recorded", sa.BigInteger, nullable=False),
        sa.Column("content", sa.LargeBinary, nullable=False),
        sa.Column("content_hash", sa.LargeBinary, nullable=False),
        sa.Column("prev_hash", sa.LargeBinary, nullable=False),
        sa.Column("chain_hash", sa.LargeBinary, nullable=False),
    )
    op.create_index("ux_audit_partition_pseq", "audit_event", ["partition_id", "pseq"], unique=True)
    op.create_index("ix_audit_recorded", "audit_event", ["recorded"])
    op.create_table(
        "audit_partition",
        sa.Column("partition_id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("last_pseq", sa.BigInteger, nullable=False),
        sa.Column("created", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "audit_checkpoint",
        sa.Column("id", SequenceId, primary_key=True, autoincrement=True),
        sa.Column("created", sa.BigInteger, nullable=False),
        sa.Column("kid", sa.String(64), nullable=False),
        sa.Column("jws", sa.Text, nullable=False),
    )
    op.create_index("ix_audit_checkpoint_created", "audit_checkpoint", ["created"])
    op.create_table(
        "audit_archive",
        sa.Column("id", SequenceId, primary_key=True, autoincrement=True),
        sa.Column("created", sa.BigInteger, nullable=False),
        sa.Column("before", sa.BigInteger, nullable=False),
        sa.Column("kid", sa.String(64), nullable=False),
        sa.Column("jws", sa.Text, nullable=False),
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute(REFUSE_CHANGES)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER audit_event_no_truncate ON audit_event")
        op.execute("DROP TRIGGER audit_event_no_update ON audit_event")
        op.execute("DROP FUNCTION audit_event_append_only()")
    for table in ("audit_archive", "audit_checkpoint", "audit_partition", "audit_event"):
        op.drop_table(table)
