"""The HL7 field a list entry came from, stored on the entry as an extension.

Patient.name (PID-5/9), .address (PID-11/12), .telecom (PID-13/14/40) and .identifier
(PID-2/3/4/19/20), and a RelatedPerson's name, address and telecom (NK1), are lists built
from several fields. HL7 v2 says an empty field means "no change" and only ``""`` deletes,
so an update must replace the entries of the fields it sends and keep the others'; for that
each entry says which field made it (a PID-13 repetition may be a work number, a PID-3 one
an SSN: the entry's content cannot tell). The mark is an extension
(``urn:medisentinel:hl7v2-field``, valueString ``"PID-14"``), which FHIR allows on every
ContactPoint, HumanName, Address and Identifier and tells clients to ignore when unknown.

An entry without the mark (stored before marks existed, or written by another channel) that
is the same as a mapped entry is taken as that entry's field's (so re-sending a message does
not duplicate it): for an identifier, the same system and value (what names one: a REST
client's bare ``system|value`` copy of PID-3 is that identifier, not another), which also
holds for one stored from another field (PID-4, now sent in PID-2); for a name, an address
or a telecom, equal but for the mark (the same number may be a home and a work phone: two
entries). Any other unmarked entry is kept as it is (it cannot be told apart from another
channel's, and dropping it would lose data).
"""

from __future__ import annotations

from typing import Any

from hl7_adapters.mapping.plan import Parts

JSON = dict[str, Any]
FIELD = "urn:medisentinel:hl7v2-field"


def marked(entry: JSON, field: str) -> JSON:
    """`entry` with the mark of `field` ("PID-13") as its last extension."""
    mark = {"url": FIELD, "valueString": field}
    return {**entry, "extension": [*(entry.get("extension") or []), mark]}


def field_of(entry: JSON) -> str | None:
    """The field a marked entry came from; None for an entry without the mark."""
    for extension in entry.get("extension") or []:
        if isinstance(extension, dict) and extension.get("url") == FIELD:
            value = extension.get("valueString")
            return value if isinstance(value, str) else None
    return None


def unmarked(entry: JSON) -> JSON:
    """`entry` as a mapping without marks made it (also a mark on a child's primitive
    extensions, ``_district``: PID-12's county in the PID-11 address)."""
    rest = [
        e
        for e in entry.get("extension") or []
        if not (isinstance(e, dict) and e.get("url") == FIELD)
    ]
    out: JSON = {}
    for key, value in entry.items():
        if key == "extension":
            continue
        if key.startswith("_") and isinstance(value, dict):
            value = unmarked(value)
            if not value:
                continue
        out[key] = value
    if rest:
        out["extension"] = rest
    return out


def without_marks(node: Any) -> Any:
    """`node` with every mark taken out, at any depth (a citizenship's code is marked inside
    its extension, demographics.py)."""
    if isinstance(node, list):
        return [
            without_marks(n) for n in node if not (isinstance(n, dict) and n.get("url") == FIELD)
        ]
    if isinstance(node, dict):
        out = {k: without_marks(v) for k, v in node.items()}
        if out.get("extension") == []:  # only marks
            del out["extension"]
        return out
    return node


def system_and_value(entry: JSON) -> object:
    """What names an Identifier (mark or not)."""
    return entry.get("system"), entry.get("value")


_BY_CONTENT = Parts(key=field_of, unmarked=unmarked)
_BY_IDENTITY = Parts(key=field_of, unmarked=system_and_value, across_parts=True)


def by_field(*elements: str) -> dict[str, Parts]:
    """The plan.Parts of the listed elements, each merged per source field (a stored entry
    recognised as in the module doc)."""
    return {e: _BY_IDENTITY if e == "identifier" else _BY_CONTENT for e in elements}


def null_paths(element: str, fields: list[str], entries: list[JSON]) -> set[str]:
    """``element[field]`` for each of `fields` (sent as ``""``) that makes no entry of the
    message (PID-13 ``""`` next to a PID-13 value cannot happen; a field shared is)."""
    made = {field_of(e) for e in entries}
    return {f"{element}[{field}]" for field in fields if field not in made}
