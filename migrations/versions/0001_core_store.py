"""Core FHIR store: current and history tables, change-event outbox, token index.

Revision ID: 0001
Revises:
Create Date: 2026-11-21
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

SequenceId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "resource",
        sa.Column("resource_type", sa.String(64), primary_key=True),
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("version_id", sa.Integer, nullable=False),
        sa.Column("last_updated", sa.BigInteger, nullable=False),
        sa.Column("deleted", sa.Boolean, nullable=False),
        sa.Column("content", sa.LargeBinary, nullable=True),
    )
    op.create_index("ix_resource_type_updated", "resource", ["resource_type", "last_updated"])
    if op.get_bind().dialect.name == "postgresql":
        # A queryable JSONB twin of the exact bytes we serve; generated, so it never drifts.
        # convert_from() is only STABLE (it depends on the encoding setting); our content is
        # always UTF-8, so a wrapper declared IMMUTABLE is truthful (and allowed when generating).
        op.execute(
            "CREATE FUNCTION medisentinel_utf8_jsonb(bytea) RETURNS jsonb "
            "LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE "
            "AS $$ SELECT convert_from($1, 'UTF8')::jsonb $$"
        )
        op.execute(
            "ALTER TABLE resource ADD COLUMN content_jsonb jsonb "
            "GENERATED ALWAYS AS (medisentinel_utf8_jsonb(content)) STORED"
        )

    op.create_table(
        "resource_history",
        sa.Column("resource_type", sa.String(64), primary_key=True),
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("version_id", sa.Integer, primary_key=True),
        sa.Column("last_updated", sa.BigInteger, nullable=False),
        sa.Column("method", sa.String(8), nullable=False),
        sa.Column("content", sa.LargeBinary, nullable=True),
    )
    op.create_index("ix_history_updated", "resource_history", ["last_updated"])
    op.create_index(
        "ix_history_type_updated", "resource_history", ["resource_type", "last_updated"]
    )

    op.create_table(
        "change_event",
        sa.Column("seq", SequenceId, primary_key=True, autoincrement=True),
        sa.Column("resource_type", sa.String(64), nullable=False),
        sa.Column("resource_id", sa.String(64), nullable=False),
        sa.Column("version_id", sa.Integer, nullable=False),
        sa.Column("interaction", sa.String(16), nullable=False),
        sa.Column("occurred_at", sa.BigInteger, nullable=False),
        sa.Column("request_id", sa.String(64), nullable=True),
    )

    op.create_table(
        "search_token",
        sa.Column("resource_type", sa.String(64), nullable=False),
        sa.Column("resource_id", sa.String(64), nullable=False),
        sa.Column("param", sa.String(64), nullable=False),
        sa.Column("system", sa.Text, nullable=True),
        sa.Column("code", sa.Text, nullable=True),
    )
    op.create_index("ix_token_lookup", "search_token", ["resource_type", "param", "code", "system"])
    op.create_index("ix_token_owner", "search_token", ["resource_type", "resource_id"])


def downgrade() -> None:
    op.drop_table("search_token")
    op.drop_table("change_event")
    op.drop_table("resource_history")
    op.drop_table("resource")
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS medisentinel_utf8_jsonb(bytea)")
