"""A small, flat, tolerant ER7 tokenizer: raw bytes in, messages with HL7-numbered access out.

Why not hl7apy on the hot path: it costs about 1 ms per segment, drops segments silently when
its groups do not fit, and cannot read batches, byte-order marks or 5-character MSH-2 in older
versions (see ``../shared/hl7v2/MANIFEST.md``). This tokenizer only splits and never
regenerates: the raw bytes of every message stay available for the message store.

What it tolerates, because real feeds send it: a UTF-8 BOM or junk before the first header;
``\\r``, ``\\n`` or ``\\r\\n`` segment ends and blank lines; delimiters from MSH-1/MSH-2 with 4 or 5
encoding characters; FHS/BHS/BTS/FTS batches; segments glued onto the previous line where a
segment separator was lost and became whitespace (``...|JUDY| OBX||TX|...``, corpus file 20:
split only before a standard segment ID followed by at least three fields, see _glue_points);
lines that do not start a segment (a raw line break inside a text field) are joined back to the
segment they belong to; bytes that do not fit MSH-18. Each repair is recorded in ``warnings``.

The only exception raised for bad input is :class:`Hl7ParseError`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import lru_cache

from hl7_adapters import charsets, structures
from hl7_adapters.dates import to_fhir_datetime
from hl7_adapters.escapes import DEFAULT_DELIMITERS, Delimiters
from hl7_adapters.segment_ids import STANDARD_SEGMENT_IDS
from hl7_adapters.values import HEADER_IDS, Segment, parse_path

ENVELOPE_IDS = frozenset({"FHS", "BHS", "BTS", "FTS"})
_BOM = b"\xef\xbb\xbf"
# Delimiters are printable ASCII punctuation: anything else cannot survive a charset change.
_PUNCT = rb"[!-/:-@\[-`{-~]"
_FIRST_HEADER = re.compile(rb"(?:MSH|BHS|FHS)" + _PUNCT)
_DELIMITER = re.compile(_PUNCT)
_LINE = re.compile(rb"[^\r\n]+")
_SEGMENT_ID = re.compile(rb"[A-Z][A-Z0-9]{2}")


class Hl7ParseError(ValueError):
    """No HL7 message can be read: no MSH/BHS/FHS header, or unusable encoding characters."""


@dataclass(frozen=True, slots=True)
class HD:
    """A hierarchic designator (MSH-3/4/5/6): namespace ID, universal ID, universal ID type."""

    namespace_id: str = ""
    universal_id: str = ""
    universal_id_type: str = ""
    raw: str = ""

    def __str__(self) -> str:
        return self.raw


@lru_cache(maxsize=256)
def _glue_pattern(fs: bytes) -> re.Pattern[bytes]:
    """``<fs><spaces>XYZ<fs>``: a segment separator lost and turned into whitespace."""
    sep = re.escape(fs)
    return re.compile(sep + rb"[ \t]+([A-Z][A-Z0-9]{2})(?=" + sep + rb")")


def _glue_points(line: bytes, fs: bytes) -> list[re.Match[bytes]]:
    """Where segments were glued into ``line``. To keep text such as ``| PID|`` or ``| OBX|x``
    in a field from being cut, the ID must be a standard segment ID and the glued part must
    hold at least two more field separators (three fields) before the next glue point."""
    points = [
        m
        for m in _glue_pattern(fs).finditer(line)
        if m.group(1).decode("ascii") in STANDARD_SEGMENT_IDS
    ]
    if not points:
        return []
    ends = [m.start() for m in points[1:]] + [len(line)]
    return [m for m, end in zip(points, ends, strict=True) if line.count(fs, m.end(), end) >= 3]


def _delimiters(line: bytes) -> Delimiters:
    """Delimiters from a header line's MSH-1 and MSH-2 (4 or 5 characters)."""
    fs = line[3:4].decode("latin-1")
    enc = line[4:].split(line[3:4], 1)[0].decode("latin-1").rstrip()
    defaults = DEFAULT_DELIMITERS.encoding_characters
    chars = list(enc[:5])
    while len(chars) < 4:
        chars.append(defaults[len(chars)])  # a truncated MSH-2: complete it with the defaults
    used = {fs}
    for ch in chars:
        if ch in used or not _DELIMITER.fullmatch(ch.encode("latin-1")):
            raise Hl7ParseError(f"unusable encoding characters {enc!r} after separator {fs!r}")
        used.add(ch)
    return Delimiters(
        fs, chars[0], chars[1], chars[2], chars[3], chars[4] if len(chars) > 4 else ""
    )


def _header_field(line: bytes, d: Delimiters, n: int) -> str:
    """MSH-n from a header line's bytes, first repetition, first component (ASCII only)."""
    fields = line[4:].split(d.field.encode("latin-1"))
    if n - 2 >= len(fields):
        return ""
    text = fields[n - 2].decode("ascii", errors="replace")
    return text.split(d.repetition)[0].split(d.component)[0].strip()


def _is_segment_start(line: bytes, fs: bytes) -> bool:
    if not _SEGMENT_ID.match(line):
        return False
    nxt = line[3:4]
    if line[:3] in (b"MSH", b"BHS", b"FHS"):
        return _DELIMITER.fullmatch(nxt) is not None
    return nxt in (b"", fs)


def _segment_spans(data: bytes, start: int, notes: list[tuple[int, str]]) -> list[tuple[int, int]]:
    """Byte spans of the segments from ``start`` on, repairing glued and broken lines.

    Each repair is noted with its byte offset so that it can be given to its own message.
    """
    spans: list[tuple[int, int]] = []
    fs = data[start + 3 : start + 4]
    for match in _LINE.finditer(data, start):
        s, e = match.span()
        line = data[s:e]
        if _is_segment_start(line, fs):
            if line[:3] in (b"MSH", b"BHS", b"FHS"):
                fs = line[3:4]
        elif not line.strip():
            continue
        elif spans:
            notes.append((s, f"line at byte {s} does not start a segment; joined to the previous"))
            spans[-1] = (spans[-1][0], e)
            continue
        else:  # pragma: no cover - start is always a header
            continue
        cut = s
        glued_points = _glue_points(line, fs) if fs + b" " in line or fs + b"\t" in line else []
        for glued in glued_points:
            spans.append((cut, s + glued.start() + 1))
            cut = s + glued.start(1)
            notes.append((cut, f"segment {glued.group(1).decode()} was glued onto the previous"))
        spans.append((cut, e))
    return spans


@dataclass(slots=True)
class Message:
    """One HL7 message: raw bytes, decoded segments, delimiters and header helpers."""

    raw: bytes
    segment_list: list[Segment]
    delimiters: Delimiters
    codec: str
    warnings: list[str] = field(default_factory=list)
    structure: str | None = None

    def __iter__(self) -> Iterator[Segment]:
        return iter(self.segment_list)

    def __len__(self) -> int:
        return len(self.segment_list)

    @property
    def msh(self) -> Segment:
        return self.segment_list[0]

    def segments(self, segment_id: str | None = None) -> list[Segment]:
        """All segments, or those with one ID, in message order."""
        if segment_id is None:
            return list(self.segment_list)
        return [s for s in self.segment_list if s.id == segment_id]

    def segment(self, segment_id: str, occurrence: int = 1) -> Segment | None:
        found = self.segments(segment_id)
        return found[occurrence - 1] if 1 <= occurrence <= len(found) else None

    def get(self, path: str, default: str = "") -> str:
        """Value at an absolute path such as 'PID-3.1', 'PID-3[2].4.2' or 'OBX[3]-5'."""
        seg_id, occ, fld, rep, comp, sub = parse_path(path)
        segment = self.segment(seg_id, occ) if seg_id else None
        if segment is None:
            return default
        return segment.get(f"{fld}[{rep}].{comp}.{sub}", default)

    def is_null(self, path: str) -> bool:
        """True when the path holds HL7's explicit null ``""`` (delete), not just nothing."""
        seg_id, occ, fld, rep, comp, sub = parse_path(path)
        segment = self.segment(seg_id, occ) if seg_id else None
        return segment is not None and segment.is_null(f"{fld}[{rep}].{comp}.{sub}")

    def normalized_text(self) -> str:
        """The decoded segments joined by ``\\r`` (for tools that want clean ER7 text)."""
        return "".join(s.text + "\r" for s in self.segment_list)

    def _hd(self, n: int) -> HD:
        rep = self.msh.repetition(n)
        if rep is None:
            return HD()
        return HD(rep.get(1), rep.get(2), rep.get(3), self.msh.raw(n))

    control_id = property(lambda self: self.msh.get("10").strip(), doc="MSH-10")
    message_code = property(lambda self: self.msh.get("9.1").strip().upper(), doc="MSH-9.1")
    declared_structure = property(lambda self: self.msh.get("9.3").strip(), doc="MSH-9.3")
    version = property(lambda self: self.msh.get("12.1").strip(), doc="MSH-12.1")
    timestamp = property(lambda self: self.msh.get("7.1").strip(), doc="MSH-7.1 as sent")
    processing_id = property(lambda self: self.msh.get("11.1").strip(), doc="MSH-11.1 (P/T/D)")
    processing_mode = property(lambda self: self.msh.get("11.2").strip(), doc="MSH-11.2")
    accept_ack_type = property(lambda self: self.msh.get("15").strip().upper(), doc="MSH-15")
    application_ack_type = property(lambda self: self.msh.get("16").strip().upper(), doc="MSH-16")
    charset = property(lambda self: self.msh.get("18").strip(), doc="MSH-18 (first repetition)")
    sending_application = property(lambda self: self._hd(3), doc="MSH-3")
    sending_facility = property(lambda self: self._hd(4), doc="MSH-4")
    receiving_application = property(lambda self: self._hd(5), doc="MSH-5")
    receiving_facility = property(lambda self: self._hd(6), doc="MSH-6")

    @property
    def trigger_event(self) -> str:
        """MSH-9.2, or EVN-1 for old messages that carry the event only there."""
        trigger = self.msh.get("9.2").strip().upper()
        if not trigger:
            evn = self.segment("EVN")
            trigger = evn.get("1").strip().upper() if evn is not None else ""
        return trigger

    @property
    def timestamp_fhir(self) -> str | None:
        """MSH-7 as a FHIR dateTime, None when missing or invalid."""
        return to_fhir_datetime(self.timestamp)

    @property
    def enhanced_ack_mode(self) -> bool:
        """HL7: enhanced acknowledgment mode when MSH-15 or MSH-16 is valued."""
        return bool(self.accept_ack_type or self.application_ack_type)


@dataclass(slots=True)
class Batch:
    """What one input held: the FHS/BHS header and BTS/FTS trailer segments, and messages."""

    raw: bytes
    messages: list[Message]
    header: list[Segment] = field(default_factory=list)
    trailer: list[Segment] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def is_batch(self) -> bool:
        return bool(self.header or self.trailer)


def _text(chunk: bytes, codec: str, errors: str, d: Delimiters) -> str:
    """Decode one segment. A line break kept inside it (a joined line) becomes its escape
    sequence, so that the segment text can be written out again (ACK, hl7apy) unchanged in
    meaning, and ``get`` still returns the line break."""
    text = chunk.decode(codec, errors)
    if "\r" in text or "\n" in text:
        e = d.escape
        text = text.replace("\r\n", f"{e}X0D0A{e}").replace("\r", f"{e}X0D{e}")
        text = text.replace("\n", f"{e}X0A{e}")
    return text


def _build_message(data: bytes, spans: list[tuple[int, int]], end: int) -> Message:
    first = data[spans[0][0] : spans[0][1]]
    delims = _delimiters(first)
    warnings: list[str] = []
    if len(first[4:].split(first[3:4], 1)[0]) not in (4, 5):
        warnings.append("MSH-2 does not hold 4 or 5 encoding characters")
    raw = data[spans[0][0] : end]
    codec, errors = charsets.choose_codec(raw, _header_field(first, delims, 18), warnings)
    if errors == "strict":
        errors = charsets.FALLBACK_ERRORS  # a segment alone never fails where the whole passed
    segments = [Segment(_text(data[s:e], codec, errors, delims), delims, codec) for s, e in spans]
    msg = Message(raw, segments, delims, codec, warnings)
    msg.structure, note = structures.resolve_structure(
        msg.message_code, msg.trigger_event, msg.declared_structure, msg.version
    )
    if note:
        warnings.append(note)
    return msg


def parse_batch(data: bytes) -> Batch:
    """Every message in ``data`` (one message, or an FHS/BHS batch); raises Hl7ParseError."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise TypeError("ER7 input must be bytes; decoding follows MSH-18")
    data = bytes(data)
    notes: list[tuple[int, str]] = []
    start = 3 if data.startswith(_BOM) else 0
    found = _FIRST_HEADER.search(data, start)
    if found is None:
        raise Hl7ParseError("no MSH, BHS or FHS segment found")
    if data[start : found.start()].strip():
        junk = found.start() - start
        notes.append((0, f"{junk} bytes of junk before {found.group()[:3].decode()}"))
    spans = _segment_spans(data, found.start(), notes)
    batch = Batch(data, [])
    current: list[tuple[int, int]] = []
    envelope_delims = DEFAULT_DELIMITERS

    def flush(end: int) -> None:
        if current:
            msg = _build_message(data, current, end)
            first = current[0][0] if batch.messages else 0
            msg.warnings[:0] = [text for at, text in notes if first <= at < end]
            batch.messages.append(msg)
            current.clear()

    for s, e in spans:
        seg_id = data[s : s + 3]
        if seg_id == b"MSH":
            flush(s)
            current.append((s, e))
        elif seg_id.decode("latin-1") in ENVELOPE_IDS:
            flush(s)
            if seg_id in (b"BHS", b"FHS"):
                envelope_delims = _delimiters(data[s:e])
            text = data[s:e].decode("latin-1")
            (batch.header if seg_id in (b"BHS", b"FHS") else batch.trailer).append(
                Segment(text, envelope_delims, "latin-1")
            )
        elif current:
            current.append((s, e))
        else:
            notes.append((s, f"segment {seg_id.decode('latin-1')} outside any message ignored"))
    flush(len(data))
    batch.warnings = [text for _, text in notes]
    return batch


def parse_messages(data: bytes) -> list[Message]:
    """The messages of a single message or a batch, in order (batch envelope dropped)."""
    return parse_batch(data).messages


def parse_message(data: bytes) -> Message:
    """Exactly one message; a batch of one is accepted, with a warning about its envelope."""
    batch = parse_batch(data)
    if len(batch.messages) != 1:
        raise Hl7ParseError(f"expected one message, found {len(batch.messages)} (use parse_batch)")
    msg = batch.messages[0]
    if batch.is_batch:
        msg.warnings.append("batch envelope (FHS/BHS/BTS/FTS) around a single message ignored")
    return msg


__all__ = [
    "HD",
    "HEADER_IDS",
    "Batch",
    "Hl7ParseError",
    "Message",
    "Segment",
    "parse_batch",
    "parse_message",
    "parse_messages",
]
