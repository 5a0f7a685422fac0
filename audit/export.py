"""Export a date range of the audit trail, verify such an export offline, and archive what is
older than the retention period.

An export is two files: FILE.ndjson holds the AuditEvents exactly as stored (one per line,
byte for byte what was hashed: any FHIR bulk-data consumer can read it), and
FILE.ndjson.chain.json holds what is needed to verify them without the database: each line's
partition, position and hashes, the signed checkpoints taken while (and just after) they were
written, and the public keys that signed those checkpoints. Records are exported as whole
pseq-contiguous runs of each partition, so the runs chain on their own; a checkpoint head that
falls inside a run proves every record up to it was there, unchanged, when it was signed.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from joserfc import jws
from joserfc.jwk import RSAKey
from sqlalchemy import Connection, Engine, and_, delete, func, insert, select

from app.auth.keys import KeyStore
from app.db import write_transaction
from app.fhir import storage
from app.fhir.tables import INDEX_TABLES, resource, resource_history
from app.settings import Settings
from audit import checkpoints
from audit.chain import link_hash
from audit.tables import audit_archive, audit_checkpoint, audit_event

FORMAT = "medisentinel-audit-export/1"
Runs = dict[int, tuple[int, int]]  # partition -> (first pseq, last pseq), inclusive


class ArchiveRefused(Exception):
    pass


def write(engine: Engine, keys: KeyStore, start: int, end: int, out: Path) -> dict[str, Any]:
    """Records recorded in [start, end), widened to whole runs per partition."""
    checkpoints.take(engine, keys)  # anchor the newest records too
    with engine.connect() as conn:
        runs = _runs(conn, start, end)
        return _write_runs(conn, keys, runs, out, {"from": start, "to": end})


def _runs(conn: Connection, start: int, end: int) -> Runs:
    e = audit_event.c
    rows = conn.execute(
        select(e.partition_id, func.min(e.pseq), func.max(e.pseq))
        .where(e.recorded >= start, e.recorded < end)
        .group_by(e.partition_id)
    ).all()
    return {pid: (int(lo), int(hi)) for pid, lo, hi in rows}


def _write_runs(
    conn: Connection, keys: KeyStore, runs: Runs, out: Path, extra: dict[str, Any]
) -> dict[str, Any]:
    e = audit_event.c
    lines: list[dict[str, Any]] = []
    out.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    with out.open("wb") as handle:
        for pid, (lo, hi) in sorted(runs.items()):
            rows = conn.execute(
                select(e.pseq, e.content, e.content_hash, e.prev_hash, e.chain_hash)
                .where(e.partition_id == pid, e.pseq >= lo, e.pseq <= hi)
                .order_by(e.pseq)
            )
            for row in rows:
                handle.write(row.content + b"\n")
                digest.update(row.content + b"\n")
                lines.append(
                    {
                        "partition": pid,
                        "pseq": row.pseq,
                        "prev_hash": bytes(row.prev_hash).hex(),
                        "content_hash": bytes(row.content_hash).hex(),
                        "chain_hash": bytes(row.chain_hash).hex(),
                    }
                )
    marks = conn.execute(select(audit_checkpoint).order_by(audit_checkpoint.c.id)).all()
    kids = sorted({m.kid for m in marks})
    public = [k.as_dict(private=False) for k in (keys.genuine_key(kid) for kid in kids) if k]
    chain = {
        "format": FORMAT,
        **extra,
        "records": lines,
        "checkpoints": [{"id": m.id, "kid": m.kid, "jws": m.jws} for m in marks],
        "jwks": {"keys": public},
    }
    out.with_name(out.name + ".chain.json").write_text(json.dumps(chain, indent=1))
    return {"file": str(out), "records": len(lines), "sha256": digest.hexdigest(), **extra}


def verify_file(path: Path) -> dict[str, Any]:
    """Check an export against its own chain data and the signatures it carries."""
    chain = json.loads(path.with_name(path.name + ".chain.json").read_text())
    contents = path.read_bytes().split(b"\n")[:-1]
    records = chain["records"]
    problems: list[str] = []
    if len(contents) != len(records):
        problems.append(f"{len(contents)} lines but {len(records)} chain entries")
    by_position: dict[tuple[int, int], str] = {}
    previous: dict[int, tuple[int, str]] = {}
    for n, (content, info) in enumerate(zip(contents, records, strict=False), start=1):
        pid, pseq = info["partition"], info["pseq"]
        digest = hashlib.sha256(content).hexdigest()
        if digest != info["content_hash"]:
            problems.append(f"line {n}: content was modified")
        linked = link_hash(bytes.fromhex(info["prev_hash"]), bytes.fromhex(digest), pid, pseq).hex()
        if linked != info["chain_hash"]:
            problems.append(f"line {n}: chain hash does not match")
        before = previous.get(pid)
        if before and (before[0] + 1 != pseq or before[1] != info["prev_hash"]):
            problems.append(f"line {n}: does not follow partition {pid} record {before[0]}")
        previous[pid] = (pseq, info["chain_hash"])
        by_position[(pid, pseq)] = info["chain_hash"]
    anchored: dict[int, int] = {}
    keys = {k["kid"]: RSAKey.import_key(k) for k in chain["jwks"]["keys"]}
    for mark in chain["checkpoints"]:
        key = keys.get(mark["kid"])
        try:
            payload = json.loads(jws.deserialize_compact(mark["jws"], key).payload) if key else None
        except Exception:
            payload = None
        if payload is None:
            problems.append(f"checkpoint {mark['id']}: signature does not verify")
            continue
        for pid_text, (pseq, head) in payload["heads"].items():
            stored = by_position.get((int(pid_text), int(pseq)))
            if stored is not None and stored != head:
                problems.append(f"partition {pid_text} record {pseq}: differs from checkpoint")
            elif stored is not None:
                anchored[int(pid_text)] = max(anchored.get(int(pid_text), 0), int(pseq))
    covered = sum(1 for r in records if r["pseq"] <= anchored.get(r["partition"], 0))
    return {
        "ok": not problems,
        "records": len(records),
        "anchored_by_checkpoint": covered,
        "signing_keys": sorted(keys),
        "problems": problems[:50],
    }


# ---------------------------------------------------------------- archiving


def archive(
    engine: Engine, keys: KeyStore, settings: Settings, before: int, out: Path
) -> dict[str, Any]:
    """Move every partition's records recorded before `before` to `out` (an export), leaving
    a signed marker from which the rest of each chain verifies. Refused for anything younger
    than the retention period; each partition keeps at least its newest record."""
    limit = storage.now_us() - settings.audit_retention_days * 86_400_000_000
    if before > limit:
        raise ArchiveRefused(
            f"records younger than the retention period ({settings.audit_retention_days} days)"
            " cannot be archived"
        )
    checkpoints.take(engine, keys)
    with engine.connect() as conn:
        anchors = _current_anchors(conn, keys)
        runs = _archivable_runs(conn, before, anchors)
        if not runs:
            return {"archived": 0}
        summary = _write_runs(conn, keys, runs, out, {"before": before})
    heads = dict(anchors)
    with write_transaction(engine) as conn:
        for pid, (_lo, hi) in runs.items():
            chained = conn.execute(
                select(audit_event.c.chain_hash).where(
                    audit_event.c.partition_id == pid, audit_event.c.pseq == hi
                )
            ).scalar_one()
            heads[pid] = (hi, bytes(chained))
        created = storage.now_us()
        payload = {"before": before, "created": created, "file_sha256": summary["sha256"],
                   "heads": checkpoints.encode_heads(heads)}  # fmt: skip
        kid, token = checkpoints.sign(keys, payload)
        conn.execute(
            insert(audit_archive).values(created=created, before=before, kid=kid, jws=token)
        )
        for pid, (lo, hi) in runs.items():
            _delete_run(conn, pid, lo, hi)
    return {**summary, "archived": summary["records"]}


def _current_anchors(conn: Connection, keys: KeyStore) -> checkpoints.Heads:
    archive = checkpoints.latest_archive(conn, keys)
    if archive is None:
        return {}
    if archive[1] is None:
        raise ArchiveRefused("the last archive marker does not verify; run audit verify")
    return archive[1]


def _archivable_runs(conn: Connection, before: int, anchors: checkpoints.Heads) -> Runs:
    e = audit_event.c
    runs: Runs = {}
    partitions = conn.execute(
        select(e.partition_id, func.max(e.pseq)).group_by(e.partition_id)
    ).all()
    for pid, last in partitions:
        first_young = conn.execute(
            select(func.min(e.pseq)).where(e.partition_id == pid, e.recorded >= before)
        ).scalar()
        cut = min(int(last) - 1, int(first_young) - 1 if first_young else int(last))
        lo = anchors.get(pid, (0, b""))[0] + 1
        if cut >= lo:
            runs[pid] = (lo, cut)
    return runs


def _delete_run(conn: Connection, pid: int, lo: int, hi: int) -> None:
    e = audit_event.c
    in_run = and_(e.partition_id == pid, e.pseq >= lo, e.pseq <= hi)
    ids = select(e.id).where(in_run).scalar_subquery()
    for table in INDEX_TABLES.values():
        conn.execute(
            delete(table).where(table.c.resource_type == "AuditEvent", table.c.resource_id.in_(ids))
        )
    conn.execute(
        delete(resource_history).where(
            resource_history.c.resource_type == "AuditEvent", resource_history.c.id.in_(ids)
        )
    )
    conn.execute(
        delete(resource).where(resource.c.resource_type == "AuditEvent", resource.c.id.in_(ids))
    )
    conn.execute(delete(audit_event).where(in_run))
