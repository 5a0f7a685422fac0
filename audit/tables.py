"""The audit trail's tables (migration 0006 creates them, and on PostgreSQL the trigger that
refuses UPDATE and DELETE on `audit_event`).

`audit_event` is the chain: append-only, one row per AuditEvent, holding the exact JSON bytes
that are returned and hashed. Rows are chained per partition: every writer appends to a
partition it holds for the length of its transaction (see chain.py), so concurrent writers
never wait for each other and each partition's chain verifies on its own. The searchable copy
of each AuditEvent (resource row + index rows) is built from the chain shortly after, in
batches (indexing.py; `audit_indexed` says how far); the chain, not the copy, is what
`medisentinel audit verify` trusts.

Times are integer microseconds since the Unix epoch, like the FHIR tables.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Index,
    Integer,
    LargeBinary,
    String,
    Table,
    Text,
    false,
)

from app.fhir.tables import SequenceId, metadata

audit_event = Table(
    "audit_event",
    metadata,
    Column("seq", SequenceId, primary_key=True, autoincrement=True),  # global insertion order
    Column("id", String(64), nullable=False, unique=True),  # AuditEvent.id
    Column("partition_id", Integer, nullable=False),
    Column("pseq", BigInteger, nullable=False),  # 1, 2, 3 ... within the partition
    Column("recorded", BigInteger, nullable=False),
    Column("content", LargeBinary, nullable=False),
    Column("content_hash", LargeBinary, nullable=False),  # SHA-256(content)
    Column("prev_hash", LargeBinary, nullable=False),  # the previous record's chain_hash
    Column("chain_hash", LargeBinary, nullable=False),  # see chain.link_hash
    Index("ux_audit_partition_pseq", "partition_id", "pseq", unique=True),
    Index("ix_audit_recorded", "recorded"),
)

# The head of each partition: its last pseq (the last record holds the chain hash). A writer
# locks one shared head row (FOR UPDATE SKIP LOCKED) until it commits; a dedicated partition
# belongs to one process's appender while it runs (appender.py); verify never trusts these rows.
audit_partition = Table(
    "audit_partition",
    metadata,
    Column("partition_id", Integer, primary_key=True, autoincrement=False),
    Column("last_pseq", BigInteger, nullable=False),
    Column("created", BigInteger, nullable=False),
    Column("dedicated", Boolean, nullable=False, server_default=false()),
)

# Signed snapshots of every partition head: a chain rewritten after a checkpoint no longer
# reaches the signed head; records deleted from the tail are missed against it.
audit_checkpoint = Table(
    "audit_checkpoint",
    metadata,
    Column("id", SequenceId, primary_key=True, autoincrement=True),
    Column("created", BigInteger, nullable=False),
    Column("kid", String(64), nullable=False),
    Column("jws", Text, nullable=False),  # compact JWS over {"created", "heads"}
    Index("ix_audit_checkpoint_created", "created"),
)

# Segments moved out by `medisentinel audit archive`: where each partition's remaining chain
# starts (the archived tail's chain hash), signed like a checkpoint.
audit_archive = Table(
    "audit_archive",
    metadata,
    Column("id", SequenceId, primary_key=True, autoincrement=True),
    Column("created", BigInteger, nullable=False),
    Column("before", BigInteger, nullable=False),  # records recorded before this were archived
    Column("kid", String(64), nullable=False),
    Column("jws", Text, nullable=False),  # {"before", "file_sha256", "heads": {pid: [pseq, hash]}}
)

# How far each partition has been copied into the searchable AuditEvent store (indexing.py).
# Within a partition records commit in pseq order (the head is held until commit), so
# "everything up to pseq" is a complete description of what is copied.
audit_indexed = Table(
    "audit_indexed",
    metadata,
    Column("partition_id", Integer, primary_key=True, autoincrement=False),
    Column("pseq", BigInteger, nullable=False),
)
