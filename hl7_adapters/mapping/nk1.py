"""NK1 -> RelatedPerson, or Patient.contact for an organisation (IG segment maps
NK1[RelatedPerson] and NK1[Patient]).

Which map: the IG's ADT_A01 message map sends an NK1 whose relationship (NK1-3) is EMR
(employer) or whose contact role (NK1-7) is E, F, I or S (employer, federal agency,
insurance company, state agency) to NK1[Patient], i.e. a ``Patient.contact``: such a
"next of kin" is an organisation, not a person related to the patient. Every other NK1 is a
RelatedPerson.

* RelatedPerson: upsert, matched by a derived identifier ``urn:medisentinel:hl7v2:nk1|
  <patient system>|<patient id>|<NK1-1 set id>`` (the NK1's position when NK1-1 is empty),
  so a re-sent A08 updates the same contacts.
* Patient.contact: the organisation contacts of the message replace the contacts the feed
  stored (each marked ``NK1``, sources.py; patient.PARTS), and keep those another client
  added; a message without such an NK1 leaves the stored contacts alone. NK1-13
  (organisation name) is the contact's organisation, by display (no Organization resource
  is made for it).

Relationship: NK1-3 through the IG concept map (HL7 table 0063), NK1-7 as table 0131; a
concept already given by NK1-3 (EMR maps to 0131 E) is not repeated for NK1-7.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from hl7_adapters.mapping import datatypes as dt
from hl7_adapters.mapping import identifiers as ids
from hl7_adapters.mapping import periods
from hl7_adapters.mapping import tables as t
from hl7_adapters.mapping.context import MapContext, Where, field_is_null, first, val
from hl7_adapters.mapping.lookups import look_up
from hl7_adapters.mapping.patient import language_concept, ssn_identifier
from hl7_adapters.mapping.plan import Parts
from hl7_adapters.mapping.sources import by_field, marked, null_paths
from hl7_adapters.values import Segment

if TYPE_CHECKING:
    from hl7_adapters.mapping.adt import PatientRef

JSON = dict[str, Any]
CONTACT = "NK1"  # the mark of a Patient.contact the feed made (sources.py)
ORGANISATION_ROLES = frozenset({"E", "F", "I", "S"})  # NK1-7, HL7 table 0131
# IG NK1[RelatedPerson] telecom: phone (NK1-5), business phone (NK1-6, use work), contact
# person's phone (NK1-31), next of kin's and contact person's telecom (NK1-40, NK1-41).
RELATED_PERSON_TELECOM = ((5, None), (6, "work"), (31, None), (40, None), (41, None))


def map_next_of_kin(ctx: MapContext, segments: list[Segment], patient: PatientRef) -> None:
    contacts = []
    for position, nk1 in enumerate(segments, start=1):
        if is_organisation(nk1):
            contacts.append(_patient_contact(ctx, nk1))
        else:
            _related_person(ctx, nk1, position, patient)
    if contacts:  # marked: they replace the feed's stored contacts, not a client's
        ctx.resource_of(patient.full_url)["contact"] = [marked(c, CONTACT) for c in contacts]


def is_organisation(nk1: Segment) -> bool:
    """The IG's condition for NK1[Patient]: NK1-3 EMR, or NK1-7 in E, F, I, S."""
    relation = val(first(nk1, 3)).upper()
    role = val(first(nk1, 7)).upper()
    return relation == "EMR" or role in ORGANISATION_ROLES


def _relationship(nk1: Segment, at: Where) -> list[JSON]:
    """NK1-3 (table 0063, mapped) and NK1-7 (table 0131), without repeating a concept."""
    relationship = []
    rel = dt.mapped_concept(first(nk1, 3), t.RELATIONSHIP_0063, "0063", at.sub(3))
    if rel:
        relationship.append(rel)
    role = first(nk1, 7)
    if role is None or not val(role):
        return relationship
    code = val(role).upper()
    unknown = "NK1-7: '{code}' is not in HL7 table 0131"
    display = look_up(t.CONTACT_ROLE_0131, val(role), at.sub(7), unknown)
    if display is None:
        return relationship
    coding = {"system": t.V2 + "0131", "code": code, "display": display}
    given = [(c.get("system"), c.get("code")) for r in relationship for c in r.get("coding", [])]
    if (coding["system"], coding["code"]) not in given:
        relationship.append({"coding": [coding]})
    return relationship


def _telecom(
    nk1: Segment, at: Where, fields: tuple[tuple[int, str | None], ...], mark: bool = False
) -> list[JSON]:
    """The ContactPoints of `fields`; `mark`: each with the mark of its field (sources.py)."""
    return [
        marked(c, f"NK1-{f}") if mark else c
        for f, use in fields
        for i, r in at.sub(f).reps()
        if (c := dt.contact_point(r, at.sub(f, i), use)) is not None
    ]


# RelatedPerson lists merged per NK1 field (each entry marked with its own; one
# RelatedPerson per NK1 segment, so the field alone names the part): element -> fields.
_LISTS: dict[str, tuple[int, ...]] = {
    "name": (2, 30),
    "telecom": tuple(f for f, _ in RELATED_PERSON_TELECOM),
    "address": (4, 32),
    "identifier": (12, 33, 37),  # and the key (NK1-1, the match)
}
# NK1-8 and NK1-9 are the period's two ends: an NK1 sending one keeps the stored other.
PARTS: dict[str, Parts] = {"period": Parts(settle=periods.settled), **by_field(*_LISTS)}


def _period(nk1: Segment, at: Where) -> JSON:
    return periods.period(at.sub(8), val(first(nk1, 8)), at.sub(9), val(first(nk1, 9)), dates=True)


def _patient_contact(ctx: MapContext, nk1: Segment) -> JSON:
    """NK1[Patient]: one Patient.contact."""
    at = ctx.at(nk1)
    contact: JSON = {}
    relationship = _relationship(nk1, at)
    if relationship:
        contact["relationship"] = relationship
    name = next((n for i, r in at.sub(2).reps() if (n := dt.human_name(r, at.sub(2, i)))), None)
    if name:
        contact["name"] = name
    telecom = _telecom(nk1, at, ((5, None), (6, "work"), (40, None), (41, None)))
    if telecom:
        contact["telecom"] = telecom
    address = next((a for i, r in at.sub(4).reps() if (a := dt.address(r, at.sub(4, i)))), None)
    if address:
        contact["address"] = address
    gender = t.GENDER_0001.get(val(first(nk1, 15)).upper())
    if gender:
        contact["gender"] = gender
    organisation = val(first(nk1, 13))
    if organisation:
        contact["organization"] = {"display": organisation}
    period = _period(nk1, at)
    if period:
        contact["period"] = period
    return contact


def _related_person(ctx: MapContext, nk1: Segment, position: int, patient: PatientRef) -> None:
    at = ctx.at(nk1)
    set_id = val(first(nk1, 1)) or str(position)
    key = {"system": ids.RELATED_PERSON_KEY_SYSTEM, "value": f"{patient.key}|{set_id}"}
    identifiers = [marked(key, "NK1-1")]  # the match: always sent, never deleted
    for field in (12, 33):  # employee number, the party's identifiers
        for i, rep in at.sub(field).reps():
            ident = dt.cx_identifier(rep, at.sub(field, i))
            if ident:
                identifiers.append(marked(ident, f"NK1-{field}"))
    ssn = val(first(nk1, 37))
    if ssn:
        identifiers.append(marked(ssn_identifier(ssn), "NK1-37"))
    resource: JSON = {
        "resourceType": "RelatedPerson",
        "identifier": identifiers,
        "patient": {"reference": patient.full_url},
    }
    relationship = _relationship(nk1, at)
    if relationship:
        resource["relationship"] = relationship
    names = [
        marked(n, f"NK1-{f}")
        for f in (2, 30)
        for i, r in at.sub(f).reps()
        if (n := dt.human_name(r, at.sub(f, i))) is not None
    ]
    if names:
        resource["name"] = names
    telecom = _telecom(nk1, at, RELATED_PERSON_TELECOM, mark=True)
    if telecom:
        resource["telecom"] = telecom
    addresses = [
        marked(a, f"NK1-{f}")
        for f in (4, 32)
        for i, r in at.sub(f).reps()
        if (a := dt.address(r, at.sub(f, i))) is not None
    ]
    if addresses:
        resource["address"] = addresses
    gender_code = val(first(nk1, 15)).upper()
    if gender_code:
        unknown = "NK1-15: '{code}' is not in HL7 table 0001"
        gender = look_up(t.GENDER_0001, gender_code, at.sub(15), unknown)
        if gender:
            resource["gender"] = gender
    birth = at.sub(16).date(val(first(nk1, 16)))
    if birth:
        resource["birthDate"] = birth
    period = _period(nk1, at)
    if period:
        resource["period"] = period
    language = language_concept(first(nk1, 20))
    if language:
        resource["communication"] = [{"language": language}]
    # HL7 v2: an empty field means no change (plan.Parts), "" deletes that field's entries
    nulls: set[str] = set()
    for element, fields in _LISTS.items():
        sent_null = [f"NK1-{f}" for f in fields if field_is_null(nk1, f)]
        if sent_null:
            nulls |= null_paths(element, sent_null, resource.get(element) or [])
    origin = ctx.origin(nk1, 1)
    ctx.add(resource, "upsert", ids.match_of(key), frozenset(nulls), origin=origin, parts=PARTS)
