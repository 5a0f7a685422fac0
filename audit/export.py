"""Export a date range of the audit trail and archive what is older than the retention period
(verifying an export offline: export_verify.py).

An export is two files: FILE.ndjson holds the AuditEvents exactly as stored (one per line,
byte for byte what was hashed: any FHIR bulk-data consumer can read it), and
FILE.ndjson.chain.json holds what is needed to verify them without the database: each line's
partition, position and hashes, and two signed markers. The export is the segment of the
trail between them: `start`, the newest checkpoint signed before the range began (or the last
archive marker, or nothing: the beginning of the trail), and `end`, the first checkpoint signed
after it ended (an archive's own marker for an archive). For every partition the file holds
every record after the start marker's head up to the end marker's head, so each run is
anchored at both ends by a signature: nothing can be dropped from it, at either end or in the
middle, and no partition can be left out, without a signature failing. The range is widened to
those markers (at most about one checkpoint interval on each side).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, Row, and_, delete, func, insert, select

from app.auth.keys import KeyStore
from app.db import write_transaction
from app.fhir import storage
from app.fhir.tables import INDEX_TABLES, resource, resource_history
from app.settings import Settings
from audit import checkpoints
from audit.tables import audit_archive, audit_checkpoint, audit_event

FORMAT = "medisentinel-audit-export/2"
Runs = dict[int, tuple[int, int]]  # partition -> (first pseq, last pseq), inclusive
# A record is recorded when built and committed a little later: the end checkpoint is one
# signed at least this long after the range ended, so that records in flight are in it.
END_MARGIN_US = 5_000_000


class ArchiveRefused(Exception):
    pass


class ExportRefused(Exception):
    pass


def write(engine: Engine, keys: KeyStore, start: int, end: int, out: Path) -> dict[str, Any]:
    """Records recorded in [start, end), widened to the signed markers around the range."""
    end = min(end, storage.now_us())  # nothing is recorded in the future
    if end <= start:
        raise ExportRefused("--to must be after --from (and --from in the past)")
    checkpoints.take(engine, keys, only_if_changed=False)  # an end marker for recent records
    with engine.connect() as conn:
        first = _start_marker(conn, keys, start)
        last = _end_marker(conn, keys, end)
        start_heads = _heads_of(first)
        runs = {
            pid: (start_heads.get(pid, (0, b""))[0] + 1, pseq)
            for pid, (pseq, _) in _heads_of(last).items()
            if pseq > start_heads.get(pid, (0, b""))[0]
        }
        summary = _write_lines(conn, runs, out)
    _write_chain(out, summary.pop("lines"), first, last, keys, {"from": start, "to": end})
    return {**summary, "from": start, "to": end, "covers": _covers(first, last)}


Marker = dict[str, Any]  # {"kind", "id", "created", "kid", "jws", "heads"}


def _start_marker(conn: Connection, keys: KeyStore, start: int) -> Marker | None:
    """The newest checkpoint signed at or before `start` and after the last archive (whose
    records are gone), else the last archive marker, else None (the beginning)."""
    archived = _archive_marker(conn, keys)
    after = archived["created"] if archived else -1
    c = audit_checkpoint.c
    rows = conn.execute(
        select(audit_checkpoint).where(c.created <= start, c.created >= after).order_by(c.id.desc())
    )
    return _first_valid(rows, keys, "checkpoint") or archived


def _end_marker(conn: Connection, keys: KeyStore, end: int) -> Marker:
    c = audit_checkpoint.c
    later = conn.execute(
        select(audit_checkpoint).where(c.created >= end + END_MARGIN_US).order_by(c.id)
    )
    found = _first_valid(later, keys, "checkpoint")
    if found is None:  # the range reaches (nearly) now: the checkpoint just taken
        newest = conn.execute(select(audit_checkpoint).order_by(c.id.desc()))
        found = _first_valid(newest, keys, "checkpoint")
    if found is None:
        raise ExportRefused("no checkpoint verifies with this server's keys; run audit verify")
    return found


def _archive_marker(conn: Connection, keys: KeyStore) -> Marker | None:
    rows = conn.execute(select(audit_archive).order_by(audit_archive.c.id.desc()).limit(1))
    return _first_valid(rows, keys, "archive")


def _first_valid(rows: Any, keys: KeyStore, kind: str) -> Marker | None:
    for row in rows:
        payload = checkpoints.open_signed(keys, row.kid, row.jws)
        if payload is not None:
            return _marker(row, kind, payload)
    return None


def _marker(row: Row[Any], kind: str, payload: dict[str, Any]) -> Marker:
    heads = checkpoints.decode_heads(payload["heads"])
    return {"kind": kind, "id": row.id, "created": row.created, "kid": row.kid,
            "jws": row.jws, "heads": heads}  # fmt: skip


def _heads_of(marker: Marker | None) -> checkpoints.Heads:
    return marker["heads"] if marker else {}


def _covers(first: Marker | None, last: Marker) -> dict[str, Any]:
    return {"after": first["created"] if first else None, "until": last["created"]}


def _write_lines(conn: Connection, runs: Runs, out: Path) -> dict[str, Any]:
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
    return {"file": str(out), "records": len(lines), "sha256": digest.hexdigest(), "lines": lines}


def _write_chain(
    out: Path,
    lines: list[dict[str, Any]],
    first: Marker | None,
    last: Marker,
    keys: KeyStore,
    extra: dict[str, Any],
) -> None:
    """The verification data. The public keys are carried for information only: a verifier
    must not trust keys the file brings (export_verify.py)."""
    kids = sorted({m["kid"] for m in (first, last) if m})
    public = [k.as_dict(private=False) for k in (keys.genuine_key(kid) for kid in kids) if k]
    chain = {
        "format": FORMAT,
        **extra,
        "records": lines,
        "start": _public_marker(first),
        "end": _public_marker(last),
        "jwks": {"keys": public},
    }
    out.with_name(out.name + ".chain.json").write_text(json.dumps(chain, indent=1))


def _public_marker(marker: Marker | None) -> dict[str, Any] | None:
    if marker is None:
        return None
    return {k: marker[k] for k in ("kind", "id", "kid", "jws")}


# ---------------------------------------------------------------- archiving


def archive(
    engine: Engine,
    keys: KeyStore,
    settings: Settings,
    before: int,
    out: Path,
    *,
    as_of: int | None = None,
) -> dict[str, Any]:
    """Move every partition's records recorded before `before` to `out` (an export), leaving
    a signed marker from which the rest of each chain verifies. Refused for anything younger
    than the retention period; each partition keeps at least its newest record.
    `as_of` (epoch µs) is the moment the retention is counted back from: now, always, for
    the command line; tests archive young records "as of" a date years ahead instead of
    lowering the retention below its six-year floor (settings.py)."""
    now = storage.now_us() if as_of is None else as_of
    limit = now - settings.audit_retention_days * 86_400_000_000
    if before > limit:
        raise ArchiveRefused(
            f"records younger than the retention period ({settings.audit_retention_days} days)"
            " cannot be archived"
        )
    checkpoints.take(engine, keys)
    with engine.connect() as conn:
        anchors = _current_anchors(conn, keys)
        previous = _archive_marker(conn, keys)
        runs = _archivable_runs(conn, before, anchors)
        if not runs:
            return {"archived": 0}
        summary = _write_lines(conn, runs, out)
    lines = summary.pop("lines")
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
        marker_id = conn.execute(
            insert(audit_archive)
            .values(created=created, before=before, kid=kid, jws=token)
            .returning(audit_archive.c.id)
        ).scalar_one()
        # The file ends where the new marker's heads are: it is the archive's own end anchor.
        # Written before the rows go (a failure here rolls the deletion back).
        marker = {"kind": "archive", "id": marker_id, "created": created, "kid": kid,
                  "jws": token, "heads": heads}  # fmt: skip
        _write_chain(out, lines, previous, marker, keys, {"before": before})
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
