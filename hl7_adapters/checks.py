"""What the pipeline checks of every message before and besides its mapping.

* Refusals (AR, the message is not processed): a header the standard requires that is missing
  or not acceptable to this receiver -- MSH-10 empty (HL7 v2.5.1 2.14.9.10: required; without
  it the sender cannot match the ACK to its message, nor we a re-send to its original), and an
  MSH-11 processing id this server does not take (HL7 chapter 2: the receiver checks MSH-11
  and rejects what it does not process; ERR 202). Training (T) and debugging (D) messages
  must not land in production data unless the server is configured for them.
* Warnings (ERR severity W in the ACK, kept with the stored message): what the tokenizer had
  to repair or guess (er7.py and charsets.py record each as text), and an MSH-7 that is empty
  or not a date/time.
"""

from __future__ import annotations

from hl7_adapters.ack import AckError
from hl7_adapters.er7 import Message

PRODUCTION = frozenset({"P"})

# The parser's warning texts, by how they begin: (ERR code, segment, field). HL7 table 0357
# has no code for "repaired": 100 (segment sequence) for structure, 102 (data type) for bytes
# and encoding characters, 103 (table value) for an MSH-9.3 not in table 0354.
_PARSER_NOTES: tuple[tuple[str, int, str, int | None], ...] = (
    ("MSH-18 ", 102, "MSH", 18),
    ("non-ASCII bytes", 102, "MSH", 18),
    ("bytes not valid in", 102, "MSH", 18),
    ("bytes look like UTF-8", 102, "MSH", 18),
    ("MSH-2 ", 102, "MSH", 2),
    ("MSH-9.3 ", 103, "MSH", 9),
)


def processing_ids(setting: str | None) -> frozenset[str]:
    """The MSH-11.1 values a server takes, from a comma list ("P,T"); P when unset."""
    values = {v.strip().upper() for v in (setting or "").split(",") if v.strip()}
    return frozenset(values) or PRODUCTION


def refusal(msg: Message, accepted_ids: frozenset[str] = PRODUCTION) -> AckError | None:
    """Why the message is refused before it is mapped (AR), or None."""
    if not msg.control_id:
        text = "MSH-10 (message control id) is empty; it is required"
        return AckError(101, text, "E", "MSH", 1, 10)
    processing = msg.processing_id.upper() or "P"  # empty: production, as most senders mean
    if processing not in accepted_ids:
        taken = ", ".join(sorted(accepted_ids))
        text = f"MSH-11 processing id '{processing}' is not accepted here (only {taken})"
        return AckError(202, text, "E", "MSH", 1, 11)
    return None


def warnings(msg: Message) -> list[AckError]:
    """The parser's repairs and header problems of `msg`, as ERR severity W."""
    found = [_parser_note(text) for text in msg.warnings]
    if not msg.timestamp:
        found.append(AckError(101, "MSH-7 (date/time of message) is empty", "W", "MSH", 1, 7))
    elif msg.timestamp_fhir is None:
        text = f"MSH-7 '{msg.timestamp}' is not a valid date/time"
        found.append(AckError(102, text, "W", "MSH", 1, 7))
    return found


def _parser_note(text: str) -> AckError:
    for start, code, segment, field in _PARSER_NOTES:
        if text.startswith(start):
            return AckError(code, text, "W", segment, 1, field)
    return AckError(100, text, "W")  # junk, joined or glued lines: no one field to point at
