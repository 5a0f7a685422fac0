"""ADT -> Patient, Encounter, RelatedPerson, AllergyIntolerance, Practitioner, Location; A40.

Follows the IG message maps ADT_A01/A02/A03/A04/A05/A08/A11 (mappings/messages) -- the
other events we take (A06/A07/A12/A13/A14/A21/A22/A27/A38, docs/hl7v2.md) carry the same
segments and differ only in what they do to the Encounter (encounter.py) -- and the
segment maps PID[Patient], PV1[Encounter], PV2[Encounter], NK1[RelatedPerson],
AL1[AllergyIntolerance]. How each resource is found again:

* Patient: upsert, matched by PID-3 (patient.py).
* Encounter (PV1/PV2): upsert, matched by the PV1-19 visit number (encounter.py).
* NK1: RelatedPerson (upsert by a derived identifier), or Patient.contact for an
  organisation (nk1.py).
* Condition (DG1): upsert, with the message's Encounter (dg1.py).
* AllergyIntolerance (AL1): upsert, matched by ``urn:medisentinel:hl7v2:al1|<patient
  system>|<patient id>|<AL1-3 coding system>|<AL1-3 code, else text>``.
* Practitioner (PV1-7/8/9/17): ensure by XCN.1 identifier; a doctor without XCN.1 is named
  by display only. Location (PV1-3/6/11/42/43): the PL's hierarchy, each level ensured by
  its identifier (locations.py).
* PID-10/22 (Observations) and PID-21 (the mother, a RelatedPerson): demographics.py.
* A40: every PID/MRG pair gives a Merge(survivor = PID-3 match, retired = MRG-1 match) and
  the surviving Patient (upsert).
* OBX (e.g. height at admission): Observations of the patient and the Encounter, upserted
  under the visit (``oru.map_adt_observations``, called by ``map_message``).
"""

from __future__ import annotations

from typing import Any

from hl7_adapters.ack import AckError
from hl7_adapters.mapping import datatypes as dt
from hl7_adapters.mapping import identifiers as ids
from hl7_adapters.mapping import tables as t
from hl7_adapters.mapping.context import MapContext, PatientRef, field_is_null, first, val
from hl7_adapters.mapping.demographics import plan_mother, plan_observations
from hl7_adapters.mapping.dg1 import map_diagnoses
from hl7_adapters.mapping.encounter import plan_encounter, practitioner_ref
from hl7_adapters.mapping.lookups import look_up
from hl7_adapters.mapping.nk1 import map_next_of_kin
from hl7_adapters.mapping.patient import PARTS, build_patient, patient_match
from hl7_adapters.mapping.plan import Merge, Mode, Parts
from hl7_adapters.mapping.sources import field_of, marked, unmarked
from hl7_adapters.values import Segment

JSON = dict[str, Any]
__all__ = ["PatientRef", "map_adt", "plan_encounter", "plan_patient", "practitioner_ref"]


def plan_patient(ctx: MapContext, pid: Segment, mode: Mode) -> PatientRef | None:
    """Plan the Patient of one PID (mode upsert for ADT, ensure for ORU)."""
    match, identifier = patient_match(ctx, pid)
    resource, nulls = build_patient(ctx, pid)
    if not match:
        return None
    # name, address, telecom, identifier: merged per PID field (patient.PARTS)
    url = ctx.add(resource, mode, match, nulls, origin=ctx.origin(pid, 3), parts=PARTS)
    patient = PatientRef(url, match, identifier)
    if mode == "upsert":  # an ADT's PID is the patient's record; an ORU's only names him
        plan_observations(ctx, pid, url, patient.key)
        plan_mother(ctx, pid, url, patient.key)
    return patient


def map_adt(ctx: MapContext, trigger: str) -> tuple[PatientRef | None, list[Merge]]:
    msg = ctx.msg
    if trigger == "A40":
        return _merge(ctx)
    pid = msg.segment("PID")
    if pid is None:
        ctx.errors.append(_missing("PID", f"ADT^{trigger} has no PID segment"))
        return None, []
    second = msg.segment("PID", 2)
    if second is not None:  # one patient per ADT (but A40): which one is meant is a guess
        ctx.at(second).error(100, f"ADT^{trigger} holds more than one PID segment")
        return None, []
    patient = plan_patient(ctx, pid, "upsert")
    if patient is None:
        return None, []
    pv1 = msg.segment("PV1")
    encounter = None
    if pv1 is not None:
        encounter = plan_encounter(ctx, pv1, msg.segment("PV2"), patient, trigger, "upsert")
    map_next_of_kin(ctx, msg.segments("NK1"), patient)
    map_diagnoses(ctx, msg.segments("DG1"), patient, encounter, practitioner_ref)
    for al1 in msg.segments("AL1"):
        _allergy(ctx, al1, patient)
    return patient, []


def _missing(segment: str, text: str) -> AckError:
    """HL7 table 0357 code 100: "required segments are missing" is a segment sequence error."""
    return AckError(100, text, "E", segment)


# --------------------------------------------------------------------------- A40


def _merge(ctx: MapContext) -> tuple[PatientRef | None, list[Merge]]:
    merges: list[Merge] = []
    first_patient: PatientRef | None = None
    pid: Segment | None = None
    for seg in ctx.msg.segment_list:
        if seg.id == "PID":
            pid = seg
        elif seg.id == "MRG":
            if pid is None:
                ctx.at(seg).error(100, "MRG without a preceding PID")
                continue
            survivor = plan_patient(ctx, pid, "upsert")
            retired, _ = patient_match(ctx, seg, 1)
            if survivor is not None and retired:
                origin = ctx.origin(seg, 1)
                merges.append(Merge(survivor.match, retired, survivor.full_url, origin))
                first_patient = first_patient or survivor
            pid = None
    if not merges and not ctx.errors:
        ctx.errors.append(_missing("MRG", "ADT^A40 holds no PID/MRG pair"))
    return first_patient, merges


# --------------------------------------------------------------------------- AL1


def _allergy(ctx: MapContext, al1: Segment, patient: PatientRef) -> None:
    at = ctx.at(al1)
    allergen = first(al1, 3)
    code = dt.codeable_concept(allergen)
    if code is None:
        at.sub(3).warn(101, "AL1-3 (allergen) is empty; allergy left out")
        return
    coding = (code.get("coding") or [{}])[0]
    key_code = coding.get("code") or code.get("text", "")
    key = {
        "system": ids.ALLERGY_KEY_SYSTEM,
        "value": f"{patient.key}|{coding.get('system', '')}|{key_code}",
    }
    resource: JSON = {
        "resourceType": "AllergyIntolerance",
        "identifier": [key],
        "clinicalStatus": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical",
                    "code": "active",
                }
            ]
        },
        "code": code,
        "patient": {"reference": patient.full_url},
    }
    kind = val(first(al1, 2)).upper()
    if kind:
        look_up(t.ALLERGEN_CODES_0127, kind, at.sub(2), "AL1-2: '{code}' is not in HL7 table 0127")
        if kind in t.ALLERGY_TYPE_0127:
            resource["type"] = t.ALLERGY_TYPE_0127[kind]
        if kind in t.ALLERGEN_CATEGORY_0127:
            resource["category"] = [t.ALLERGEN_CATEGORY_0127[kind]]
    severity = val(first(al1, 4)).upper()
    if severity:
        unknown = "AL1-4: '{code}' is not in HL7 table 0128"
        look_up(t.ALLERGY_SEVERITY_CODES_0128, severity, at.sub(4), unknown)
    if severity in t.ALLERGY_CRITICALITY_0128:
        resource["criticality"] = t.ALLERGY_CRITICALITY_0128[severity]
    reaction: JSON = {}
    manifestations = [{"text": text} for _, rep in at.sub(5).reps() if (text := at.text(rep))]
    if manifestations:
        reaction["manifestation"] = manifestations
    if severity in t.ALLERGY_SEVERITY_0128:
        reaction["severity"] = t.ALLERGY_SEVERITY_0128[severity]
    if reaction:  # severity alone updates a stored reaction (settled: none without AL1-5)
        resource["reaction"] = [marked(reaction, REACTION)]
    onset = at.sub(6).datetime(val(first(al1, 6)))
    if onset:
        resource["onsetDateTime"] = onset
    nulls = {path for field, path in _AL1_NULLS if field_is_null(al1, field)}
    if severity:  # a value replaces: one without criticality (MO) or severity (U) drops it
        if "criticality" not in resource:
            nulls.add("criticality")
        if "severity" not in reaction:
            nulls.add(f"reaction[{REACTION}].severity")
    origin = ctx.origin(al1, 3)
    ctx.add(resource, "upsert", ids.match_of(key), frozenset(nulls), origin=origin, parts=_PARTS)


# AllergyIntolerance.reaction: the feed's one entry (marked AL1-5, sources.py) is made by
# AL1-5 (manifestation, required) and AL1-4 (severity): merged child by child, so a field left
# empty keeps its child; an entry another client added is kept. AL1-4 is also criticality.
REACTION = "AL1-5"


def _without_bare_severity(reactions: list[JSON]) -> list[JSON]:
    """R4 requires a reaction's manifestation: the feed's entry without one (AL1-4 sent for
    an allergy without a stored reaction, or after AL1-5 "") is dropped."""
    return [r for r in reactions if field_of(r) != REACTION or r.get("manifestation")]


_PARTS = {
    "reaction": Parts(key=field_of, unmarked=unmarked, children=True, settle=_without_bare_severity)
}
_AL1_NULLS = (
    (4, "criticality"),
    (4, f"reaction[{REACTION}].severity"),
    (5, f"reaction[{REACTION}]"),
    (6, "onsetDateTime"),
)
