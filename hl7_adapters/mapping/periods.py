"""A FHIR Period from two HL7 v2 timestamps (PV1-44/45, OBR-7/8, DR, CX.7/8, XPN, XAD, XTN,
NK1-8/9), valid for R4's invariant per-1 (start <= end).

Each end is mapped as sent (Where.datetime: no precision invented or widened). Feeds mix
precisions, e.g. PV1-44 ``20261122`` (a day) with PV1-45 ``202611221530-0500`` (a minute).
FHIRPath compares such values only as far as both go: when they agree that far (the same
day) the answer is empty, "unknown", and the store refuses an invariant that is not true
(app/fhir/constraints.py, the reference validator's rule), so the whole message would be AE.
The current FHIR build (after R5) states per-1 as ``start.lowBoundary() <=
end.highBoundary()``, which accepts the pair; R4's expression has no such reading. So, only
in that case, the more precise end is stored at the other end's precision (``2026-11-22``:
the same day, still true, and then start = end) and the value as sent is kept on it in the
core extension ``originalText`` (``_end``), with a warning in the ACK. Pairs FHIRPath can
order (other days, both with a time) stay as sent.
"""

from __future__ import annotations

from typing import Any

from hl7_adapters.mapping.context import Where

ORIGINAL_TEXT = "http://hl7.org/fhir/StructureDefinition/originalText"
_PRECISION = {4: "year", 7: "month", 10: "day"}


def period(
    start_at: Where,
    start_sent: str,
    end_at: Where,
    end_sent: str,
    components: tuple[int | None, int | None] = (None, None),
    dates: bool = False,
) -> dict[str, Any]:
    """``{start, end}`` of the ends that hold a valid value ({} when neither does).

    ``components``: where each end sits in its field (the ERR location of a bad value);
    ``dates``: the ends are DT (FHIR date, any time dropped)."""
    if not (start_sent or end_sent):  # most fields are empty: the common case, at once
        return {}
    ends = []
    for at, sent, component in ((start_at, start_sent, components[0]),
                                (end_at, end_sent, components[1])):  # fmt: skip
        convert = at.date if dates else at.datetime
        ends.append(convert(sent, component))
    start, end = ends
    out: dict[str, Any] = {k: v for k, v in (("start", start), ("end", end)) if v}
    if start is None or end is None or not unordered(start, end):
        return out
    # the finer end is the one FHIRPath cannot place: it takes the coarser one's precision
    key, at, sent, component, coarse, other = (
        ("end", end_at, end_sent, components[1], start, start_at.name(components[0]))
        if len(end) > len(start)
        else ("start", start_at, start_sent, components[0], end, end_at.name(components[1]))
    )
    out[key] = coarse
    out[f"_{key}"] = {"extension": [{"url": ORIGINAL_TEXT, "valueString": sent.strip()}]}
    at.warn(
        0,
        f"{at.name(component)}: '{sent.strip()}' kept to the {_PRECISION[len(coarse)]} "
        f"({coarse}), as {other} is: FHIR R4 (per-1) cannot order the two otherwise; "
        "the value as sent is its originalText extension",
        component,
    )
    return out


def unordered(a: str, b: str) -> bool:
    """True when FHIRPath's comparison of two mapped date/dateTime values is empty: they
    differ in precision and agree as far as both go. Two values with a time always carry a
    zone here (Where.datetime keeps a zone-less time as a date), so they always compare."""
    if a == b or ("T" in a and "T" in b):
        return False
    shared = min(len(a.split("T")[0]), len(b.split("T")[0]))
    return a[:shared] == b[:shared]


def settled(value: dict[str, Any]) -> dict[str, Any]:
    """A Period merged from a stored end and a message's other end (an A03 with PV1-45 but
    no PV1-44) kept orderable as period() keeps one message's: when FHIRPath cannot order
    the two, the finer end takes the coarser one's precision and keeps its value in
    originalText (the one it had, else the value as stored)."""
    start, end = value.get("start"), value.get("end")
    if not (isinstance(start, str) and isinstance(end, str)) or not unordered(start, end):
        return value
    key, coarse = ("end", start) if len(end) > len(start) else ("start", end)
    out = {**value, key: coarse}
    if f"_{key}" not in value:
        out[f"_{key}"] = {"extension": [{"url": ORIGINAL_TEXT, "valueString": value[key]}]}
    return out
