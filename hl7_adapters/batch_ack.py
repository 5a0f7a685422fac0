"""The answer to an FHS/BHS batch: a batch of acknowledgments (HL7 v2 chapter 2, batch protocol).

Each message of a batch is processed and committed on its own (one bad message must not hold
back the others), and each gets its own ACK, exactly as if it had been sent alone. The reply
wraps those ACKs in the same envelope the sender used: FHS (when it sent one), BHS with sender
and receiver swapped, a new batch control id and BHS-12 (reference batch control id) naming
the sender's BHS-11, then BTS with the number of ACKs, and FTS. Messages whose sender asked
for no acknowledgment (MSH-15/16) are left out of the count as well as the body.
"""

from __future__ import annotations

from hl7_adapters.ack import hl7_now, new_control_id
from hl7_adapters.er7 import Batch
from hl7_adapters.escapes import DEFAULT_DELIMITERS, Delimiters
from hl7_adapters.values import Segment


def _header(kind: str, incoming: Segment | None, d: Delimiters) -> str:
    def raw(n: int) -> str:
        return incoming.raw(n) if incoming is not None else ""

    fields = [raw(5), raw(6), raw(3), raw(4), hl7_now(), "", "", "", new_control_id(), raw(11)]
    while fields and not fields[-1]:
        fields.pop()
    return d.field.join([kind + d.field + d.encoding_characters, *fields])


def batch_ack(batch: Batch, acks: list[bytes]) -> bytes:
    """The ACK batch for `batch`, holding `acks` (each already encoded for its message)."""
    segments = {s.id: s for s in batch.header}
    first = batch.header[0] if batch.header else None
    d = first.delimiters if first is not None else DEFAULT_DELIMITERS
    head = []
    if "FHS" in segments:
        head.append(_header("FHS", segments["FHS"], d))
    head.append(_header("BHS", segments.get("BHS") or segments.get("FHS"), d))
    tail = [f"BTS{d.field}{len(acks)}"]
    if "FHS" in segments:
        tail.append(f"FTS{d.field}1")
    return _latin1("\r".join(head) + "\r") + b"".join(acks) + _latin1("\r".join(tail) + "\r")


def _latin1(text: str) -> bytes:
    """Envelope segments were decoded as Latin-1 (er7.parse_batch): written back the same way,
    their values come out as the very bytes the sender used."""
    return text.encode("latin-1", errors="replace")
