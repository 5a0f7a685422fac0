"""How a message ended, and the small rules that decide it (for ingest.py): the Decision, the
answer to a failure, which failures are retried, the row's error text, MSA-1 of an ACK."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field

import sqlalchemy.exc

from app.errors import FhirError
from app.fhir.instants import parse_instant
from hl7_adapters.ack import AckError, Outcome
from hl7_adapters.applied import ApplyError
from hl7_adapters.er7 import Message
from hl7_adapters.mapping.plan import MappingResult

log = logging.getLogger("hl7_adapters.ingest")

RETRY_SQLSTATES = frozenset({"40001", "40P01"})  # serialization failure, deadlock detected
_MSA1 = re.compile(rb"(?:^|[\r\n])MSA(.)([A-Z]{2})")


@dataclass
class Decision:
    """How a message ended: the ACK outcome, its ERR segments, the text kept in the store."""

    outcome: Outcome  # accept | error | reject
    errors: list[AckError] = field(default_factory=list)
    detail: str = ""
    internal: bool = False  # our failure (audit outcome 8), not a problem with the content


def event_time(mapped: MappingResult | Decision, msg: Message) -> int | None:
    """EVN-2 as the mapping read it, else MSH-7, in epoch microseconds; None if neither."""
    value = mapped.event_time if isinstance(mapped, MappingResult) else None
    value = value or msg.timestamp_fhir
    if not value:
        return None
    try:
        return parse_instant(value)
    except (ValueError, OverflowError):
        return None


def row_error(detail: str, notes: list[AckError]) -> str | None:
    """The row's error text: why it failed, and what the parser repaired (kept with the
    message also when it was accepted, or when no ACK was sent)."""
    repaired = "; ".join(n.text for n in notes)
    if repaired:
        detail = f"{detail}; parser warnings: {repaired}" if detail else f"warnings: {repaired}"
    return detail or None  # (store.save cuts it to the column)


def msa1(ack: bytes) -> str | None:
    found = _MSA1.search(ack)
    return found.group(2).decode() if found else None


def retryable(exc: Exception) -> bool:
    if isinstance(exc, FhirError):
        return exc.status in (409, 412)
    if isinstance(exc, sqlalchemy.exc.DBAPIError):
        return getattr(exc.orig, "sqlstate", None) in RETRY_SQLSTATES
    return False


def failure(exc: Exception) -> Decision:
    """What to answer when applying failed (the transaction rolled back)."""
    if isinstance(exc, ApplyError):
        return Decision("error", [exc.error], str(exc))
    if isinstance(exc, FhirError) and exc.status < 500:
        detail = f"{exc.status} {exc.message}"
        if exc.status in (401, 403):
            return Decision("reject", [AckError(207, f"not allowed: {exc.message}")], detail)
        if exc.status in (409, 412):
            text = "a record it changes was being changed concurrently; send it again"
            return Decision("error", [AckError(206, text)], detail)
        refused = AckError(207, f"refused by the FHIR store: {exc.message}")
        return Decision("error", [refused], detail)
    log.error("applying an HL7 message failed", exc_info=exc)
    detail = f"{type(exc).__name__}: {exc}"[:4000]
    return Decision("error", [AckError(207, "Application internal error")], detail, True)
