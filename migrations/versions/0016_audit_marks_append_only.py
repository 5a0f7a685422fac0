"""PostgreSQL: signed checkpoints and archive markers are append-only too.

verify catches deleted checkpoints (their numbers run 1, 2, 3 ... and records older than two
checkpoint intervals must be covered, audit/marks.py), but only after the fact; like
`audit_event` (0006), their tables now refuse UPDATE, DELETE and TRUNCATE unless the table
owner switches the triggers off. Nothing in the code changes or deletes these rows.

Revision ID: 0016
Revises: 0015
Create Date: 2026-11-22
"""

from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

TABLES = ("audit_checkpoint", "audit_archive")

REFUSE = """
CREATE FUNCTION audit_marks_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'insufficient_privilege';
END $$;
"""


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(REFUSE)
    for table in TABLES:
        op.execute(
            f"CREATE TRIGGER {table}_no_change BEFORE UPDATE OR DELETE ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION audit_marks_append_only()"
        )
        op.execute(
            f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
            "FOR EACH STATEMENT EXECUTE FUNCTION audit_marks_append_only()"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table in TABLES:
        op.execute(f"DROP TRIGGER {table}_no_truncate ON {table}")
        op.execute(f"DROP TRIGGER {table}_no_change ON {table}")
    op.execute("DROP FUNCTION audit_marks_append_only()")
