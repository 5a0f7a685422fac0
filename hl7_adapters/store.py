"""Rows of the message store (``tables.py``): building them, finding earlier receipts of the
same message, writing them in the caller's unit of work, and the error queue.

Writes happen inside a unit of work opened on the door (``FhirService.unit_of_work``), so a
message's row commits or rolls back with the resources it produced and its audit record.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, bindparam, literal, null, select, union_all, update

from app.fhir.storage import UnitOfWork, now_us
from hl7_adapters.er7 import Message
from hl7_adapters.tables import HEADER_LIMIT, QUEUED, hl7_message

c = hl7_message.c
ERROR_LIMIT = 4000
TRUNCATED = "truncated"  # the status of a message over the size limit: only its head is kept
_LINE_END = re.compile(rb"\r\n|\r|\n")
_BOM = b"\xef\xbb\xbf"


def content_hash(raw: bytes) -> bytes:
    """SHA-256 of a message as the duplicate check compares it: segments ended by CR, each
    without trailing blanks, blank lines and a byte-order mark dropped. A re-send that
    differs only there (CRLF or LF line ends, a trailing CR or LF, spaces at line ends) is
    the same message; the raw bytes are stored as received. (A message already in that form
    hashes as its raw bytes did before this normalisation existed.)"""
    lines = _LINE_END.split(raw.removeprefix(_BOM))
    kept = b"".join(line.rstrip(b" \t") + b"\r" for line in lines if line.strip(b" \t"))
    return hashlib.sha256(kept).digest()


def clean(value: str, limit: int = HEADER_LIMIT) -> str:
    """A value fit for a text column: no control characters but line breaks and tabs
    (PostgreSQL refuses NUL in text), cut to `limit`. The raw bytes keep the exact value."""
    if value.isprintable():
        return value[:limit]
    kept = "".join(ch if ch in "\r\n\t" or ch.isprintable() else "" for ch in value[: limit * 2])
    return kept[:limit]


def new_row(raw: bytes, msg: Message | None, *, channel: str, peer: str | None) -> dict[str, Any]:
    """A complete row (every column: staged rows are inserted column for column) for a
    message as received; status and outcome columns are filled in when it is decided."""
    row: dict[str, Any] = {
        "id": uuid.uuid4().hex,
        "received": now_us(),
        "channel": channel,
        "peer": clean(peer or "", 128) or None,
        "sending_application": "",
        "sending_facility": "",
        "receiving_application": "",
        "receiving_facility": "",
        "control_id": "",
        "message_code": "",
        "trigger_event": "",
        "version": "",
        "event_time": None,
        "content_hash": content_hash(raw),
        "raw": raw,
        "status": "rejected",
        "ack": None,
        "ack_code": None,
        "error": None,
        "produced": None,
        "provenance_id": None,
        "duplicate_of": None,
        "superseded_by": None,
        "control_id_reuse_of": None,
        "reprocess_count": 0,
        "reprocessed_at": None,
    }
    if msg is not None:
        row.update(header_values(msg))
    return row


def header_values(msg: Message) -> dict[str, str]:
    return {
        "sending_application": clean(msg.sending_application.raw),
        "sending_facility": clean(msg.sending_facility.raw),
        "receiving_application": clean(msg.receiving_application.raw),
        "receiving_facility": clean(msg.receiving_facility.raw),
        "control_id": clean(msg.control_id),
        "message_code": clean(msg.message_code, 16),
        "trigger_event": clean(msg.trigger_event, 16),
        "version": clean(msg.version, 16),
    }


@dataclass(frozen=True)
class Earlier:
    """What the store already holds under a message's sender and control id."""

    accepted: Any | None  # the latest accepted receipt of the same bytes (a re-send of it)
    failed: list[str]  # error/rejected receipts of the same bytes (a retry supersedes them)
    other_content: str | None  # a receipt with the same control id but other bytes


# The look-up of `earlier`, built once (every message runs it; constructing a statement
# costs more than running its cached compiled form): receipts of the same bytes, and one
# receipt of other bytes, in one round trip (a UNION ALL; each part keeps its own filter, so a
# sender that reuses control ids for new messages never makes it fetch them all).
_KEY = (
    (c.sending_application == bindparam("app"))
    & (c.sending_facility == bindparam("facility"))
    & (c.control_id == bindparam("control"))
)
_SAME_CONTENT = select(
    literal(True).label("same"), c.id, c.status, c.ack, c.reprocess_count, c.received
).where(
    _KEY,
    c.content_hash == bindparam("hash"),
    c.id != bindparam("id"),
    c.status.in_(("accepted", *QUEUED)),
)
_ONE_OTHER_CONTENT = (
    select(c.id).where(_KEY, c.content_hash != bindparam("hash")).limit(1).subquery()
)
_EARLIER = union_all(
    _SAME_CONTENT,
    select(literal(False), _ONE_OTHER_CONTENT.c.id, null(), null(), null(), null()),
)


def earlier(uow: UnitOfWork, row: dict[str, Any]) -> Earlier:
    uow.flush()
    params = {
        "app": row["sending_application"],
        "facility": row["sending_facility"],
        "control": row["control_id"],
        "hash": row["content_hash"],
        "id": row["id"],
    }
    found = list(uow.conn.execute(_EARLIER, params))
    same = sorted((r for r in found if r.same), key=lambda r: r.received, reverse=True)
    accepted = next((r for r in same if r.status == "accepted"), None)
    other = next((r.id for r in found if not r.same), None)
    return Earlier(accepted, [r.id for r in same if r.status in QUEUED], other)


def save(uow: UnitOfWork, row: dict[str, Any], *, reprocessed: bool, supersedes: list[str]) -> None:
    """Insert a new receipt, or (reprocess) record the new outcome on the stored one; mark
    earlier failed receipts of the same bytes as superseded by it."""
    if row["error"]:  # error texts quote the sender's values, which may hold any byte
        row["error"] = clean(row["error"], ERROR_LIMIT)
    if reprocessed:
        uow.flush()
        uow.conn.execute(
            update(hl7_message)
            .where(c.id == row["id"])
            .values(
                status=row["status"],
                error=row["error"],
                produced=row["produced"],
                provenance_id=row["provenance_id"],
                event_time=row["event_time"],
                reprocess_count=c.reprocess_count + 1,
                reprocessed_at=now_us(),
            )
        )
    else:
        uow.stage(hl7_message, row)
    if supersedes:
        uow.flush()
        uow.conn.execute(
            update(hl7_message)
            .where(c.id.in_(supersedes), c.status.in_(QUEUED))
            .values(status="superseded", superseded_by=row["id"])
        )


def produced_json(refs: list[str]) -> str | None:
    return json.dumps(refs) if refs else None


# ---------------------------------------------------------------- reading (CLI, tests)

SUMMARY_COLUMNS = (
    c.id,
    c.received,
    c.channel,
    c.peer,
    c.status,
    c.sending_application,
    c.sending_facility,
    c.control_id,
    c.message_code,
    c.trigger_event,
    c.version,
    c.ack_code,
    c.error,
    c.produced,
    c.provenance_id,
    c.duplicate_of,
    c.superseded_by,
    c.control_id_reuse_of,
    c.reprocess_count,
)


def summary(row: Any) -> dict[str, Any]:
    """A row as JSON-friendly values (never the raw message: it is PHI)."""
    out = {col.name: getattr(row, col.name) for col in SUMMARY_COLUMNS}
    out["produced"] = json.loads(row.produced) if row.produced else []
    return out


def load(engine: Engine, message_id: str) -> Any | None:
    with engine.connect() as conn:
        return conn.execute(
            select(*SUMMARY_COLUMNS, c.raw, c.ack).where(c.id == message_id)
        ).first()


def error_queue(engine: Engine, *, limit: int = 100) -> list[Any]:
    """Messages waiting for a fix, oldest first."""
    with engine.connect() as conn:
        return list(
            conn.execute(
                select(*SUMMARY_COLUMNS)
                .where(c.status.in_(QUEUED))
                .order_by(c.received, c.id)
                .limit(limit)
            )
        )


def accepted_between(
    engine: Engine, since: int | None, until: int | None, *, limit: int = 1000
) -> list[Any]:
    """Accepted messages received in [since, until) (epoch microseconds; None: open), oldest
    first: what `hl7 reprocess --accepted --since/--until` re-applies."""
    query = select(c.id).where(c.status == "accepted")
    if since is not None:
        query = query.where(c.received >= since)
    if until is not None:
        query = query.where(c.received < until)
    with engine.connect() as conn:
        return list(conn.execute(query.order_by(c.received, c.id).limit(limit)))
