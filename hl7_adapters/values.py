"""Segments, repetitions and HL7 paths: lazy, flat access to the raw text of one segment.

A segment keeps its fields as raw strings; repetitions, components and subcomponents are split
and unescaped only when asked for. That keeps tokenizing a message close to ``str.split`` cost
while every accessor still answers in HL7 terms (1-based field, repetition, component and
subcomponent numbers, MSH-1 being the field separator).

``""`` (two double quotes) is HL7's explicit null: "delete the stored value". An empty value
means "no change". ``get`` returns '' for both -- a caller that only reads values never sees
the quotes -- and ``is_null`` tells them apart for the callers that apply updates.
"""

from __future__ import annotations

import re
from functools import lru_cache

from app.digits import whole_number
from hl7_adapters.escapes import Delimiters, unescape

NULL_TOKEN = '""'
HEADER_IDS = frozenset({"MSH", "BHS", "FHS"})
FHIR_INTEGER_MAX = 2**31 - 1


def fhir_integer(text: str) -> int | None:
    """`text` as a FHIR integer, if it is one: at most ten ASCII digits, within 32 bits."""
    number = whole_number(text, FHIR_INTEGER_MAX + 1) if len(text) <= 10 else None
    return number if number is not None and number <= FHIR_INTEGER_MAX else None


_PATH = re.compile(
    r"(?:(?P<seg>[A-Z][A-Z0-9]{2})(?:\[(?P<occ>\d+)\])?[-.])?"
    r"(?P<field>\d+)(?:\[(?P<rep>\d+)\])?(?:\.(?P<comp>\d+))?(?:\.(?P<sub>\d+))?"
)


@lru_cache(maxsize=1024)
def parse_path(path: str) -> tuple[str, int, int, int, int, int]:
    """'PID[1]-3[2].4.1' -> ('PID', 1, 3, 2, 4, 1): segment, occurrence, field, rep, comp, sub.

    Segment is '' for a relative path ('3.1'); omitted numbers are 1. Raises ValueError for a
    malformed path, which is a programming error rather than bad input.
    """
    match = _PATH.fullmatch(path.strip())
    if match is None:
        raise ValueError(f"not an HL7 path: {path!r} (expected e.g. 'PID-3.1' or '3[2].4')")
    g = match.groupdict()
    occ, fld, rep, comp, sub = (
        int(g[k]) if g[k] else 1 for k in ("occ", "field", "rep", "comp", "sub")
    )
    if min(occ, fld, rep, comp, sub) < 1:
        raise ValueError(f"HL7 positions start at 1: {path!r}")
    return g["seg"] or "", occ, fld, rep, comp, sub


class Repetition:
    """One repetition of a field: components and subcomponents split on demand."""

    __slots__ = ("raw", "_d", "_codec", "_literal", "_components")

    def __init__(self, raw: str, d: Delimiters, codec: str, literal: bool = False) -> None:
        self.raw = raw
        self._d = d
        self._codec = codec
        self._literal = literal  # MSH-1/MSH-2: delimiters themselves, never split or unescaped
        self._components: list[str] | None = None

    def __repr__(self) -> str:
        return f"Repetition({self.raw!r})"

    def components(self) -> list[str]:
        """The raw (still escaped) component strings."""
        if self._components is None:
            self._components = [self.raw] if self._literal else self.raw.split(self._d.component)
        return self._components

    def raw_leaf(self, component: int = 1, subcomponent: int = 1) -> str:
        """The raw text at component/subcomponent (1-based); '' when absent."""
        comps = self.components()
        if component < 1 or component > len(comps):
            return ""
        comp = comps[component - 1]
        if self._literal:
            return comp if subcomponent == 1 else ""
        subs = comp.split(self._d.subcomponent) if self._d.subcomponent in comp else [comp]
        return subs[subcomponent - 1] if 1 <= subcomponent <= len(subs) else ""

    def get(self, component: int = 1, subcomponent: int = 1) -> str:
        """The unescaped value at component/subcomponent; '' when absent, empty or null."""
        leaf = self.raw_leaf(component, subcomponent)
        if self._literal:
            return leaf
        if leaf == NULL_TOKEN:
            return ""
        return unescape(leaf, self._d, self._codec)

    def subcomponents(self, component: int = 1) -> list[str]:
        """All unescaped subcomponents of one component."""
        comps = self.components()
        if component < 1 or component > len(comps):
            return []
        return [
            "" if s == NULL_TOKEN else unescape(s, self._d, self._codec)
            for s in comps[component - 1].split(self._d.subcomponent)
        ]

    def is_null(self, component: int | None = None, subcomponent: int = 1) -> bool:
        """True for an explicit ``""``: the whole repetition, or the given component."""
        if component is None:
            return self.raw == NULL_TOKEN
        return self.raw_leaf(component, subcomponent) == NULL_TOKEN

    def is_empty(self) -> bool:
        """True when nothing but delimiters was sent (absent, not a delete)."""
        d = self._d
        return not self.raw.replace(d.component, "").replace(d.subcomponent, "").strip()


class Segment:
    """One segment. ``fields[n]`` is HL7 field n (raw); ``fields[0]`` is the segment ID."""

    __slots__ = ("id", "fields", "_d", "_codec")

    def __init__(self, text: str, d: Delimiters, codec: str) -> None:
        if text[:3] in HEADER_IDS and len(text) > 3:
            # MSH-1 is the separator itself, so MSH-2 is the first text after it.
            self.fields = [text[:3], d.field, *text[4:].split(d.field)]
        else:
            self.fields = text.split(d.field)
        self.id = self.fields[0]
        self._d = d
        self._codec = codec

    def __repr__(self) -> str:
        return f"Segment({self.text[:60]!r})"

    @property
    def delimiters(self) -> Delimiters:
        return self._d

    @property
    def text(self) -> str:
        """The raw segment text (as sent, less its terminator)."""
        if self.id in HEADER_IDS and len(self.fields) > 1:
            return self.id + self._d.field + self._d.field.join(self.fields[2:])
        return self._d.field.join(self.fields)

    @property
    def field_count(self) -> int:
        """The highest field number present."""
        return len(self.fields) - 1

    def raw(self, n: int) -> str:
        """Field n exactly as sent (escaped, all repetitions); '' when absent."""
        return self.fields[n] if 0 <= n < len(self.fields) else ""

    def field(self, n: int) -> list[Repetition]:
        """Field n as its repetitions; [] when absent or empty. ``""`` is one null repetition."""
        raw = self.raw(n)
        if not raw or n < 1:
            return []
        if self.id in HEADER_IDS and n <= 2:
            return [Repetition(raw, self._d, self._codec, literal=True)]
        return [Repetition(r, self._d, self._codec) for r in raw.split(self._d.repetition)]

    def repetition(self, n: int, rep: int = 1) -> Repetition | None:
        reps = self.field(n)
        return reps[rep - 1] if 1 <= rep <= len(reps) else None

    def get(self, path: str | int, default: str = "") -> str:
        """Value at a relative path ('3', '3.1', '3[2].4.2'); the first leaf when not given."""
        _, _, fld, rep, comp, sub = parse_path(str(path))
        found = self.repetition(fld, rep)
        if found is None:
            return default
        value = found.get(comp, sub)
        return value if value else default

    def is_null(self, path: str | int) -> bool:
        """True when the path holds the explicit null ``""`` (at field level or below)."""
        text = str(path)
        _, _, fld, rep, comp, sub = parse_path(text)
        found = self.repetition(fld, rep)
        if found is None:
            return False
        return found.is_null() or found.is_null(comp, sub)
