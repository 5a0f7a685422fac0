"""PV1 (+PV2) -> Encounter (IG segment maps PV1[Encounter], PV2[Encounter]; the rows are data
in visit_tables.py), for ADT (upsert) and ORU (ensure) alike.

* Found again by the PV1-19 visit number; without one, only the events that start a visit
  (A01/A04/A05/A14) plan an Encounter, matched by a derived identifier (_visit_key).
* Encounter.status: the IG "Event[EncounterStatus]" map by trigger; for A08/A28/A31 (which
  the IG maps to "unknown") the PV1 map instead: "finished" when PV1-45 is valued, else by
  patient class. An update message therefore never turns a real status into "unknown".
* A13 (cancel discharge): status in-progress, and the discharge's period.end and
  hospitalization.dischargeDisposition are removed from the stored Encounter (nulls).
  A12 (cancel transfer): PV1-3 is the location before the transfer again, and the
  transfer's PV1-6 entry (prior location, "completed") is removed (TAKEN_BACK).
* A21/A22 (leave of absence, return): status onleave / in-progress, and the leave's start
  or end in statusHistory (leave.py).
* A06/A07 (outpatient <-> inpatient): the same visit (PV1-19) with PV1-2's new class; when
  the visit is renumbered, MRG-5 (prior visit number) finds it and PV1-19 replaces that
  number (matched by either, so a re-sent A06 finds it again; both found: AE 205).
* Locations (PV1-3/6/11/42/43): the PL's Location hierarchy (locations.py); PV1-11 and
  PV1-43 carry the "temporary" classification; PV1-40 is the operationalStatus of PV1-3's
  bed (locations.py). PV1-37: hospitalization.destination, a
  Location of the DLD.1 type, one per code (ensured by a derived identifier).
* PV2: admit reason, length of stay, priority, referral source, mode of arrival, planned
  start and end (PV2-8/9, cross-version extensions), the visit description (PV2-12) as the
  narrative, the visit protection indicator (PV2-22) as a meta.security label.
"""

from __future__ import annotations

from html import escape
from typing import Any

from hl7_adapters.er7 import Message
from hl7_adapters.mapping import datatypes as dt
from hl7_adapters.mapping import identifiers as ids
from hl7_adapters.mapping import periods, visit_parts
from hl7_adapters.mapping import tables as t
from hl7_adapters.mapping import visit_tables as vt
from hl7_adapters.mapping.context import MapContext, PatientRef, Where, first, val
from hl7_adapters.mapping.leave import leave_history
from hl7_adapters.mapping.locations import plan_location
from hl7_adapters.mapping.lookups import look_up
from hl7_adapters.mapping.numbers import decimal, json_number
from hl7_adapters.mapping.plan import Mode
from hl7_adapters.values import Segment

JSON = dict[str, Any]
VISIT_STARTING = frozenset({"A01", "A04", "A05", "A14"})
# The cancels of those (and of a discharge). Without PV1-19 a cancel must not guess which
# visit it means: it finds only the one admitted without a number at the same PV1-44 in the
# same class (the key _visit_key derived for it), and never makes one (mode "update").
CANCELS = frozenset({"A11", "A13", "A27", "A38"})
PERSON_ONLY = frozenset({"A28", "A31"})


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
    prior = _prior_visit(ctx, trigger) if mode == "upsert" else None
    if visit is None:  # the visit keeps its number (MRG-5) when PV1-19 is left empty
        visit, prior = prior, None
    elif prior is not None and ids.match_of(prior) == ids.match_of(visit):
        prior = None
    cancelling = visit is None and mode == "upsert" and trigger in CANCELS
    if cancelling and not val(first(pv1, 44)):
        at.sub(19).error(
            101,
            f"PV1-19 (visit number) is empty: ADT^{trigger} cancels a visit and names none "
            "(nor the admit time, PV1-44, of one admitted without a number); nothing applied",
        )
        return None
    if visit is None and not cancelling and (mode != "upsert" or trigger not in VISIT_STARTING):
        if mode == "upsert" and trigger not in PERSON_ONLY:
            at.sub(19).warn(
                101,
                f"PV1-19 (visit number) is empty: ADT^{trigger} cannot update "
                "an Encounter; none mapped",
            )
        return None
    klass_code = val(first(pv1, 2)).upper()
    class_sent = bool(klass_code)
    klass = look_up(
        t.PATIENT_CLASS_0004,
        klass_code,
        at.sub(2),
        "PV1-2 patient class '{code}' is not in HL7 table 0004; Encounter.class set to U (unknown)",
        empty="PV1-2 patient class is empty; a new Encounter gets class U (unknown), "
        "a stored one keeps its class",
    )
    if klass is None:
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
    participants = _participants(ctx, pv1, at, vt.PV1_PARTICIPANTS)
    if pv2 is not None:
        participants += _participants(ctx, pv2, ctx.at(pv2), vt.PV2_PARTICIPANTS)
    if participants:
        resource["participant"] = participants
    locations = _locations(ctx, pv1, klass_code, with_status=mode == "upsert")
    if locations:
        resource["location"] = locations
    # an A13 cancels the discharge: its PV1-45 is the end being taken back (see below)
    discharged = "" if trigger == "A13" else val(first(pv1, 45))
    period = periods.period(at.sub(44), val(first(pv1, 44)), at.sub(45), discharged)
    if period:
        resource["period"] = period
    hospitalization = _hospitalization(ctx, pv1, at)
    if hospitalization:
        resource["hospitalization"] = hospitalization
    if pv2 is not None:
        _visit_details(ctx, pv2, resource)
    history = leave_history(ctx, trigger)
    if history:
        resource["statusHistory"] = history
    found_by = visit or key
    # what only a new Encounter takes (visit_parts._GUESS): a status guessed from the class,
    # the class U for an empty PV1-2 (required: "" cannot delete it)
    guesses = []
    if trigger not in t.EVENT_ENCOUNTER_STATUS and not pv1.raw(45).strip():
        guesses.append("status")
    if not class_sent:
        guesses.append("class")
    parts = visit_parts.parts(found_by, tuple(guesses), prior)
    nulls = visit_parts.nulls(pv1, pv2, resource, parts)
    if trigger in TAKEN_BACK:
        nulls |= _take_back(resource, TAKEN_BACK[trigger])
    match = ids.match_of(found_by) if found_by else None
    if match and prior is not None:  # the visit under its prior number, or already renumbered
        match = f"{ids.match_of(prior)},{match.removeprefix('identifier=')}"
        nulls |= {f"identifier[{visit_parts.PRIOR}]"}  # the new number replaces the prior
    origin = ctx.origin(pv1, 19 if visit or cancelling else 44)
    mode = "update" if cancelling else mode if match else "create"
    return ctx.add(resource, mode, match, nulls, origin=origin, parts=parts)


# What a cancel event takes back of the event it cancels, as null paths (plan.Planned.nulls):
# the elements are left out of the mapped Encounter (a field the cancel still sends is the
# value being cancelled) and removed from the stored one, also when the cancel sends nothing
# that would replace the element they sit in.
# * A13 cancels a discharge (A03; IG ADT_A13: in progress again, without discharge
#   disposition or end of period; ``period._end`` is the end's originalText, periods.py).
# * A12 cancels a transfer (A02): v2.5 3.3.12 sends the location before the transfer in
#   PV1-3 (which replaces the PV1-3 entry) and may send the cancelled destination in PV1-6;
#   the transfer's PV1-6 entry ("completed": where the patient was before) is no history.
TAKEN_BACK: dict[str, tuple[str, ...]] = {
    "A13": ("period.end", "period._end", "hospitalization.dischargeDisposition"),
    "A12": ("location[PV1-6]",),
}


def _take_back(resource: JSON, paths: tuple[str, ...]) -> frozenset[str]:
    """Remove `paths` (``element.child`` or ``location[PV1-n]``) from the mapped resource;
    returns them as nulls, so the stored Encounter loses them too."""
    for path in paths:
        element, bracket, rest = path.partition("[")
        kept: list[JSON] | JSON | None
        if bracket:  # a location part: the entries the named field makes
            field = rest.removesuffix("]")
            kept = [e for e in resource.get(element) or [] if visit_parts.location_part(e) != field]
        else:
            element, _, child = path.partition(".")
            part = resource.get(element)
            kept = {k: v for k, v in part.items() if k != child} if isinstance(part, dict) else None
        if kept:
            resource[element] = kept
        else:
            resource.pop(element, None)
    return frozenset(paths)


# v2.5 3.3.6/3.3.7: an A06/A07 may give the visit a new number (PV1-19); the MRG segment
# then carries the prior one (MRG-5), by which the Encounter to change is found.
RENUMBERING = frozenset({"A06", "A07"})


def _prior_visit(ctx: MapContext, trigger: str) -> JSON | None:
    """MRG-5 (prior visit number) of an A06/A07, as the Identifier PV1-19 would be."""
    mrg = ctx.msg.segment("MRG") if trigger in RENUMBERING else None
    rep = first(mrg, 5)
    if mrg is None or rep is None:
        return None
    return dt.cx_identifier(rep, ctx.at(mrg).sub(5, 1), default_type="VN")


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
    for field, element, table, repeats in vt.PV1_HOSPITALIZATION:
        concept = dt.codeable_concept(first(pv1, field), table)
        if concept:
            data[element] = [concept] if repeats else concept
    destination = _discharge_location(ctx, pv1)
    if destination:
        data["destination"] = destination
    return data


def _locations(ctx: MapContext, pv1: Segment, klass_code: str, with_status: bool) -> list[JSON]:
    """Encounter.location from the PLs of vt.PV1_LOCATIONS, temporary ones classified so;
    `with_status`: PV1-40 for PV1-3's bed (ADT only: an ORU's PV1 only names the visit)."""
    locations = []
    for field, status, temporary in vt.PV1_LOCATIONS:
        place = first(pv1, field)
        bed = _bed_status(ctx, pv1, place) if field == 3 and with_status else None
        ref = plan_location(ctx, place, bed, ctx.origin(pv1, 40)) if place is not None else None
        if not ref:
            continue
        entry: JSON = {"location": ref, "status": status or _by_class(klass_code)}
        if temporary:
            concept = {"coding": [vt.TEMPORARY._asdict()]}
            entry["extension"] = [
                {"url": vt.LOCATION_CLASSIFICATION, "valueCodeableConcept": concept}
            ]
        locations.append(entry)
    return locations


def _bed_status(ctx: MapContext, pv1: Segment, place: Any) -> JSON | None:
    """PV1-40 as the operationalStatus of PV1-3's most granular level, when PV1-3 names a
    room or a bed (IG PV1[Encounter]); a code outside table 0116 is a warning, left out."""
    code = val(first(pv1, 40)).upper()
    if not code or place is None or not (val(place, 2) or val(place, 3)):
        return None
    unknown = "PV1-40: '{code}' is not in HL7 table 0116; left out"
    found = look_up(vt.BED_STATUS_0116, code, ctx.at(pv1, 40), unknown)
    if found is None:
        return None
    return found._asdict()


def _by_class(klass_code: str) -> str:
    return "planned" if klass_code == "P" else "active"


def _discharge_location(ctx: MapContext, pv1: Segment) -> JSON | None:
    """PV1-37 (DLD) -> a Location typed by DLD.1 (IG DLD[Location-Discharge]). The IG asks
    for a new Location instance; one per message would pile up a Location per A03 re-sent,
    so it is one Location per type (mode "kind"), ensured by a derived identifier."""
    concept = dt.component_concept(first(pv1, 37), 1, vt.DISCHARGE_LOCATION_TABLE)
    if concept is None:
        return None
    coding = (concept.get("coding") or [{}])[0]
    value = f"{coding.get('system', '')}|{coding.get('code') or concept.get('text', '')}"
    key = {"system": ids.DISCHARGE_LOCATION_KEY_SYSTEM, "value": value}
    location = {"resourceType": "Location", "identifier": [key], "mode": "kind", "type": [concept]}
    url = ctx.add(location, "ensure", ids.match_of(key))
    ref: JSON = {"reference": url}
    display = coding.get("display") or concept.get("text")
    if display:
        ref["display"] = display
    return ref


MODE_OF_ARRIVAL = vt.MODE_OF_ARRIVAL
LENGTH_OF_STAY = {"unit": "days", "system": t.UCUM, "code": "d"}  # IG NM[Quantity-LengthOfStay]


def _visit_details(ctx: MapContext, pv2: Segment, resource: JSON) -> None:
    """PV2 (IG PV2[Encounter]): admit reason (PV2-3), actual length of stay (PV2-11),
    priority (PV2-25, concept map EncounterPriority), mode of arrival (PV2-38, the core
    extension, valueCoding), planned start and end (PV2-8/9), visit description (PV2-12),
    protection (PV2-22); the referral source (PV2-13) is a participant (plan_encounter)."""
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
    priority = dt.mapped_concept(first(pv2, 25), vt.PRIORITY_0217, "0217", at.sub(25))
    if priority:
        resource["priority"] = priority
    extensions = []
    arrival = dt.codeable_concept(first(pv2, 38), "0430")
    if arrival and arrival.get("coding"):
        extensions.append({"url": MODE_OF_ARRIVAL, "valueCoding": arrival["coding"][0]})
    for field, url in vt.PV2_DATETIME_EXTENSIONS:
        when = at.sub(field).datetime(val(first(pv2, field)))
        if when:
            extensions.append({"url": url, "valueDateTime": when})
    if extensions:
        resource["extension"] = extensions
    visit_text = first(pv2, 12)
    description = at.text(visit_text) if visit_text is not None else ""
    if description:  # IG: text.div; not generated from the structured data, so "additional"
        div = f'<div xmlns="http://www.w3.org/1999/xhtml">{escape(description)}</div>'
        resource["text"] = {"status": "additional", "div": div}
    protection = _protection(at.sub(22), val(first(pv2, 22)).upper())
    if protection:
        resource["meta"] = {"security": [protection]}


def _protection(where: Where, flag: str) -> JSON | None:
    """PV2-22 (Y/N, HL7 table 0136) -> a meta.security Coding (IG ID[Coding])."""
    if not flag:
        return None
    unknown = "PV2-22: '{code}' is not Y or N (HL7 table 0136); left out"
    if look_up(t.YES_NO_0136, flag, where, unknown) is None:
        return None
    return {"system": vt.PROTECTION_SYSTEM, "code": flag}
