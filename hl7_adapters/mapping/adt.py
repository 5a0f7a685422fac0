"""ADT -> Patient, Encounter, RelatedPerson, AllergyIntolerance, Practitioner, Location; A40.

Follows the IG message maps ADT_A01/A02/A03/A04/A05/A08/A11 (mappings/messages) and the
segment maps PID[Patient], PV1[Encounter], PV2[Encounter], NK1[RelatedPerson],
AL1[AllergyIntolerance]. How each resource is found again:

* Patient: upsert, matched by PID-3 (patient.py).
* Encounter: upsert, matched by the PV1-19 visit number. Without a visit number an Encounter
  is planned only by the events that start a visit (A01/A04/A05), matched by a derived
  identifier ``urn:medisentinel:hl7v2:visit|<patient system>|<patient id>|<time>|<PV1-2
  class>`` (time: PV1-44, else EVN-2, else MSH-7; see _visit_key), so a re-sent admission
  finds it; for the other events there is nothing to find, so no Encounter is planned and a
  warning says so.
* A13 (cancel discharge): status in-progress, and the discharge's period.end and
  hospitalization.dischargeDisposition are removed from the stored Encounter (nulls).
* Encounter.status: the IG "Event[EncounterStatus]" map by trigger; for A08/A28/A31 (which
  the IG maps to "unknown") the PV1 map instead: "finished" when PV1-45 is valued, else by
  patient class. An update message therefore never turns a real status into "unknown".
* NK1: RelatedPerson (upsert by a derived identifier), or Patient.contact for an
  organisation (nk1.py).
* Condition (DG1): upsert, with the message's Encounter (dg1.py).
* AllergyIntolerance (AL1): upsert, matched by ``urn:medisentinel:hl7v2:al1|<patient
  system>|<patient id>|<AL1-3 coding system>|<AL1-3 code, else text>``.
* Practitioner (PV1-7/8/9/17): ensure by XCN.1 identifier; a doctor without XCN.1 is named
  by display only. Location (PV1-3/6): the PL's hierarchy, each level ensured by its
  identifier (locations.py).
* A40: every PID/MRG pair gives a Merge(survivor = PID-3 match, retired = MRG-1 match) and
  the surviving Patient (upsert).
* OBX (e.g. height at admission): Observations of the patient and the Encounter, upserted
  under the visit (``oru.map_adt_observations``, called by ``map_message``).
"""

from __future__ import annotations

from typing import Any

from hl7_adapters.ack import AckError
from hl7_adapters.er7 import Message
from hl7_adapters.mapping import datatypes as dt
from hl7_adapters.mapping import identifiers as ids
from hl7_adapters.mapping import tables as t
from hl7_adapters.mapping.context import MapContext, Where, first, val
from hl7_adapters.mapping.demographics import plan_observations
from hl7_adapters.mapping.dg1 import map_diagnoses
from hl7_adapters.mapping.locations import plan_location
from hl7_adapters.mapping.nk1 import map_next_of_kin
from hl7_adapters.mapping.numbers import decimal, json_number
from hl7_adapters.mapping.patient import build_patient, patient_match
from hl7_adapters.mapping.plan import Merge, Mode
from hl7_adapters.values import Segment

JSON = dict[str, Any]
VISIT_STARTING = frozenset({"A01", "A04", "A05"})
PERSON_ONLY = frozenset({"A28", "A31"})


class PatientRef:
    """The Patient a message is about: its planned full_url and match identifier."""

    def __init__(self, full_url: str, match: str, identifier: JSON) -> None:
        self.full_url = full_url
        self.match = match
        self.identifier = identifier

    @property
    def key(self) -> str:
        return ids.key_part(self.identifier)


def plan_patient(ctx: MapContext, pid: Segment, mode: Mode) -> PatientRef | None:
    """Plan the Patient of one PID (mode upsert for ADT, ensure for ORU)."""
    match, identifier = patient_match(ctx, pid)
    resource, nulls = build_patient(ctx, pid)
    if not match:
        return None
    url = ctx.add(resource, mode, match, nulls, origin=ctx.origin(pid, 3))
    patient = PatientRef(url, match, identifier)
    if mode == "upsert":  # an ADT's PID is the patient's record; an ORU's only names him
        plan_observations(ctx, pid, url, patient.key)
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


# --------------------------------------------------------------------------- Encounter


def practitioner_ref(ctx: MapContext, rep: Any, where: Where) -> JSON | None:
    resource, identifier, display = dt.practitioner(rep, where)
    if resource is None or identifier is None:
        return {"display": display} if display else None
    url = ctx.add(resource, "ensure", ids.match_of(identifier))
    ref: JSON = {"reference": url}
    if display:
        ref["display"] = display
    return ref


def _status(trigger: str, pv1: Segment, klass: str) -> str:
    if trigger in t.EVENT_ENCOUNTER_STATUS:
        return t.EVENT_ENCOUNTER_STATUS[trigger]
    if val(first(pv1, 45)):
        return "finished"
    return t.PATIENT_CLASS_STATUS_0004.get(klass, "unknown")


# IG PV1[Encounter]: Encounter.location from PV1's PLs, (field, status); None: by the patient
# class (P, preadmit: planned). PV1-11 (temporary location) is left out: the IG marks it
# "temporary" with an extension R4 does not define, and a second "active" location beside
# PV1-3 would read as another bed.
PV1_LOCATIONS: tuple[tuple[int, str | None], ...] = (
    (3, None),  # assigned patient location
    (6, "completed"),  # prior patient location
    (42, "reserved"),  # pending location
    (43, "completed"),  # prior temporary location
)


def plan_encounter(
    ctx: MapContext,
    pv1: Segment,
    pv2: Segment | None,
    patient: PatientRef,
    trigger: str,
    mode: Mode,
) -> str | None:
    """PV1 (+PV2) -> Encounter; returns its full_url, None when none is planned."""
    at = ctx.at(pv1)
    visit = None
    visit_rep = first(pv1, 19)
    if visit_rep is not None:
        visit = dt.cx_identifier(visit_rep, at.sub(19, 1), default_type="VN")
    if visit is None and (mode != "upsert" or trigger not in VISIT_STARTING):
        if mode == "upsert" and trigger not in PERSON_ONLY:
            at.sub(19).warn(
                101,
                f"PV1-19 (visit number) is empty: ADT^{trigger} cannot update "
                "an Encounter; none mapped",
            )
        return None
    klass_code = val(first(pv1, 2)).upper()
    klass = t.PATIENT_CLASS_0004.get(klass_code)
    if klass is None:
        at.sub(2).warn(
            103 if klass_code else 101,
            f"PV1-2 patient class '{klass_code}' is not in HL7 table 0004; "
            "Encounter.class set to U (unknown)"
            if klass_code
            else "PV1-2 patient class is empty; Encounter.class set to U (unknown)",
        )
        klass, klass_code = t.PATIENT_CLASS_0004["U"], "U"
    resource: JSON = {
        "resourceType": "Encounter",
        "status": _status(trigger, pv1, klass_code),
        "class": {"system": klass.system, "code": klass.code, "display": klass.display},
        "subject": {"reference": patient.full_url},
    }
    key = None if visit else _visit_key(ctx.msg, pv1, patient, klass_code)
    identifiers = [i for i in (visit, key) if i]
    for i, rep in at.sub(50).reps():
        alt = dt.cx_identifier(rep, at.sub(50, i))
        if alt:
            identifiers.append(alt)
    if identifiers:
        resource["identifier"] = identifiers
    admission = dt.codeable_concept(first(pv1, 4), "0007")
    if admission:
        resource["type"] = [admission]
    service = dt.codeable_concept(first(pv1, 10), "0069")
    if service:
        resource["serviceType"] = service
    participants = _participants(ctx, pv1, at, t.PV1_PARTICIPANTS)
    if pv2 is not None:
        participants += _participants(ctx, pv2, ctx.at(pv2), t.PV2_PARTICIPANTS)
    if participants:
        resource["participant"] = participants
    locations = []
    for field, status in PV1_LOCATIONS:
        status = status or ("planned" if klass_code == "P" else "active")
        place = first(pv1, field)
        ref = plan_location(ctx, place) if place is not None else None
        if ref:
            locations.append({"location": ref, "status": status})
    if locations:
        resource["location"] = locations
    period = {
        "start": at.sub(44).datetime(val(first(pv1, 44))),
        "end": at.sub(45).datetime(val(first(pv1, 45))),
    }
    period = {k: v for k, v in period.items() if v}
    if period:
        resource["period"] = period
    hospitalization = _hospitalization(ctx, pv1, at)
    if hospitalization:
        resource["hospitalization"] = hospitalization
    if pv2 is not None:
        _visit_details(ctx, pv2, resource)
    nulls = _cancel_discharge(resource) if trigger == "A13" else frozenset()
    found_by = visit or key
    match = ids.match_of(found_by) if found_by else None
    origin = ctx.origin(pv1, 19 if visit else 44)
    return ctx.add(resource, mode if match else "create", match, nulls, origin=origin)


# What a discharge (A03) wrote that a cancel discharge (A13) takes back (IG ADT_A13: the
# Encounter is in progress again, without discharge disposition or end of period).
DISCHARGE_ELEMENTS = (("period", "end"), ("hospitalization", "dischargeDisposition"))


def _cancel_discharge(resource: JSON) -> frozenset[str]:
    """A13: the discharge's elements are left out of the mapped Encounter (a PV1-45/PV1-36
    still sent is the discharge being cancelled) and removed from the stored one, also when
    the A13 sends no PV1-44/PV1-14 and so replaces neither period nor hospitalization."""
    for element, child in DISCHARGE_ELEMENTS:
        part = resource.get(element)
        if isinstance(part, dict):
            part.pop(child, None)
            if not part:
                del resource[element]
    return frozenset(f"{element}.{child}" for element, child in DISCHARGE_ELEMENTS)


def _visit_key(msg: Message, pv1: Segment, patient: PatientRef, klass_code: str) -> JSON | None:
    """The identifier of a visit sent without a visit number: patient, class and the first
    of admit time (PV1-44), event time (EVN-2), message time (MSH-7), as sent and tagged by
    which it is. The same admission re-sent (a new MSH-10; a re-stamped MSH-7 when PV1-44 or
    EVN-2 is there) then finds its Encounter instead of making another; two admissions of
    one patient in one class at the same second are taken for one. None when none of the
    times is sent: nothing tells visits apart, so such an Encounter is always created."""
    evn = msg.segment("EVN")
    for tag, when in (
        ("admit", val(first(pv1, 44))),
        ("event", evn.get("2").strip() if evn is not None else ""),
        ("sent", msg.timestamp),
    ):
        if when:
            value = f"{patient.key}|{tag}:{when}|{klass_code}"
            return {"system": ids.VISIT_KEY_SYSTEM, "value": value}
    return None


def _participants(
    ctx: MapContext, segment: Segment, at: Where, fields: tuple[tuple[int, t.Code], ...]
) -> list[JSON]:
    out = []
    for field, role in fields:
        for i, rep in at.sub(field).reps():
            ref = practitioner_ref(ctx, rep, at.sub(field, i))
            if ref:
                out.append({"type": [{"coding": [role._asdict()]}], "individual": ref})
    return out


def _hospitalization(ctx: MapContext, pv1: Segment, at: Where) -> JSON:
    data: JSON = {}
    pre = first(pv1, 5)
    if pre is not None:
        ident = dt.cx_identifier(pre, at.sub(5, 1))
        if ident:
            data["preAdmissionIdentifier"] = ident
    for field, element, table, repeats in t.PV1_HOSPITALIZATION:
        concept = dt.codeable_concept(first(pv1, field), table)
        if concept:
            data[element] = [concept] if repeats else concept
    return data


MODE_OF_ARRIVAL = t.EXTENSION + "encounter-modeOfArrival"
LENGTH_OF_STAY = {"unit": "days", "system": t.UCUM, "code": "d"}  # IG NM[Quantity-LengthOfStay]


def _visit_details(ctx: MapContext, pv2: Segment, resource: JSON) -> None:
    """PV2 (IG PV2[Encounter]): admit reason (PV2-3), actual length of stay (PV2-11),
    priority (PV2-25, concept map EncounterPriority), mode of arrival (PV2-38, the core
    extension, valueCoding); the referral source (PV2-13) is a participant (plan_encounter)."""
    at = ctx.at(pv2)
    reason = dt.codeable_concept(first(pv2, 3))
    if reason:
        resource["reasonCode"] = [reason]
    days = val(first(pv2, 11))
    if days:
        number = decimal(days)
        if number is None or number < 0:
            at.sub(11).warn(102, f"PV2-11: '{days}' is not a number of days; left out")
        else:
            resource["length"] = {"value": json_number(number), **LENGTH_OF_STAY}
    priority = dt.mapped_concept(first(pv2, 25), t.PRIORITY_0217, "0217", at.sub(25))
    if priority:
        resource["priority"] = priority
    arrival = dt.codeable_concept(first(pv2, 38), "0430")
    if arrival and arrival.get("coding"):
        resource["extension"] = [{"url": MODE_OF_ARRIVAL, "valueCoding": arrival["coding"][0]}]


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
        if kind not in t.ALLERGEN_CODES_0127:
            at.sub(2).warn(103, f"AL1-2: '{kind}' is not in HL7 table 0127")
        if kind in t.ALLERGY_TYPE_0127:
            resource["type"] = t.ALLERGY_TYPE_0127[kind]
        if kind in t.ALLERGEN_CATEGORY_0127:
            resource["category"] = [t.ALLERGEN_CATEGORY_0127[kind]]
    severity = val(first(al1, 4)).upper()
    if severity and severity not in t.ALLERGY_SEVERITY_CODES_0128:
        at.sub(4).warn(103, f"AL1-4: '{severity}' is not in HL7 table 0128")
    if severity in t.ALLERGY_CRITICALITY_0128:
        resource["criticality"] = t.ALLERGY_CRITICALITY_0128[severity]
    manifestations = [{"text": text} for _, rep in at.sub(5).reps() if (text := at.text(rep))]
    if manifestations:
        reaction: JSON = {"manifestation": manifestations}
        if severity in t.ALLERGY_SEVERITY_0128:
            reaction["severity"] = t.ALLERGY_SEVERITY_0128[severity]
        resource["reaction"] = [reaction]
    onset = at.sub(6).datetime(val(first(al1, 6)))
    if onset:
        resource["onsetDateTime"] = onset
    ctx.add(resource, "upsert", ids.match_of(key), origin=ctx.origin(al1, 3))
