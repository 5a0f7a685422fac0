"""The HL7 v2 message store and the feed's per-resource event clock (migration 0008 makes them).

`hl7_message` keeps every inbound message exactly as received (`raw`, never regenerated), with
what became of it: the status, the ACK bytes sent, the error, the resources it produced and
the Provenance that links them. It is the integration engine's journal: duplicates are found
in it, failed messages wait in it (the error queue) until `medisentinel hl7 reprocess` runs
them again. One row per message; a batch gives one row per message it holds.

Statuses:
    accepted    applied and committed (AA/CA was sent)
    error       not applied: content the mapping refused, or a database failure (AE/CE)
    rejected    not applied: unreadable, unsupported type/version, or not allowed (AR/CR)
    duplicate   a re-send of an accepted message: answered with the original ACK, nothing applied
    superseded  an error/rejected message whose same bytes were received again later (the
                newer row carries the current state; `superseded_by` names it)

`hl7_resource_clock` holds, per resource an upsert wrote, the HL7 event time (EVN-2/MSH-7)
of the message that last wrote it: an older message must not overwrite newer data. It is kept
here rather than in the resource (a meta extension) because it is the feed's bookkeeping, not
clinical content: REST clients cannot drop or forge it by rewriting the resource, it survives
any update from another channel, and checking it costs one indexed row, not parsing the resource.

Times are integer microseconds since the Unix epoch, like the FHIR tables.
"""

from __future__ import annotations

import functools
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Index,
    Integer,
    LargeBinary,
    String,
    Table,
    Text,
    bindparam,
    select,
    tuple_,
)
from sqlalchemy.dialects import sqlite

from app.fhir.tables import metadata

STATUSES = ("accepted", "error", "rejected", "duplicate", "superseded")
QUEUED = ("error", "rejected")  # the error queue: what `hl7 reprocess --errors` takes
HEADER_LIMIT = 200  # MSH values are cut to this many characters (they are indexed)

hl7_message = Table(
    "hl7_message",
    metadata,
    Column("id", String(36), primary_key=True),  # uuid4 hex; Provenance.entity names it
    Column("received", BigInteger, nullable=False),
    Column("channel", String(16), nullable=False),  # mllp | http
    Column("peer", String(128), nullable=True),  # remote address[:port]
    Column("sending_application", String(HEADER_LIMIT), nullable=False, default=""),  # MSH-3
    Column("sending_facility", String(HEADER_LIMIT), nullable=False, default=""),  # MSH-4
    Column("receiving_application", String(HEADER_LIMIT), nullable=False, default=""),  # MSH-5
    Column("receiving_facility", String(HEADER_LIMIT), nullable=False, default=""),  # MSH-6
    Column("control_id", String(HEADER_LIMIT), nullable=False, default=""),  # MSH-10
    Column("message_code", String(16), nullable=False, default=""),  # MSH-9.1
    Column("trigger_event", String(16), nullable=False, default=""),  # MSH-9.2
    Column("version", String(16), nullable=False, default=""),  # MSH-12
    Column("event_time", BigInteger, nullable=True),  # EVN-2, else MSH-7
    Column("content_hash", LargeBinary, nullable=False),  # SHA-256(raw)
    Column("raw", LargeBinary, nullable=False),  # the bytes as received
    Column("status", String(16), nullable=False),
    Column("ack", LargeBinary, nullable=True),  # the ACK sent (NULL: none was asked for)
    Column("ack_code", String(2), nullable=True),  # its MSA-1
    Column("error", Text, nullable=True),
    Column("produced", Text, nullable=True),  # JSON list of Type/id/_history/n
    Column("provenance_id", String(64), nullable=True),
    Column("duplicate_of", String(36), nullable=True),  # status duplicate: the original
    Column("superseded_by", String(36), nullable=True),  # status superseded: the newer row
    Column("control_id_reuse_of", String(36), nullable=True),  # same MSH-10, other content
    Column("reprocess_count", Integer, nullable=False, default=0),
    Column("reprocessed_at", BigInteger, nullable=True),
    # Duplicate lookup: one sender's control id and content. The hash is in the key so that a
    # sender that never varies MSH-10 (some do) still costs one index probe per message.
    Index(
        "ix_hl7_message_sender_control",
        "sending_application",
        "sending_facility",
        "control_id",
        "content_hash",
    ),
    Index("ix_hl7_message_status_received", "status", "received"),  # the error queue
    Index("ix_hl7_message_received", "received"),
)

hl7_resource_clock = Table(
    "hl7_resource_clock",
    metadata,
    Column("resource_type", String(64), primary_key=True),
    Column("resource_id", String(64), primary_key=True),
    Column("event_time", BigInteger, nullable=False),
    Column("message_id", String(36), nullable=False),
)


# The applier's event clock statements (apply.py), built once: constructing a statement
# costs more than running the cached compiled form.
CLOCKS_OF = select(
    hl7_resource_clock.c.resource_type,
    hl7_resource_clock.c.resource_id,
    hl7_resource_clock.c.event_time,
).where(
    tuple_(hl7_resource_clock.c.resource_type, hl7_resource_clock.c.resource_id).in_(
        bindparam("keys", expanding=True)
    )
)
PG_CLOCKS = (
    "INSERT INTO hl7_resource_clock (resource_type, resource_id, event_time, message_id)"
    " SELECT t, i, %(event_time)s::bigint, %(message_id)s::text"
    " FROM unnest(%(types)s::text[], %(ids)s::text[]) AS u(t, i)"
    " ON CONFLICT (resource_type, resource_id) DO UPDATE"
    " SET event_time = EXCLUDED.event_time, message_id = EXCLUDED.message_id"
)


@functools.cache
def sqlite_clock_upsert() -> Any:
    """Built once (constructing the statement costs more than running it)."""
    stmt = sqlite.insert(hl7_resource_clock)
    return stmt.on_conflict_do_update(
        index_elements=["resource_type", "resource_id"],
        set_={"event_time": stmt.excluded.event_time, "message_id": stmt.excluded.message_id},
    )
