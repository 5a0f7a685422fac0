"""Optional hl7apy validation parse with a segment-count guard (never on the hot path).

hl7apy 1.3.5 knows the structures, groups and datatypes of every version, which makes it the
right tool for an optional validation mode; but with groups on it silently drops segments that
do not fit its structure (PRT in v2.5.1, an MSA inside an ORU, a PID/NTE/Z-segment in an ERP)
and ``validate()`` may still say VALID. So its result is only trusted together with this guard:
the segments reachable in hl7apy's tree are counted per ID and compared with the tokenizer's.

hl7apy is imported lazily so that the feed runs without it being loaded.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from hl7_adapters.er7 import Message


@dataclass(slots=True)
class SegmentCountReport:
    """Segments per the tokenizer against segments reachable in hl7apy's parse tree."""

    tokenizer_count: int
    hl7apy_count: int | None = None
    structure: str | None = None
    missing: dict[str, int] = field(default_factory=dict)  # segment ID -> dropped by hl7apy
    error: str | None = None  # hl7apy could not parse at all (batch, bad version, ...)

    @property
    def ok(self) -> bool:
        """True only when hl7apy parsed and kept every segment the tokenizer saw."""
        return self.error is None and not self.missing and self.hl7apy_count == self.tokenizer_count


def _hl7apy_text(msg: Message) -> str:
    """The message as hl7apy can read it: resolved MSH-9.3, a 4-character MSH-2, \\r ends.

    hl7apy refuses a 5-character MSH-2 before v2.7 and builds an untyped message (no groups)
    for MSH-9.3 values that are not structure IDs; neither change alters a segment's content.
    """
    d = msg.delimiters
    lines = [s.text for s in msg.segment_list]
    fields = list(msg.msh.fields)
    if len(fields) > 2:
        fields[2] = fields[2][:4]
    if msg.structure and len(fields) > 9:
        parts = fields[9].split(d.repetition)[0].split(d.component)
        parts += [""] * (3 - len(parts))
        parts[2] = msg.structure
        fields[9] = d.component.join(parts)
    lines[0] = "MSH" + d.field + d.field.join(fields[2:])
    return "\r".join(lines) + "\r"


def _walk(element: Any, found: list[str]) -> None:
    for child in element.children:
        if child.classname == "Segment":
            found.append(str(child.name))
        elif child.classname in ("Group", "Message"):
            _walk(child, found)


def check_segment_count(msg: Message) -> SegmentCountReport:
    """Parse ``msg`` with hl7apy (tolerant, groups on) and report the segments it lost."""
    report = SegmentCountReport(len(msg.segment_list), structure=msg.structure)
    try:
        from hl7apy.consts import VALIDATION_LEVEL
        from hl7apy.parser import parse_message as hl7apy_parse
    except ImportError:  # pragma: no cover - hl7apy is a dependency
        report.error = "hl7apy is not installed"
        return report
    try:
        tree = hl7apy_parse(
            _hl7apy_text(msg), validation_level=VALIDATION_LEVEL.TOLERANT, find_groups=True
        )
    except Exception as exc:  # hl7apy raises many unrelated types; all mean "could not parse"
        report.error = f"{type(exc).__name__}: {exc}"[:300]
        return report
    seen: list[str] = []
    _walk(tree, seen)
    report.hl7apy_count = len(seen)
    lost = Counter(s.id for s in msg.segment_list) - Counter(seen)
    report.missing = dict(sorted(lost.items()))
    if tree.name is not None:
        report.structure = str(tree.name)
    return report
