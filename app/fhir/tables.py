"""The schema, as SQLAlchemy Core tables (migrations/ creates them; this module describes them).

Timestamps are stored as integer microseconds since the Unix epoch (UTC): identical on SQLite
and PostgreSQL, totally ordered, and cheap to compare for `_since` and paging.

`content` holds the exact JSON bytes we return (the client's JSON plus server-owned meta), so a
read never re-serializes. On PostgreSQL the current table also carries `content_jsonb`, a
generated JSONB copy for ad-hoc SQL and future indexes.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
)

metadata = MetaData()

# SQLite only auto-increments an INTEGER PRIMARY KEY; PostgreSQL gets a BIGINT identity.
SequenceId = BigInteger().with_variant(Integer(), "sqlite")

resource = Table(
    "resource",
    metadata,
    Column("resource_type", String(64), primary_key=True),
    Column("id", String(64), primary_key=True),
    Column("version_id", Integer, nullable=False),
    Column("last_updated", BigInteger, nullable=False),
    Column("deleted", Boolean, nullable=False, default=False),
    Column("content", LargeBinary, nullable=True),
    Index("ix_resource_type_updated", "resource_type", "last_updated"),
)

resource_history = Table(
    "resource_history",
    metadata,
    Column("resource_type", String(64), primary_key=True),
    Column("id", String(64), primary_key=True),
    Column("version_id", Integer, primary_key=True),
    Column("last_updated", BigInteger, nullable=False),
    Column("method", String(8), nullable=False),  # POST | PUT | PATCH | DELETE
    Column("content", LargeBinary, nullable=True),  # NULL for a delete
    Index("ix_history_updated", "last_updated"),
    Index("ix_history_type_updated", "resource_type", "last_updated"),
)

# The transactional outbox: one row per committed change, written in the same transaction.
# Subscriptions and agents consume it (delivery at least once, by sequence).
change_event = Table(
    "change_event",
    metadata,
    Column("seq", SequenceId, primary_key=True, autoincrement=True),
    Column("resource_type", String(64), nullable=False),
    Column("resource_id", String(64), nullable=False),
    Column("version_id", Integer, nullable=False),
    Column("interaction", String(16), nullable=False),  # create | update | patch | delete
    Column("occurred_at", BigInteger, nullable=False),
    Column("request_id", String(64), nullable=True),
)

# Search index for token parameters (system|code). The search issue generalises indexing to
# every SearchParameter; the core uses it for `identifier` in conditional interactions.
search_token = Table(
    "search_token",
    metadata,
    Column("resource_type", String(64), nullable=False),
    Column("resource_id", String(64), nullable=False),
    Column("param", String(64), nullable=False),
    Column("system", Text, nullable=True),
    Column("code", Text, nullable=True),
    Index("ix_token_lookup", "resource_type", "param", "code", "system"),
    Index("ix_token_owner", "resource_type", "resource_id"),
)
