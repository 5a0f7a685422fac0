"""Appending to the audit chain, in the caller's transaction.

Each record stores SHA-256(content) and a chain hash that binds it to the previous record of
its partition:

    chain_hash = SHA-256(prev_chain_hash || content_hash || partition_id (8 bytes) || pseq (8))

A single global chain would make every audited transaction wait for the one before it to
commit; readers would be serialized. Instead records go to partitions, each a gap-free chain
whose order (pseq) is the order its records committed in: on PostgreSQL each server process
holds partitions of its own and links records in Python (appender.py); SQLite, with one
writer at a time, appends to one shared partition (here). Signed checkpoints
(checkpoints.py) pin all partition heads at a moment in time.

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
    """Chain `records` onto the shared partition, in `uow`'s transaction (SQLite, which has
    one writer at a time; PostgreSQL appends through each process's own partitions,
    appender.py)."""
    if not records:
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
