"""The Encounter elements an update merges field by field, and what ``""`` deletes.

HL7 v2: an empty field means "no change", ``""`` means "delete the stored value". The
mapping builds some Encounter elements from several fields; an update replacing such an
element whole would let a field left empty erase stored data (an A03 without PV1-44 dropped
the admit time). So these are merged part by part (plan.Parts, edits.merge_elements):

* ``period``: PV1-44 start, PV1-45 end (children; IG PV1[Encounter]).
* ``hospitalization``: PV1-5, 13, 14, 16, 36, 37, 38 (children).
* ``location``: one entry list, each entry from one of PV1-3/6/11/42/43, told apart by the
  status and temporary classification that field gives it (visit_tables.PV1_LOCATIONS:
  five distinct pairs; PV1-3's status goes by the patient class, active or planned).
* ``participant``: PV1-7/8/9/17/52 and PV2-13, told apart by their participation type; PV1-8
  and PV2-13 share REF (referrer), so they are one part: either one sent replaces both.
* ``identifier``: PV1-19's (or the derived visit key) and PV1-50's alternates (parts()).
* ``status`` of an update event without PV1-45, ``class`` of a PV1-2 left empty: guesses
  for a new Encounter, a stored value stays (_GUESS).

Each other Encounter element comes from one field and is replaced whole when that field is
sent. Every mapped field's ``""`` is a null (nulls()): that element, child or part goes,
unless another field of the same part sends a value.
"""

from __future__ import annotations

from typing import Any

from hl7_adapters.mapping import periods
from hl7_adapters.mapping import visit_tables as vt
from hl7_adapters.mapping.context import field_is_null
from hl7_adapters.mapping.leave import LEAVES
from hl7_adapters.mapping.plan import Parts
from hl7_adapters.values import Segment

JSON = dict[str, Any]

# (status, temporary) -> the PV1 field such a location entry comes from.
_LOCATION_FIELDS: dict[tuple[str, bool], str] = {
    (status, temporary): f"PV1-{number}"
    for number, fixed, temporary in vt.PV1_LOCATIONS
    for status in ((fixed,) if fixed else ("active", "planned"))
}
_PARTICIPANT_TYPES = frozenset(code.code for _, code in vt.PV1_PARTICIPANTS + vt.PV2_PARTICIPANTS)


def location_part(entry: JSON) -> str | None:
    """The field an Encounter.location entry comes from (None: no field of ours makes it)."""
    temporary = any(
        isinstance(e, dict) and e.get("url") == vt.LOCATION_CLASSIFICATION
        for e in entry.get("extension") or []
    )
    return _LOCATION_FIELDS.get((str(entry.get("status")), temporary))


def participant_part(entry: JSON) -> str | None:
    """The participation type of an Encounter.participant entry, when one of ours."""
    for concept in entry.get("type") or []:
        for coding in concept.get("coding") or [] if isinstance(concept, dict) else []:
            if coding.get("system") == vt.V3_PARTICIPATION and coding.get("code") in (
                _PARTICIPANT_TYPES
            ):
                return str(coding["code"])
    return None


PARTS: dict[str, Parts] = {
    "period": Parts(settle=periods.settled),
    "hospitalization": Parts(),
    "location": Parts(key=location_part),
    "participant": Parts(key=participant_part),
    "statusHistory": LEAVES,  # A21/A22: one entry per leave (leave.py)
}

# Guesses only a new Encounter takes; a stored value stays (plan.Parts.default_only):
# "status": an update event (A08, A28, A31) says nothing of the visit's state, its status is
# PV1-45's (finished) or else a guess from the patient class, which must not overwrite the
# status an event set (A03: finished) when PV1-45 is left empty (PV1-45 sent, or "", the
# discharge time deleted, does replace it); "class": U (unknown) for an empty PV1-2, which
# is required (Encounter.class 1..1), so that "" cannot delete it either.
_GUESS = Parts(default_only=True)


PRIOR = "MRG-5"


def parts(
    found_by: JSON | None, guesses: tuple[str, ...] = (), prior: JSON | None = None
) -> dict[str, Parts]:
    """The Encounter's parts for one message. Its ``identifier`` list holds PV1-19's (the
    identifier it is found by: the visit number, or the derived visit key) and PV1-50's
    (alternate visit ids: every other entry), so a message without PV1-50 keeps the stored
    alternates; `prior`: the visit number an A06/A07 renumbers (MRG-5, a part of its own,
    which the message deletes); `guesses`: the elements mapped as guesses (_GUESS)."""
    out = dict(PARTS)
    for element in guesses:
        out[element] = _GUESS
    if found_by is not None:
        same = (found_by.get("system"), found_by.get("value"))
        before = (prior.get("system"), prior.get("value")) if prior is not None else None

        def identifier_part(entry: JSON) -> str:
            named = (entry.get("system"), entry.get("value"))
            if named == same:
                return "PV1-19"
            return PRIOR if named == before else "PV1-50"

        out["identifier"] = Parts(key=identifier_part)
    return out


# (segment, field, null path): what ``""`` in that field deletes.
_NULLED_BY: tuple[tuple[str, int, str], ...] = (
    ("PV1", 4, "type"),
    ("PV1", 10, "serviceType"),
    ("PV1", 44, "period.start"),
    ("PV1", 45, "period.end"),
    ("PV1", 5, "hospitalization.preAdmissionIdentifier"),
    *(("PV1", f, f"hospitalization.{element}") for f, element, _, _ in vt.PV1_HOSPITALIZATION),
    ("PV1", 37, "hospitalization.destination"),
    ("PV1", 50, "identifier[PV1-50]"),
    *(("PV1", f, f"location[PV1-{f}]") for f, _, _ in vt.PV1_LOCATIONS),
    *(("PV1", f, f"participant[{code.code}]") for f, code in vt.PV1_PARTICIPANTS),
    *(("PV2", f, f"participant[{code.code}]") for f, code in vt.PV2_PARTICIPANTS),
    ("PV2", 3, "reasonCode"),
    ("PV2", 11, "length"),
    ("PV2", 12, "text"),
    ("PV2", 25, "priority"),
    ("PV2", 38, f"extension[{vt.MODE_OF_ARRIVAL}]"),
    *(("PV2", f, f"extension[{url}]") for f, url in vt.PV2_DATETIME_EXTENSIONS),
)


def nulls(
    pv1: Segment, pv2: Segment | None, resource: JSON, parts: dict[str, Parts]
) -> frozenset[str]:
    """The null paths of the fields sent as ``""``, but for what another field of the same
    element or part still sends (PV2-13 a referrer while PV1-8 is ``""``)."""
    found = set()
    for segment_id, number, path in _NULLED_BY:
        segment = pv1 if segment_id == "PV1" else pv2
        if field_is_null(segment, number) and not _sent(resource, path, parts):
            found.add(path)
    return frozenset(found)


def _url(extension: JSON) -> str | None:
    return extension.get("url")


def _sent(resource: JSON, path: str, parts: dict[str, Parts]) -> bool:
    key, bracket, name = path.partition("[")
    key, _, child = key.partition(".")
    value = resource.get(key)
    if bracket:
        part = parts[key].key if key in parts else None
        part = part or _url  # extension
        return any(part(entry) == name.removesuffix("]") for entry in value or [])
    if child:
        return isinstance(value, dict) and child in value
    return value is not None
