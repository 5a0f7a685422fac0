"""Verify's last check: the searchable copy of the trail says what the chain says.

Searches of AuditEvent, the compliance console and the accounting of disclosures read the
copy (resource and history rows of type AuditEvent, indexing.py), not the chain, so an edited
or deleted copy would mislead them while the chain verifies. Every record the copier has
passed (`audit_indexed`) must have its copy, byte for byte (compared by hash: the chain walk
has checked each record's content against its hash already), and the copy must hold nothing
the chain does not. (The search index rows derived from the copy are not compared.)
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

from sqlalchemy import Connection, Table, select

from app.fhir.tables import resource, resource_history
from audit.checkpoints import Heads
from audit.tables import audit_event, audit_indexed

BATCH = 2000
MAX_REPORTED = 200  # per kind of problem: enough to show the extent


def differences(conn: Connection, anchors: Heads, *, strays: bool = True) -> list[str]:
    """One line per copy that is missing, altered, or (with `strays`) has no record in the
    chain. Only the records after `anchors` are compared."""
    problems: list[str] = []
    cursors = dict(conn.execute(select(audit_indexed.c.partition_id, audit_indexed.c.pseq)).all())
    for pid, done in sorted(cursors.items()):
        start = anchors.get(pid, (0, b""))[0]  # archived records left the copy with the chain
        for batch in _chain_batches(conn, pid, start, int(done)):
            for table in (resource, resource_history):
                problems.extend(_compare(conn, table, batch))
            if len(problems) > MAX_REPORTED:
                return problems[:MAX_REPORTED]
    for table in (resource, resource_history) if strays else ():
        problems.extend(_strays(conn, table))
    return problems[:MAX_REPORTED]


def _chain_batches(
    conn: Connection, pid: int, after: int, upto: int
) -> Iterator[dict[str, tuple[int, bytes]]]:
    """{id: (pseq, content hash)} of the partition's records in (after, upto], in batches."""
    e = audit_event.c
    while after < upto:
        rows = conn.execute(
            select(e.id, e.pseq, e.content_hash)
            .where(e.partition_id == pid, e.pseq > after, e.pseq <= upto)
            .order_by(e.pseq)
            .limit(BATCH)
        ).all()
        if not rows:
            return
        yield {r.id: (r.pseq, bytes(r.content_hash)) for r in rows}
        after = rows[-1].pseq


def _compare(conn: Connection, table: Table, chain: dict[str, tuple[int, bytes]]) -> list[str]:
    where = "history" if table is resource_history else "copy"
    found = {
        r.id: r.content
        for r in conn.execute(
            select(table.c.id, table.c.content).where(
                table.c.resource_type == "AuditEvent", table.c.id.in_(list(chain))
            )
        )
    }
    problems = []
    for rid, (pseq, digest) in chain.items():
        content = found.get(rid)
        if content is None:
            problems.append(
                f"AuditEvent/{rid} (record {pseq}) is missing from the searchable {where}"
            )
        elif hashlib.sha256(bytes(content)).digest() != digest:
            problems.append(f"AuditEvent/{rid} (record {pseq}): the searchable {where} was altered")
    return problems


def _strays(conn: Connection, table: Table) -> list[str]:
    """Copies of records the chain does not hold (planted, or their record deleted)."""
    e = audit_event.c
    rows = conn.execute(
        select(table.c.id)
        .where(
            table.c.resource_type == "AuditEvent",
            ~select(e.seq).where(e.id == table.c.id).exists(),
        )
        .limit(MAX_REPORTED)
    ).scalars()
    where = "history" if table is resource_history else "copy"
    return [f"AuditEvent/{rid} in the searchable {where} is not in the chain" for rid in rows]
