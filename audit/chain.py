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

The searchable copy (resource, history and index rows, type AuditEvent) is staged in the same
transaction: the FHIR search engine serves AuditEvent like any other type. No change events
are written for it, so audit records never feed subscriptions (or audit themselves).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, text, update

from app.fhir import jsonio, storage
from app.fhir.search.indexer import Rows, index_rows
from app.fhir.storage import StoredVersion, UnitOfWork
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


def record(event: dict[str, Any], recorded: int) -> AuditRecord:
    return AuditRecord(event["id"], recorded, jsonio.dumps(event), event)


def append(uow: UnitOfWork, records: list[AuditRecord]) -> None:
    """Chain `records` onto a partition this transaction holds, and stage their copies."""
    if not records:
        return
    partition_id, pseq, prev = _hold_partition(uow, len(records))
    for item in records:
        pseq += 1
        digest = content_hash(item.content)
        chained = link_hash(prev, digest, partition_id, pseq)
        uow.stage(
            audit_event,
            {
                "id": item.id,
                "partition_id": partition_id,
                "pseq": pseq,
                "recorded": item.recorded,
                "content": item.content,
                "content_hash": digest,
                "prev_hash": prev,
                "chain_hash": chained,
            },
        )
        prev = chained
        _stage_searchable_copy(uow, item)


# ---------------------------------------------------------------- partitions


def _hold_partition(uow: UnitOfWork, count: int) -> tuple[int, int, bytes]:
    """(partition id, last pseq before ours, its chain hash); `count` pseqs are reserved."""
    uow.flush()
    if uow.dialect == "postgresql":
        row = uow.conn.execute(_PG_HOLD_FREE, {"n": count}).first()
        if row is None:
            partition_id = _new_partition(uow)
            row = uow.conn.execute(_PG_HOLD_GIVEN, {"n": count, "pid": partition_id}).first()
            assert row is not None
        return row.partition_id, row.prev_pseq, row.chain_hash or GENESIS
    # SQLite has one writer at a time: a single partition, read and moved in place.
    head = uow.conn.execute(
        select(audit_partition.c.partition_id, audit_partition.c.last_pseq)
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


_PG_HOLD = """
WITH head AS (
    UPDATE audit_partition SET last_pseq = last_pseq + :n
    WHERE partition_id = ({pick})
    RETURNING partition_id, last_pseq - :n AS prev_pseq
)
SELECT head.partition_id, head.prev_pseq, e.chain_hash
FROM head LEFT JOIN audit_event e
    ON e.partition_id = head.partition_id AND e.pseq = head.prev_pseq
"""


# One round trip: take the lowest free partition, reserve pseqs, fetch the last hash.
_PG_HOLD_FREE = text(
    _PG_HOLD.format(
        pick="SELECT partition_id FROM audit_partition ORDER BY partition_id "
        "LIMIT 1 FOR UPDATE SKIP LOCKED"
    )
)
_PG_HOLD_GIVEN = text(_PG_HOLD.format(pick=":pid"))  # a partition this transaction just made


# ---------------------------------------------------------------- searchable copy


def _stage_searchable_copy(uow: UnitOfWork, item: AuditRecord) -> None:
    version = StoredVersion("AuditEvent", item.id, 1, item.recorded, False, item.content)
    storage.stage_insert_current(uow, version)
    storage.stage_history(uow, version, "POST")
    storage.replace_index(uow, "AuditEvent", item.id, searchable_rows(item.event), new=True)


def searchable_rows(event: dict[str, Any]) -> Rows:
    """The AuditEvent's index rows, from the generic indexer (see docs/audit.md for cost)."""
    return index_rows("AuditEvent", event["id"], event)
