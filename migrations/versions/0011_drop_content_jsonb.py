"""PostgreSQL: drop `resource.content_jsonb`, the generated JSONB twin of every document.

Nothing reads it (search uses index tables, reads serve `content` as stored), yet PostgreSQL
parsed every written document into it: `convert_from(...)::jsonb` was a third of the cost of
inserting a resource row (pg_stat_statements while serving audited reads: 49 of the 151 µs
per row of the searchable AuditEvent copy), and its compressed copy doubled what each row
stores. Ad-hoc SQL can still say `convert_from(content, 'UTF8')::jsonb`.

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-21
"""

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return  # SQLite never had it
    op.execute("ALTER TABLE resource DROP COLUMN IF EXISTS content_jsonb")
    op.execute("DROP FUNCTION IF EXISTS medisentinel_utf8_jsonb(bytea)")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(
        "CREATE FUNCTION medisentinel_utf8_jsonb(bytea) RETURNS jsonb "
        "LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE "
        "AS $$ SELECT convert_from($1, 'UTF8')::jsonb $$"
    )
    op.execute(
        "ALTER TABLE resource ADD COLUMN content_jsonb jsonb "
        "GENERATED ALWAYS AS (medisentinel_utf8_jsonb(content)) STORED"
    )
