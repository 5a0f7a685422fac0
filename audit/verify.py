"""`medisentinel audit verify`: walk every partition's chain and name what does not fit.

For each partition, records are read in pseq order and checked:

* content_hash is SHA-256 of the stored content              else: modified
* pseq follows the previous one without a gap                 else: deleted
* prev_hash is the previous record's chain hash               else: inserted / reordered
* chain_hash = link(prev_hash, content_hash, partition, pseq) else: modified / reordered
* the global insertion sequence grows with pseq               else: reordered
* no record lies beyond the partition's head                  else: inserted
* the last record is the partition's head                     else: deleted (the newest)
* the `id` and `recorded` columns say what the content says   else: modified

Then every signed checkpoint's heads must still be there with the same hash (a chain that was
recomputed after a rewrite, or a deleted tail, fails here), and a checkpoint whose signature
does not verify is itself a finding. Checkpoints must form an unbroken numbered sequence, and
records older than the checkpoint interval (relative to the newest record) must be covered by
one (marks.py): deleting checkpoints to hide a rewrite is caught. Last, the searchable copy
(AuditEvent resources, which searches, the console and the accounting of disclosures read)
must match the chain (copies.py). `--since` starts each partition at the newest checkpoint
taken before that time (its signature anchors the walk) instead of at the beginning.
`resume` starts it where an earlier walk by the same process ended (the report's `heads`):
the compliance console checks what was appended since its last walk that way (web/
verification.py), and the remembered heads must still be in the chain, unchanged.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, Engine, select

from app.auth.keys import KeyStore
from app.fhir import jsonio
from app.fhir.instants import to_instant
from audit import checkpoints, copies, marks
from audit.chain import GENESIS, link_hash
from audit.tables import audit_event, audit_partition

BATCH = 5000


@dataclass(frozen=True)
class Finding:
    kind: str  # modified | deleted | inserted | reordered | checkpoint | unanchored | copy
    partition: int | None
    pseq: int | None
    detail: str
    recorded: int | None = None

    def __str__(self) -> str:
        where = f"partition {self.partition} record {self.pseq}" if self.partition else ""
        return f"{self.kind.upper()}: {where} {self.detail}".replace("  ", " ").strip()


@dataclass
class Report:
    records: int = 0
    partitions: int = 0
    checkpoints: int = 0
    findings: list[Finding] = field(default_factory=list)
    # Where the walk ended: each partition's last record (pseq, chain hash), to resume from.
    heads: dict[int, tuple[int, bytes]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.findings

    def summary(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "records": self.records,
            "partitions": self.partitions,
            "checkpoints": self.checkpoints,
            "first_problem": str(self.findings[0]) if self.findings else None,
            "problems": [str(f) for f in self.findings[:50]],
        }


def verify(
    engine: Engine,
    keys: KeyStore,
    *,
    since: int | None = None,
    checkpoint_seconds: int = marks.DEFAULT_INTERVAL,
    resume: dict[int, tuple[int, bytes]] | None = None,
) -> Report:
    """Verify one snapshot of the trail. The server keeps appending while this runs: read
    committed, the heads read first would lag the records read later, and every record added
    meanwhile would look inserted. (A SQLite read transaction is a snapshot already.)
    `checkpoint_seconds`: how often the servers sign the heads (the setting)."""
    with engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            conn = conn.execution_options(isolation_level="REPEATABLE READ")
        with conn.begin():
            return verify_on(
                conn, keys, since=since, checkpoint_seconds=checkpoint_seconds, resume=resume
            )


def verify_on(
    conn: Connection,
    keys: KeyStore,
    *,
    since: int | None = None,
    checkpoint_seconds: int = marks.DEFAULT_INTERVAL,
    resume: dict[int, tuple[int, bytes]] | None = None,
) -> Report:
    """The same on an open connection (what it sees is what is checked)."""
    report = Report()
    signed = checkpoints.load_all(conn, keys)
    report.checkpoints = len(signed)
    for mark in signed:
        if not mark.valid:
            report.findings.append(
                Finding("checkpoint", None, None, f"checkpoint {mark.id} signature invalid")
            )
    valid = [m for m in signed if m.valid]
    report.findings.extend(Finding("checkpoint", None, None, d) for d in marks.sequence(valid))
    anchors = _anchors(conn, keys, report, signed, since)
    if resume:
        _check_resumed(conn, resume, report)
        for pid, head in resume.items():
            if head[0] > anchors.get(pid, (0, b""))[0]:
                anchors[pid] = head
    covered = marks.covered(valid, anchors)
    heads = dict(
        conn.execute(select(audit_partition.c.partition_id, audit_partition.c.last_pseq)).all()
    )
    partitions = sorted(
        set(heads) | {r[0] for r in conn.execute(select(audit_event.c.partition_id).distinct())}
    )
    report.partitions = len(partitions)
    tails: dict[int, marks.Tail] = {}
    for pid in partitions:
        if pid not in heads:
            report.findings.append(Finding("inserted", pid, None, "unknown partition"))
        start = anchors.get(pid, (0, GENESIS))
        tails[pid] = marks.Tail(covered.get(pid, 0))
        report.heads[pid] = _walk_partition(conn, pid, start, heads.get(pid), report, tails[pid])
    _check_checkpoints(conn, valid, anchors, report)
    for pid, pseq, detail in marks.unanchored(tails, checkpoint_seconds):
        report.findings.append(Finding("unanchored", pid, pseq, detail))
    # Stray copies are looked for in the whole copy (one anti-join), so not on a resumed walk.
    differences = copies.differences(conn, anchors, strays=not resume)
    report.findings.extend(Finding("copy", None, None, d) for d in differences)
    return report


def _check_resumed(conn: Connection, resume: dict[int, tuple[int, bytes]], report: Report) -> None:
    """The records an earlier walk ended at must still be there with the chain hash it saw:
    a rewrite of the part already walked that re-hashed the chain up to now shows here."""
    e = audit_event.c
    for pid, (pseq, digest) in sorted(resume.items()):
        if pseq == 0:
            continue  # that partition was empty then
        stored = conn.execute(
            select(e.chain_hash).where(e.partition_id == pid, e.pseq == pseq)
        ).scalar()
        if stored is None:
            report.findings.append(Finding("deleted", pid, pseq, "gone since the last walk"))
        elif bytes(stored) != digest:
            report.findings.append(
                Finding("modified", pid, pseq, "chain hash changed since the last walk")
            )


def _anchors(
    conn: Connection,
    keys: KeyStore,
    report: Report,
    marks: list[checkpoints.Checkpoint],
    since: int | None,
) -> dict[int, tuple[int, bytes]]:
    """Where each partition's walk starts: after an archived segment, or at a checkpoint."""
    anchors: dict[int, tuple[int, bytes]] = {}
    archive = checkpoints.latest_archive(conn, keys)
    if archive is not None:
        archive_id, heads = archive
        if heads is None:
            report.findings.append(
                Finding("checkpoint", None, None, f"archive marker {archive_id} signature invalid")
            )
        else:
            anchors.update(heads)
    if since is not None:
        earlier = [m for m in marks if m.valid and m.created <= since]
        if earlier:
            for pid, head in earlier[-1].heads.items():
                if head[0] > anchors.get(pid, (0, b""))[0]:
                    anchors[pid] = head
    return anchors


def _rows(conn: Connection, pid: int, after: int) -> Iterator[Any]:
    e = audit_event.c
    while True:
        batch = conn.execute(
            select(
                e.seq,
                e.id,
                e.pseq,
                e.recorded,
                e.content,
                e.content_hash,
                e.prev_hash,
                e.chain_hash,
            )  # fmt: skip
            .where(e.partition_id == pid, e.pseq > after)
            .order_by(e.pseq)
            .limit(BATCH)
        ).all()
        yield from batch
        if len(batch) < BATCH:
            return
        after = batch[-1].pseq


def _walk_partition(
    conn: Connection,
    pid: int,
    start: tuple[int, bytes],
    head: int | None,
    report: Report,
    tail: marks.Tail | None = None,
) -> tuple[int, bytes]:
    """Check the partition's records after `start`; return its last (pseq, chain hash)."""
    expected, prev = start[0] + 1, start[1]
    last_seq = -1
    for row in _rows(conn, pid, start[0]):
        report.records += 1
        add = _adder(report, pid, row)
        if tail is not None:
            tail.saw(row.pseq, row.recorded)
        stored_prev, stored_chain = bytes(row.prev_hash), bytes(row.chain_hash)
        digest = bytes(row.content_hash)
        if row.pseq != expected:
            add("deleted", f"records {expected}..{row.pseq - 1} are missing")
        if hashlib.sha256(row.content).digest() != digest:
            add("modified", "content does not match its hash")
        elif mismatch := _columns_mismatch(row):
            add("modified", mismatch)
        elif link_hash(stored_prev, digest, pid, row.pseq) != stored_chain:
            moved = _position_of(stored_prev, digest, stored_chain, pid, conn)
            if moved is not None:
                add("reordered", f"belongs at position {moved}")
            else:
                add("modified", "chain hash does not match the record")
        elif stored_prev != prev and row.pseq == expected:
            kind = "reordered" if _is_chain_hash(conn, pid, stored_prev) else "inserted"
            add(kind, "does not follow the previous record")
        if row.seq < last_seq:
            add("reordered", "stored out of insertion order")
        if head is not None and row.pseq > head:
            add("inserted", f"lies beyond the partition head ({head})")
        expected, prev, last_seq = row.pseq + 1, stored_chain, row.seq
    # A record's pseq is reserved on its partition head in the transaction that writes it, so
    # in any snapshot the head is the newest record: a shorter chain lost its newest records.
    if head is not None and expected - 1 < head:
        report.findings.append(
            Finding("deleted", pid, expected, f"the newest records {expected}..{head} are missing")
        )
    return expected - 1, prev


def _columns_mismatch(row: Any) -> str | None:
    """The `id` and `recorded` columns are outside the hash; they must say what the hashed
    content says (searches by date and the console read the columns' copy)."""
    try:
        event = jsonio.loads_stored(bytes(row.content))
    except Exception:
        return "content is not JSON"
    if not isinstance(event, dict) or event.get("id") != row.id:
        return "the id column does not match the record's id"
    if event.get("recorded") != to_instant(row.recorded):
        return "the recorded column does not match the record's time"
    return None


def _adder(report: Report, pid: int, row: Any) -> Any:
    def add(kind: str, detail: str) -> None:
        report.findings.append(Finding(kind, pid, row.pseq, detail, row.recorded))

    return add


def _position_of(
    prev: bytes, digest: bytes, chained: bytes, pid: int, conn: Connection
) -> int | None:
    """If the record's hashes fit another position of the chain, which one (a moved record)."""
    rows = conn.execute(
        select(audit_event.c.pseq).where(audit_event.c.partition_id == pid)
    ).scalars()
    for pseq in rows:
        if link_hash(prev, digest, pid, pseq) == chained:
            return int(pseq)
    return None


def _is_chain_hash(conn: Connection, pid: int, digest: bytes) -> bool:
    found = conn.execute(
        select(audit_event.c.pseq).where(
            audit_event.c.partition_id == pid, audit_event.c.chain_hash == digest
        )
    ).first()
    return found is not None


def _check_checkpoints(
    conn: Connection,
    marks: list[checkpoints.Checkpoint],
    anchors: dict[int, tuple[int, bytes]],
    report: Report,
) -> None:
    e = audit_event.c
    for mark in marks:
        for pid, (pseq, digest) in mark.heads.items():
            if pseq <= anchors.get(pid, (0, b""))[0]:
                continue  # archived, or before where --since started
            stored = conn.execute(
                select(e.chain_hash, e.recorded).where(e.partition_id == pid, e.pseq == pseq)
            ).first()
            if stored is None:
                report.findings.append(
                    Finding("deleted", pid, pseq, f"signed in checkpoint {mark.id}, now gone")
                )
            elif bytes(stored.chain_hash) != digest:
                report.findings.append(
                    Finding(
                        "modified",
                        pid,
                        pseq,
                        f"chain differs from checkpoint {mark.id} (rewritten before it)",
                        stored.recorded,
                    )
                )
