"""PostgreSQL: compress stored documents with LZ4 instead of pglz.

Resource JSON, each history version, every audit record (about 2 KB) and raw HL7 messages are
over PostgreSQL's TOAST threshold and get compressed on every insert; pglz was a measurable
part of the database's CPU under load (`perf`: pglz_compress the top PostgreSQL symbol while
serving audited reads; the searchable copy of an AuditEvent cost 250 µs of PostgreSQL time
with pglz, 177 µs with LZ4). LZ4 compresses several times faster at a similar ratio. Only new
values are affected; old ones stay readable as they are. Servers built without LZ4 keep pglz.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-21
"""

from alembic import op
from sqlalchemy import text

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

DOCUMENT_COLUMNS = [
    ("resource", "content"),
    ("resource", "content_jsonb"),  # dropped again by 0011
    ("resource_history", "content"),
    ("audit_event", "content"),
    ("hl7_message", "raw"),
]


def _lz4_available() -> bool:
    found = (
        op.get_bind()
        .execute(
            text(
                "SELECT 'lz4' = ANY(enumvals) FROM pg_settings "
                "WHERE name = 'default_toast_compression'"
            )
        )
        .scalar()
    )
    return bool(found)


def _set_compression(method: str) -> None:
    if op.get_bind().dialect.name != "postgresql":
        return  # SQLite stores values as they are
    if method == "lz4" and not _lz4_available():
        return
    for table, column in DOCUMENT_COLUMNS:
        op.execute(f"ALTER TABLE {table} ALTER COLUMN {column} SET COMPRESSION {method}")


def upgrade() -> None:
    _set_compression("lz4")


def downgrade() -> None:
    _set_compression("pglz")
