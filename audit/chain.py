"""Appending to the audit chain, in the caller's transaction.

Each record stores SHA-256(content) and a chain hash that binds it to the previous record of
its partition:

    chain_hash = SHA-256(prev_chain_hash || content_hash || partition_id (8 bytes) || pseq (8))

A single global chain would make every audited transaction wait for the one before it to
commit; readers would be serialized. Instead a writer takes any partition head nobody holds
(`FOR UPDATE SKIP LOCKED`), creating a new partition when all are busy, and keeps it until its
transaction ends. Concurrent writers therefore never wait for each other, a rolled-back
transaction leaves its partition as it was, and every partition is a gap-free chain whose
order (pseq) is the order its records committed in. Signed checkpoints (checkpoints.py) pin
all partition heads at a moment in time.

Only the chain record is written here. The searchable copy (resource, history and index rows,
type AuditEvent, which the FHIR search engine serves like any other type) is built from the
chain shortly after, in batches (indexing.py). No change events are written for it, so audit
records never feed subscriptions (or audit themselves).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, text, update

from app.fhir import jsonio, storage
from app.fhir.storage import UnitOfWork
from audit.tables import audit_event, audit_partition

GENESIS = bytes(32)  # the "previous hash" of every partition's first record


@dataclass(frozen=True)
class AuditRecord:
    id: str
    recorded: int  # epoch microseconds
    content: bytes  # the AuditEvent JSON, exactly as stored, hashed and returned
    event: dict[str, Any]


def content_hash(content: bytes) -> bytes:
    return hashlib.sha256(content).digest()


def link_hash(prev: bytes, digest: bytes, partition_id: int, pseq: int) -> bytes:
    return hashlib.sha256(
        prev + digest + partition_id.to_bytes(8, "big") + pseq.to_bytes(8, "big")
    ).digest()


@dataclass(frozen=True)
class Linked:
    """A record's place in its partition's chain."""

    record: AuditRecord
    pseq: int
    content_hash: bytes
    prev_hash: bytes
    chain_hash: bytes


def linked(
    records: list[AuditRecord], partition_id: int, last_pseq: int, prev: bytes
) -> list[Linked]:
    """`records`, in order, chained after a partition's record `last_pseq` (hash `prev`)."""
    chain = []
    for item in records:
        last_pseq += 1
        digest = content_hash(item.content)
        chained = link_hash(prev, digest, partition_id, last_pseq)
        chain.append(Linked(item, last_pseq, digest, prev, chained))
        prev = chained
    return chain


def record(event: dict[str, Any], recorded: int) -> AuditRecord:
    return AuditRecord(event["id"], recorded, jsonio.dumps(event), event)


def append(uow: UnitOfWork, records: list[AuditRecord]) -> None:
    """Chain `records` onto a partition this transaction holds.

    On PostgreSQL the two statements that do it are sent with the unit's COMMIT (one network
    round trip for the staged rows, the records and the commit); they take a partition head
    at the very end of the transaction, so it is held for microseconds."""
    if not records:
        return
    if uow.dialect == "postgresql":
        uow.with_commit.append((_PG_TAKE_HEAD, {"n": len(records)}))
        uow.with_commit.append((_PG_LINK_AND_INSERT, _params(records)))
        return
    partition_id, pseq, prev = _hold_partition(uow, len(records))
    for link in linked(records, partition_id, pseq, prev):
        uow.stage(
            audit_event,
            {
                "id": link.record.id,
                "partition_id": partition_id,
                "pseq": link.pseq,
                "recorded": link.record.recorded,
                "content": link.record.content,
                "content_hash": link.content_hash,
                "prev_hash": link.prev_hash,
                "chain_hash": link.chain_hash,
            },
        )


def _params(records: list[AuditRecord]) -> dict[str, Any]:
    return {
        "genesis": GENESIS,
        "ids": [r.id for r in records],
        "recorded": [r.recorded for r in records],
        "contents": [r.content for r in records],
        "digests": [content_hash(r.content) for r in records],
    }


# The PostgreSQL append, in two statements. The first takes a free partition head (locked
# until commit; audit_take_head, migration 0009, makes a partition when all are held),
# reserves pseqs and notes "partition previous_pseq" in a transaction-local setting. The
# second reads the previous record's chain hash and links the new records -- a separate
# statement because a statement sees the database as of its start, and the head may have
# been released by a transaction that committed after the first statement began (its last
# record would be invisible to it). An unset head makes the second fail (no silent skip).
# The link is link_hash's (sha256 of prev || content hash || partition id and pseq as 8-byte
# big-endian integers, which int8send gives), checked by `audit verify` like any other.
_PG_TAKE_HEAD = "SELECT set_config('medisentinel.audit_head', audit_take_head(%(n)s), true)"

_PG_LINK_AND_INSERT = """
WITH RECURSIVE noted AS (
    SELECT current_setting('medisentinel.audit_head', true) AS head
),
start AS (
    SELECT split_part(head, ' ', 1)::bigint AS partition_id,
           split_part(head, ' ', 2)::bigint AS prev_pseq
    FROM noted
),
prev AS (
    SELECT start.partition_id, start.prev_pseq, coalesce(e.chain_hash, %(genesis)b) AS chain_hash
    FROM start LEFT JOIN audit_event e
        ON e.partition_id = start.partition_id AND e.pseq = start.prev_pseq
),
item AS (
    SELECT * FROM unnest(%(ids)b::text[], %(recorded)b::bigint[], %(contents)b::bytea[],
                         %(digests)b::bytea[])
        WITH ORDINALITY AS t(id, recorded, content, content_hash, ord)
),
linked (ord, pseq, prev_hash, chain_hash) AS (
    SELECT 0::bigint, prev.prev_pseq, NULL::bytea, prev.chain_hash FROM prev
    UNION ALL
    SELECT item.ord, linked.pseq + 1, linked.chain_hash,
           sha256(linked.chain_hash || item.content_hash
                  || int8send((SELECT partition_id FROM start)) || int8send(linked.pseq + 1))
    FROM linked JOIN item ON item.ord = linked.ord + 1
)
INSERT INTO audit_event
    (id, partition_id, pseq, recorded, content, content_hash, prev_hash, chain_hash)
SELECT item.id, start.partition_id, linked.pseq, item.recorded, item.content,
       item.content_hash, linked.prev_hash, linked.chain_hash
FROM linked JOIN item ON item.ord = linked.ord CROSS JOIN start
"""


# ---------------------------------------------------------------- partitions


def _hold_partition(uow: UnitOfWork, count: int) -> tuple[int, int, bytes]:
    """SQLite: (partition id, last pseq before ours, its chain hash); `count` pseqs reserved."""
    uow.flush()
    # SQLite has one writer at a time: a single partition, read and moved in place.
    head = uow.conn.execute(
        select(audit_partition.c.partition_id, audit_partition.c.last_pseq)
        .where(audit_partition.c.dedicated.is_(False))
        .order_by(audit_partition.c.partition_id)
        .limit(1)
    ).first()
    if head is None:
        partition_id, last = _new_partition(uow), 0
    else:
        partition_id, last = head.partition_id, head.last_pseq
    uow.conn.execute(
        update(audit_partition)
        .where(audit_partition.c.partition_id == partition_id)
        .values(last_pseq=last + count)
    )
    return partition_id, last, _chain_hash_at(uow, partition_id, last)


def _new_partition(uow: UnitOfWork) -> int:
    """A fresh partition, held by this transaction (its row is ours until we commit)."""
    for _ in range(20):  # two writers may pick the same number; the loser tries the next
        proposed = uow.conn.execute(
            text("SELECT coalesce(max(partition_id), 0) + 1 FROM audit_partition")
        ).scalar_one()
        inserted = uow.conn.execute(
            _INSERT_PARTITION, {"pid": proposed, "now": storage.now_us()}
        ).first()
        if inserted is not None:
            return int(proposed)
    raise RuntimeError("could not create an audit partition")


_INSERT_PARTITION = text(
    "INSERT INTO audit_partition (partition_id, last_pseq, created) VALUES (:pid, 0, :now) "
    "ON CONFLICT DO NOTHING RETURNING partition_id"
)


def _chain_hash_at(uow: UnitOfWork, partition_id: int, pseq: int) -> bytes:
    if pseq == 0:
        return GENESIS
    found = uow.conn.execute(
        select(audit_event.c.chain_hash).where(
            audit_event.c.partition_id == partition_id, audit_event.c.pseq == pseq
        )
    ).scalar()
    if found is None:
        raise RuntimeError(f"audit partition {partition_id} has lost its head record {pseq}")
    return bytes(found)
