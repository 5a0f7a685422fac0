"""State of one mapping run: the planned resources, warnings and errors, with v2 locations.

Every converter reports problems through a :class:`Where` (segment, its sequence in the
message, field, repetition), so an ERR segment can point at the exact field the sender has to
fix. Content errors are collected and raised together at the end (one AE naming all of them);
warnings ride along in the AA.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any, Literal

from hl7_adapters.ack import AckError
from hl7_adapters.dates import to_fhir_datetime
from hl7_adapters.er7 import Message
from hl7_adapters.escapes import unescape
from hl7_adapters.mapping import identifiers as ids
from hl7_adapters.mapping.plan import MappingError, Mode, Parts, Planned
from hl7_adapters.values import NULL_TOKEN, Repetition, Segment

Severity = Literal["E", "W", "I", "F"]


class PatientRef:
    """The Patient a message is about: its planned full_url and match identifier."""

    def __init__(self, full_url: str, match: str, identifier: dict[str, Any]) -> None:
        self.full_url = full_url
        self.match = match
        self.identifier = identifier

    @property
    def key(self) -> str:
        return ids.key_part(self.identifier)


def new_full_url() -> str:
    return f"urn:uuid:{uuid.uuid4()}"


class MapContext:
    """Collects the plan. ``ensure``/``upsert`` resources are de-duplicated by match."""

    def __init__(self, msg: Message, default_offset: str | None = None) -> None:
        self.msg = msg
        self.planned: list[Planned] = []
        self.warnings: list[AckError] = []
        self.errors: list[AckError] = []
        self._by_match: dict[tuple[str, str], Planned] = {}
        # What several segments of one message map alike, mapped once (the performing
        # laboratory that each OBX of a panel repeats): key -> the mapped value.
        self.memo: dict[tuple[str, ...], Any] = {}
        self._sequence: dict[int, int] = {}
        counts: dict[str, int] = {}
        for seg in msg.segment_list:
            counts[seg.id] = counts.get(seg.id, 0) + 1
            self._sequence[id(seg)] = counts[seg.id]
        offset = msg.timestamp[-5:] if len(msg.timestamp) > 5 else ""
        sender = (
            f"{offset[:3]}:{offset[3:]}" if offset[:1] in "+-" and offset[1:].isdigit() else None
        )
        # HL7: a time without an offset is in the sender's zone; MSH-7's offset says which.
        self.zone = sender or default_offset

    def sequence(self, seg: Segment) -> int:
        return self._sequence.get(id(seg), 1)

    def origin(self, seg: Segment, field: int) -> tuple[str, int, int]:
        """(segment ID, sequence, field): where a planned resource's match comes from."""
        return seg.id, self.sequence(seg), field

    def at(self, seg: Segment, field: int | None = None, rep: int | None = None) -> Where:
        return Where(self, seg, field, rep)

    def report(self, error: AckError) -> None:
        """Record a problem once (a field read twice, e.g. PID-3 for the match and the
        resource, must not give two ERR segments)."""
        target = self.warnings if error.severity in ("W", "I") else self.errors
        if error not in target:
            target.append(error)

    def raise_errors(self) -> None:
        if self.errors:
            raise MappingError(list(self.errors))

    def resource_of(self, full_url: str) -> dict[str, Any]:
        """The planned resource with this full_url (to add what a later segment maps)."""
        return self.planned_of(full_url).resource

    def planned_of(self, full_url: str) -> Planned:
        return next(p for p in self.planned if p.full_url == full_url)

    def add(
        self,
        resource: dict[str, Any],
        mode: Mode = "create",
        match: str | None = None,
        nulls: frozenset[str] = frozenset(),
        full_url: str | None = None,
        origin: tuple[str, int, int] | None = None,
        supplementary: bool = False,
        only_for: frozenset[str] | None = None,
        separate: bool = False,
        parts: dict[str, Parts] | None = None,
    ) -> str:
        """Plan a resource; returns its full_url (the earlier one for a repeated match, whose
        `only_for` the caller adjusts). `separate`: planned on its own even when the match
        was planned before (a second write to that resource, after it is ensured)."""
        rtype = str(resource["resourceType"])
        if match is not None and not separate:
            earlier = self._by_match.get((rtype, match))
            if earlier is not None:
                for key, value in resource.items():  # ensure: fill what the first lacked
                    earlier.resource.setdefault(key, value)
                return earlier.full_url
        planned = Planned(
            full_url or new_full_url(), resource, mode, match, nulls, origin, supplementary,
            only_for, parts or {},
        )  # fmt: skip
        self.planned.append(planned)
        if match is not None and not separate:
            self._by_match[(rtype, match)] = planned
        return planned.full_url


@dataclass(frozen=True, slots=True)
class Where:
    """A location in the message (for ERR) plus the helpers converters need there."""

    ctx: MapContext
    seg: Segment
    field: int | None = None
    rep: int | None = None

    def sub(self, field: int | None = None, rep: int | None = None) -> Where:
        return Where(self.ctx, self.seg, field if field is not None else self.field, rep)

    def problem(
        self, code: int, text: str, severity: Severity = "W", component: int | None = None
    ) -> None:
        self.ctx.report(
            AckError(
                code,
                text,
                severity,
                self.seg.id,
                self.ctx.sequence(self.seg),
                self.field,
                self.rep,
                component,
            )
        )

    def warn(self, code: int, text: str, component: int | None = None) -> None:
        self.problem(code, text, "W", component)

    def error(self, code: int, text: str, component: int | None = None) -> None:
        self.problem(code, text, "E", component)

    def name(self, component: int | None = None) -> str:
        """'PID-7' / 'OBX-5.2' for messages."""
        text = f"{self.seg.id}-{self.field}"
        return f"{text}.{component}" if component else text

    def datetime(self, value: str, component: int | None = None) -> str | None:
        """A DTM as FHIR dateTime; an invalid one is a warning and gives None.

        FHIR requires a zone once a time is given: a time without an offset takes the
        sender's zone (MSH-7's offset, else the configured default); when neither is known
        the value is kept at date precision, with a warning.
        """
        value = value.strip()
        result = self._parsed(value, component)
        if result is None:
            return None
        if "T" in result and not _has_zone(result):
            self.warn(
                102,
                f"{self.name(component)}: '{value}' has a time but no time zone (none in "
                "MSH-7 either); kept as a date",
                component,
            )
            return result[:10]
        return result

    def _parsed(self, value: str, component: int | None) -> str | None:
        """The stripped DTM as FHIR dateTime; None when empty or invalid (with a warning)."""
        if not value:
            return None
        result = to_fhir_datetime(value, self.ctx.zone)
        if result is None:
            self.warn(
                102,
                f"{self.name(component)}: '{value}' is not a valid date/time; left out",
                component,
            )
        return result

    def date(self, value: str, component: int | None = None) -> str | None:
        found = self.datetime(value, component)
        return None if found is None else found[:10]

    def instant(self, value: str, component: int | None = None) -> str | None:
        """A DTM as FHIR instant: seconds and an offset (the sender's MSH-7 zone if absent)."""
        value = value.strip()
        result = self._parsed(value, component)
        if result is None:
            return None
        if len(result) < 20 or not _has_zone(result):
            self.warn(
                102,
                f"{self.name(component)}: '{value}' lacks seconds or a time zone "
                "for a FHIR instant; left out",
                component,
            )
            return None
        return result

    # -- field access with the distinctions mapping needs --

    def reps(self, field: int | None = None) -> list[tuple[int, Repetition]]:
        """(1-based index, repetition) of the non-empty, non-null repetitions of a field."""
        n = self.field if field is None else field
        assert n is not None
        return [
            (i, r)
            for i, r in enumerate(self.seg.field(n), start=1)
            if r.raw != NULL_TOKEN and not r.is_empty()
        ]

    def text(self, rep: Repetition) -> str:
        """A whole repetition as text (ST/TX/FT): components are not split, only unescaped."""
        if rep.raw == NULL_TOKEN:
            return ""
        return unescape(rep.raw, self.seg.delimiters, self.ctx.msg.codec).strip()


def _has_zone(value: str) -> bool:
    return value.endswith("Z") or (len(value) > 16 and value[-6] in "+-")


def val(rep: Repetition | None, component: int = 1, sub: int = 1) -> str:
    """A stripped leaf value ('' for absent/null): FHIR codes may not carry edge spaces."""
    return rep.get(component, sub).strip() if rep is not None else ""


def field_is_null(seg: Segment | None, n: int) -> bool:
    """True when field n is exactly the HL7 null ``""`` (delete), not merely empty."""
    return seg is not None and seg.raw(n).strip() == NULL_TOKEN


def first(seg: Segment | None, n: int) -> Repetition | None:
    """The first repetition of a field that holds anything."""
    if seg is None:
        return None
    for rep in seg.field(n):
        if rep.raw != NULL_TOKEN and not rep.is_empty():
            return rep
    return None
