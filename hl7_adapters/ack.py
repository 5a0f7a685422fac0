"""HL7 v2 acknowledgments: original (AA/AE/AR) and enhanced (CA/CE/CR) mode, with ERR segments.

Rules followed (HL7 v2 chapter 2, acknowledgment modes):

* Original mode when MSH-15 and MSH-16 are both empty: one application ACK, AA/AE/AR.
* Enhanced mode otherwise, as an integration engine answers: first the accept (commit)
  acknowledgment, which says whether the message is in safe storage -- CA when it was
  committed (whatever processing found: every message is kept in the message store), CR
  when it was refused for its header (unsupported type, event or version, a processing id
  not taken, no MSH-10, over the size limit: HL7 table 0008 "commit reject"), CE when it
  could not be stored at all. It is sent when MSH-15 asks for it in that outcome (HL7 table
  0155: AL always, NE never, ER on CE/CR, SU on CA; empty counts as AL). Then, for a
  committed message, the application acknowledgment AA/AE/AR with the processing outcome,
  when MSH-16 asks (the same table; empty: none); for a message not committed only when
  MSH-15 kept the commit ACK back (so NE/AL still hears AR for an unsupported message).
  The two are separate ACK messages; ``build_ack`` returns them one after the other, and
  ``split_first`` parts them (MLLP sends them as two frames). When neither is wanted
  ``build_ack`` returns None -- unless ``force`` is set (HTTP always answers; the MLLP
  server reports its own failures), which yields the commit ACK, carrying the processing's
  findings as its ERR segments.
* The ACK swaps sending and receiving application/facility, gets a new control ID, keeps
  MSH-2, MSH-11, MSH-12 and MSH-18 of the message, MSH-9 = ACK^<trigger>^ACK; MSA-2 = MSH-10.
* ERR: v2.5+ uses ERR-2 (location), ERR-3 (HL7 table 0357 code), ERR-4 (severity) and ERR-8
  (user message); before v2.5 the one field ERR-1 (segment^sequence^field^code&text&HL70357)
  is what receivers read, so that is written instead, plus MSA-3 text.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from hl7_adapters import charsets
from hl7_adapters.er7 import Hl7ParseError, Message, parse_messages
from hl7_adapters.escapes import DEFAULT_DELIMITERS, Delimiters, escape

Outcome = Literal["accept", "error", "reject"]
_MSH_START = re.compile(rb"MSH[!-/:-@\[-`{-~]")  # MSH and a printable ASCII separator

ORIGINAL_CODES: dict[str, str] = {"accept": "AA", "error": "AE", "reject": "AR"}
ENHANCED_CODES: dict[str, str] = {"accept": "CA", "error": "CE", "reject": "CR"}

# HL7 table 0357 (message error condition codes).
ERROR_CODES: dict[int, str] = {
    0: "Message accepted",
    100: "Segment sequence error",
    101: "Required field missing",
    102: "Data type error",
    103: "Table value not found",
    104: "Value too long",
    200: "Unsupported message type",
    201: "Unsupported event code",
    202: "Unsupported processing id",
    203: "Unsupported version id",
    204: "Unknown key identifier",
    205: "Duplicate key identifier",
    206: "Application record locked",
    207: "Application internal error",
}


@dataclass(frozen=True, slots=True)
class AckError:
    """One ERR segment: HL7 error code (table 0357), severity (E/W/I/F), text and location."""

    code: int = 207
    text: str = ""
    severity: Literal["E", "W", "I", "F"] = "E"
    segment: str = ""
    sequence: int | None = None
    field: int | None = None
    repetition: int | None = None
    component: int | None = None
    subcomponent: int | None = None


def new_control_id() -> str:
    """A fresh MSH-10: 20 characters, the ST length limit of the older versions."""
    return uuid.uuid4().hex[:20].upper()


def hl7_now() -> str:
    """The current time as an HL7 DTM with offset, e.g. 20240131154501+0100."""
    return datetime.now().astimezone().strftime("%Y%m%d%H%M%S%z")


def _version_tuple(version: str) -> tuple[int, ...]:
    parts = re.findall(r"\d+", version)[:3]
    return tuple(int(p) for p in parts) if parts else (2, 5)


def _condition_met(condition: str, outcome: Outcome) -> bool:
    """HL7 table 0155: AL always, NE never, ER on error/reject, SU on success."""
    if condition == "NE":
        return False
    if condition == "ER":
        return outcome != "accept"
    if condition == "SU":
        return outcome == "accept"
    return True  # AL, empty, or a value we do not know: acknowledge rather than stay silent


# Errors that refuse a message for its header: the commit is rejected (CR), not only the
# application's processing (HL7 table 0008: "interaction identifier, version or processing
# mode incompatible"; we count the size limit and a missing control id with them).
COMMIT_REJECT_CODES = frozenset({104, 200, 201, 202, 203})


def _refuses_header(err: AckError) -> bool:
    if err.severity not in ("E", "F"):
        return False
    return err.code in COMMIT_REJECT_CODES or (err.segment, err.field, err.code) == ("MSH", 10, 101)


def commit_outcome(outcome: Outcome, errors: Sequence[AckError], stored: bool) -> Outcome:
    """Enhanced mode's accept acknowledgment: reject for a header refusal, accept when the
    message is in safe storage (whatever its processing found), error when it is not."""
    if outcome == "reject" and any(_refuses_header(e) for e in errors):
        return "reject"
    return "accept" if stored else "error"


def ack_codes(
    msg: Message,
    outcome: Outcome,
    errors: Sequence[AckError] = (),
    *,
    stored: bool = True,
    force: bool = False,
) -> list[str]:
    """The MSA-1 codes of the ACKs to send, in order (rules in the module doc); [] for none."""
    if not msg.enhanced_ack_mode:
        return [ORIGINAL_CODES[outcome]]
    commit = commit_outcome(outcome, errors, stored)
    wanted_commit = _condition_met(msg.accept_ack_type or "AL", commit)
    application = msg.application_ack_type
    wanted_application = bool(application) and _condition_met(application, outcome)
    codes = [ENHANCED_CODES[commit]] if wanted_commit else []
    # The application ACK follows a committed message. A message not committed gets none --
    # unless the sender hears of it no other way (MSH-15 NE/SU): then the AR/AE that MSH-16
    # asks for, so that a sender waiting for its application ACK (IHE PCD-01: NE/AL) is not
    # left waiting.
    if wanted_application and (commit == "accept" or not wanted_commit):
        codes.append(ORIGINAL_CODES[outcome])
    if force and not codes:  # one answer, carrying whatever processing found
        codes.append(ENHANCED_CODES[commit])
    return codes


def ack_code(msg: Message, outcome: Outcome, *, force: bool = False) -> str | None:
    """The MSA-1 code of the first ACK sent for an outcome, None when none is sent."""
    codes = ack_codes(msg, outcome, force=force)
    return codes[0] if codes else None


_NEXT_MESSAGE = re.compile(rb"\rMSH")


def split_first(acks: bytes) -> tuple[bytes, bytes]:
    """(the first ACK message, the rest): an enhanced-mode commit ACK and the application
    ACK after it. Within an ACK, CR only ends segments (texts are escaped)."""
    found = _NEXT_MESSAGE.search(acks)
    if found is None:
        return acks, b""
    return acks[: found.start() + 1], acks[found.start() + 1 :]


def _join(values: Sequence[str], sep: str) -> str:
    """Join with trailing empty values trimmed (HL7 receivers expect no dangling delimiters)."""
    items = list(values)
    while items and not items[-1]:
        items.pop()
    return sep.join(items)


def _num(value: int | None) -> str:
    return "" if value is None else str(value)


def _err_segment(err: AckError, d: Delimiters, old: bool) -> str:
    c, s = d.component, d.subcomponent
    text = escape(err.text or ERROR_CODES.get(err.code, ""), d)
    code_name = escape(ERROR_CODES.get(err.code, "Error"), d)
    if old:
        code = _join([str(err.code), text, "HL70357"], s)
        eld = _join([err.segment, _num(err.sequence), _num(err.field), code], c)
        return _join(["ERR", eld], d.field)
    location = _join(
        [
            err.segment,
            _num(err.sequence),
            _num(err.field),
            _num(err.repetition),
            _num(err.component),
            _num(err.subcomponent),
        ],
        c,
    )
    hl7_code = _join([str(err.code), code_name, "HL70357"], c)
    fields = ["ERR", "", location, hl7_code, err.severity, "", "", "", text]
    return _join(fields, d.field)


def _render(
    header: dict[int, str],
    code: str,
    control_id: str,
    errors: Sequence[AckError],
    d: Delimiters,
    version: str,
) -> str:
    old = _version_tuple(version) < (2, 5)
    msh = [header.get(n, "") for n in range(3, 19)]
    segments = [_join(["MSH" + d.field + d.encoding_characters, *msh], d.field)]
    msa_text = ""
    if errors and _version_tuple(version) < (2, 7):
        msa_text = escape(errors[0].text or ERROR_CODES.get(errors[0].code, ""), d)
    segments.append(_join(["MSA", code, control_id, msa_text], d.field))
    segments.extend(_err_segment(err, d, old) for err in errors)
    return "\r".join(segments) + "\r"


def build_ack(
    msg: Message,
    outcome: Outcome = "accept",
    errors: Sequence[AckError] = (),
    *,
    force: bool = False,
    stored: bool = True,
    code: str | None = None,
    control_id: str | None = None,
    timestamp: str | None = None,
) -> bytes | None:
    """The encoded ACK(s) for ``msg`` (same delimiters and character set), or None if none is
    wanted: in enhanced mode the commit ACK, then the application ACK (module doc).

    ``stored``: whether the message is in safe storage (False: CE in enhanced mode).
    ``code`` overrides the MSA-1 code chosen from ``outcome`` and the MSH-15/16 rules.
    """
    codes = [code] if code else ack_codes(msg, outcome, errors, stored=stored, force=force)
    if not codes:
        return None
    parts = []
    for n, one in enumerate(codes):
        # A commit accept says the message is stored, no more: the findings of processing go
        # in the application ACK that follows (or with the CA itself when none follows).
        shown = () if one == "CA" and len(codes) > 1 else errors
        ident = control_id if n == 0 else None
        parts.append(_encode(msg, one, shown, ident, timestamp))
    return b"".join(parts)


def _encode(
    msg: Message,
    code: str,
    errors: Sequence[AckError],
    control_id: str | None,
    timestamp: str | None,
) -> bytes:
    msh, d = msg.msh, msg.delimiters
    version = msg.version
    trigger = escape(msg.trigger_event, d)
    with_structure = _version_tuple(version) >= (2, 3, 1)
    msg_type = _join(["ACK", trigger, "ACK" if with_structure and trigger else ""], d.component)
    header = {
        3: msh.raw(5),
        4: msh.raw(6),
        5: msh.raw(3),
        6: msh.raw(4),
        7: timestamp or hl7_now(),
        9: msg_type,
        10: control_id or new_control_id(),
        11: msh.raw(11) or "P",
        12: msh.raw(12) or "2.5",
        18: msh.raw(18),
    }
    if msg.enhanced_ack_mode:
        header[15] = header[16] = "NE"  # never acknowledge an acknowledgment
    text = _render(header, code, msh.raw(10), errors, d, version)
    # Without MSH-18 the text goes out as UTF-8 (identical for ASCII): an error text naming a
    # non-ASCII value stays readable. A declared set is honoured ('?' for what it cannot hold).
    codec = "utf-8" if msg.codec == "ascii" and not msg.charset else msg.codec
    return charsets.encode(text, codec)


def _salvage_header(raw: bytes) -> tuple[dict[int, str], str, str, str]:
    """Best effort: (ACK header fields, incoming control id, version, MSH-15) from broken bytes.

    Values are cut to printable text and escaped for the default delimiters, because the
    message's own delimiters are exactly what could not be trusted.
    """
    found = _MSH_START.search(raw)
    if found is None:
        return {}, "", "", ""
    line = re.split(rb"[\r\n]", raw[found.start() :], maxsplit=1)[0]
    parts = [p.decode("latin-1") for p in line.split(line[3:4])]

    def part(n: int) -> str:  # MSH-n is parts[n - 1] once the line is split on MSH-1
        value = parts[n - 1] if 1 <= n - 1 < len(parts) else ""
        return "".join(ch for ch in value if ch.isprintable())[:80]

    header = {n: escape(part(m), DEFAULT_DELIMITERS) for n, m in ((3, 5), (4, 6), (5, 3), (6, 4))}
    header[11] = escape(part(11), DEFAULT_DELIMITERS)
    version = re.match(r"\d+(?:\.\d+){0,2}", part(12).strip())
    return header, escape(part(10), DEFAULT_DELIMITERS), version[0] if version else "", part(15)


def build_unreadable_ack(
    raw: bytes, text: str = "", *, code: int | None = None, control_id: str | None = None
) -> bytes:
    """A reject for input whose MSH cannot be tokenized: default delimiters, ASCII, AR or CR.

    Whatever can be salvaged from an MSH-looking line (applications, control ID, version) is
    used; the rest is left empty. ERR code 100 when there is no MSH at all, else 102.
    """
    header, incoming_id, version, accept = _salvage_header(raw)
    error_code = code if code is not None else (102 if header else 100)
    field = 2 if header else None
    err = AckError(
        error_code,
        text or ("MSH segment unreadable" if header else "no MSH segment found"),
        segment="MSH",
        sequence=1,
        field=field,
    )
    version = version or "2.5"
    header.update({7: hl7_now(), 9: "ACK", 10: control_id or new_control_id(), 12: version})
    header[11] = header.get(11) or "P"
    ack_code_ = "CR" if accept.strip() else "AR"
    return charsets.encode(
        _render(header, ack_code_, incoming_id, [err], DEFAULT_DELIMITERS, version), "ascii"
    )


def build_nak(raw: bytes, error: AckError, outcome: Outcome = "error") -> bytes:
    """A NAK for raw bytes whatever their state: AE/CE (or AR/CR) if an MSH can be read."""
    try:
        messages = parse_messages(raw)
    except Hl7ParseError:
        messages = []
    if not messages:
        return build_unreadable_ack(raw, error.text)
    # Nothing of it was stored as received (a failure, or a reject of the header): in
    # enhanced mode CE, or CR for a header refusal such as the size limit.
    nak = build_ack(messages[0], outcome, [error], force=True, stored=False)
    assert nak is not None  # force=True always yields a code
    return nak
