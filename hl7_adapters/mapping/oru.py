"""ORU^R01 -> DiagnosticReport per OBR, Observation per OBX (IG ORU_R01 message map, segment
maps OBR[DiagnosticReport] and OBX[Observation], NTE[Observation]).

* Patient (PID): mode "ensure", same match as ADT (patient.py): a result arriving before its
  patient still lands and links; a later ADT upserts that same Patient.
* Encounter (PV1): "ensure" by PV1-19, only when a visit number is sent.
* DiagnosticReport: upsert, matched by the filler order number (OBR-3, else ORC-3), else the
  placer number (OBR-2, else ORC-2). When two OBRs of one message carry the same number, the
  later one falls back to its placer number. Without any order number it is created.
* Observation: upsert, matched by a derived identifier (system
  ``urn:medisentinel:hl7v2:obx``), value ``<order system>|<order number>|<OBX-3 system>|
  <OBX-3 code>|<OBX-4 sub-id>`` (``#n`` appended for a repeat within one order), so a
  corrected result (OBX-11 "C") re-sent for the same order updates the same Observation.
  OBX rows before any OBR (v2.7+ patient observations) use ``patient:<patient id>`` as the
  order part. OBX-21, when sent, is kept as a second identifier.
* DiagnosticReport.status from OBR-25 (IG "ResultStatus[Non-Queries]"); when OBR-25 is
  empty (IHE PCD never sends it) it is derived from the Observations' statuses.
* SPM (v2.5+ SPECIMEN group) -> Specimen, referenced by the order's DiagnosticReport and, when
  the order has one specimen, by its Observations (specimen.py). An OBX after an SPM
  (SPECIMEN_OBSERVATION) is an Observation whose ``focus`` is that Specimen, not one of the
  report's results (IG ORU_R01 message map).
* NTE after an OBX -> Observation.note (IG NTE[Observation]: NTE-3 text, NTE-5 author, NTE-6
  time). NTE after an OBR is not mapped (an R4 DiagnosticReport has no note).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hl7_adapters.ack import AckError
from hl7_adapters.mapping import datatypes as dt
from hl7_adapters.mapping import identifiers as ids
from hl7_adapters.mapping import obx as ox
from hl7_adapters.mapping import periods
from hl7_adapters.mapping import tables as t
from hl7_adapters.mapping.adt import PatientRef, plan_encounter, plan_patient, practitioner_ref
from hl7_adapters.mapping.context import MapContext, Where, first, new_full_url, val
from hl7_adapters.mapping.lookups import look_up
from hl7_adapters.mapping.organizations import performing_organization
from hl7_adapters.mapping.pcd import Entry, arrange, is_pcd
from hl7_adapters.mapping.plan import Parts
from hl7_adapters.mapping.specimen import plan_specimen
from hl7_adapters.values import Segment

JSON = dict[str, Any]

# A result the message does not send again is "no change" (HL7 v2: what is not sent is not
# changed), not "removed": a correction that re-sends only the corrected OBX keeps the
# report's other results (and a PCD channel's other members). Each reference is its own
# part: re-sent, it stays where it was; new, it goes last (edits.merge_elements).
_BY_REFERENCE = Parts(key=lambda entry: entry.get("reference"))
RESULTS = {"result": _BY_REFERENCE}


def _performer_field(entry: JSON) -> str | None:
    """The field an Observation.performer came from, told by what it references (resolved
    before the merge): a Practitioner is OBX-16's, an Organization OBX-15/23's. A performer
    by display only cannot be told apart: None (kept, or replaced by another such)."""
    kind = str(entry.get("reference", "")).partition("/")[0]
    return {"Practitioner": "OBX-16", "Organization": "OBX-23"}.get(kind)


# Observation.performer is built from OBX-16 and OBX-15/23: a message sending one of them
# keeps the stored performers of the other (HL7 v2: an empty field is "no change").
OBSERVATION_PARTS = {"hasMember": _BY_REFERENCE, "performer": Parts(key=_performer_field)}


@dataclass
class Group:
    """One OBR (or the patient-level OBX rows before any OBR) and what belongs to it."""

    patient: PatientRef
    encounter: str | None
    obr: Segment | None
    orc: Segment | None
    entries: list[Entry] = field(default_factory=list)
    specimens: list[Segment] = field(default_factory=list)  # SPM of this order
    scope: str = ""  # the order part of Observation keys when there is no OBR ("patient:...")


def map_oru(ctx: MapContext) -> PatientRef | None:
    groups = _groups(ctx)
    if groups is None:
        return None
    pcd = is_pcd(ctx.msg)
    used_orders: set[str] = set()
    first_patient: PatientRef | None = None
    for number, group in enumerate(groups, start=1):
        first_patient = first_patient or group.patient
        _map_group(ctx, group, number, pcd, used_orders)
    return first_patient


def _groups(ctx: MapContext) -> list[Group] | None:
    """Walk the segments: PID starts a patient, PV1 its visit, OBR an order, OBX a result."""
    groups: list[Group] = []
    patient: PatientRef | None = None
    encounter: str | None = None
    pending_orc: Segment | None = None
    current: Group | None = None
    saw_pid = False
    segments = ctx.msg.segment_list
    for index, seg in enumerate(segments):
        if seg.id == "PID":
            saw_pid = True
            patient, encounter, current = plan_patient(ctx, seg, "ensure"), None, None
        elif seg.id == "PV1" and patient is not None:
            pv2 = segments[index + 1] if index + 1 < len(segments) else None
            encounter = plan_encounter(
                ctx, seg, pv2 if pv2 and pv2.id == "PV2" else None, patient, "R01", "ensure"
            )
        elif seg.id == "ORC":
            pending_orc = seg
        elif seg.id == "OBR" and patient is not None:
            current = Group(patient, encounter, seg, pending_orc)
            groups.append(current)
            pending_orc = None
        elif seg.id == "OBX" and patient is not None:
            if current is None:
                current = Group(patient, encounter, None, None)
                groups.append(current)
            # after an SPM of its order: an observation of that specimen (IG ORU_R01
            # SPECIMEN_OBSERVATION), not a result of the order
            about = len(current.specimens) - 1 if current.specimens else None
            current.entries.append(Entry(seg, [], ctx.at(seg), specimen=about))
        elif seg.id == "SPM" and current is not None and current.obr is not None:
            current.specimens.append(seg)
        elif seg.id == "NTE" and current is not None and current.entries:
            current.entries[-1].notes.append(seg)
    if not saw_pid:
        ctx.errors.append(AckError(100, "ORU^R01 has no PID segment", "E", "PID"))
        return None
    if not groups:  # a result message without results: nothing to file, and the sender must know
        ctx.errors.append(AckError(100, "ORU^R01 has no OBR or OBX segment", "E", "OBR"))
        return None
    return groups


def map_adt_observations(ctx: MapContext, patient: PatientRef) -> None:
    """OBX in an ADT message (IG ADT_A01 message map: OBX[Observation], e.g. height and
    weight at admission): Observations of the patient and the message's Encounter, upserted
    under the visit (``visit:<visit identifier>``, else ``patient:<patient id>``) so that
    a re-sent message updates them; NTE after an OBX is its note."""
    entries: list[Entry] = []
    current: Entry | None = None  # the OBX an NTE follows
    for seg in ctx.msg.segment_list:
        if seg.id == "OBX":
            current = Entry(seg, [], ctx.at(seg))
            entries.append(current)
        elif seg.id == "NTE":
            if current is not None:
                current.notes.append(seg)
        else:
            current = None
    if not entries:
        return
    encounter = next((p for p in ctx.planned if p.resource_type == "Encounter"), None)
    visit = (encounter.resource.get("identifier") or [None])[0] if encounter else None
    scope = f"visit:{ids.key_part(visit)}" if visit else ""
    url = encounter.full_url if encounter else None
    _map_group(ctx, Group(patient, url, None, None, entries, scope=scope), 1, False, set())


# --------------------------------------------------------------------------- orders


def _order_identifiers(group: Group) -> tuple[JSON | None, JSON | None]:
    """(placer, filler) EI -> Identifier, from OBR-2/3, else ORC-2/3."""
    obr, orc = group.obr, group.orc
    placer = dt.ei_identifier(first(obr, 2), "PLAC") or dt.ei_identifier(first(orc, 2), "PLAC")
    filler = dt.ei_identifier(first(obr, 3), "FILL") or dt.ei_identifier(first(orc, 3), "FILL")
    return placer, filler


def _order_key(
    ctx: MapContext, group: Group, number: int, used: set[str]
) -> tuple[str, JSON | None]:
    """(order part of Observation keys, identifier the DiagnosticReport is matched by)."""
    if group.obr is None:
        return group.scope or f"patient:{group.patient.key}", None
    placer, filler = _order_identifiers(group)
    for candidate in (filler, placer):
        if candidate is not None:
            key = ids.key_part(candidate)
            if key not in used:
                used.add(key)
                return key, candidate
    return f"message:{ctx.msg.control_id}|{number}", None


def _order_origin(
    ctx: MapContext, group: Group, order_id: JSON | None
) -> tuple[str, int, int] | None:
    """OBR-3 (filler) or OBR-2 (placer): the field an order's matches come from (ERR-2)."""
    if group.obr is None or order_id is None:
        return None
    return ctx.origin(group.obr, 3 if order_id == _order_identifiers(group)[1] else 2)


def _map_group(ctx: MapContext, group: Group, number: int, pcd: bool, used: set[str]) -> None:
    order_key, order_id = _order_key(ctx, group, number, used)
    obr_time = None
    if group.obr is not None:
        obr_time = ctx.at(group.obr, 7).datetime(val(first(group.obr, 7)))
    arrange(ctx, group.entries, pcd)
    specimens = [
        plan_specimen(ctx, spm, group.patient.full_url, order_key, position)
        for position, spm in enumerate(group.specimens, start=1)
    ]
    seen: dict[str, int] = {}
    for entry in group.entries:
        if entry.observation:
            entry.full_url = new_full_url()
    observations = []
    for entry in group.entries:
        built = _observation(ctx, group, entry, order_key, obr_time, seen)
        if built is not None and entry.observation:
            observations.append((entry, built))
    # Dependency order: members before the groups that list them. Groups (PCD channels) go
    # last, deepest first; everything else keeps message order.
    plain = [o for o in observations if not o[0].members]
    groups = sorted((o for o in observations if o[0].members), key=lambda o: -o[0].depth)
    for entry, (resource, match) in plain + groups:
        members = [m.full_url for m in entry.members if m.full_url]
        if members:
            resource["hasMember"] = [{"reference": url} for url in members]
        if len(specimens) == 1:  # Observation.specimen holds one: named when unambiguous
            resource["specimen"] = {"reference": specimens[0]}
        if entry.specimen is not None:  # IG: Observation.focus the SPM's Specimen
            resource["focus"] = [{"reference": specimens[entry.specimen]}]
        origin = _order_origin(ctx, group, order_id) or ctx.origin(entry.obx, 3)
        ctx.add(
            resource,
            "upsert",
            match,
            full_url=entry.full_url,
            origin=origin,
            parts=OBSERVATION_PARTS,
        )
    if group.obr is not None:
        results = [(e, built) for e, built in observations if e.specimen is None]
        roots = [e for e, _ in results if e.parent is None]
        statuses = [resource["status"] for _, (resource, _) in results]
        _diagnostic_report(ctx, group, order_id, roots, statuses, obr_time, specimens)


def _diagnostic_report(
    ctx: MapContext,
    group: Group,
    order_id: JSON | None,
    roots: list[Entry],
    statuses: list[str],
    start: str | None,
    specimens: list[str],
) -> None:
    obr = group.obr
    assert obr is not None
    at = ctx.at(obr)
    code = dt.codeable_concept(first(obr, 4))
    if code is None:
        at.sub(4).error(101, "OBR-4 (universal service identifier) is empty")
        return
    placer, filler = _order_identifiers(group)
    resource: JSON = {"resourceType": "DiagnosticReport"}
    identifiers = [i for i in (placer, filler) if i is not None]
    if identifiers:
        resource["identifier"] = identifiers
    resource["status"] = _report_status(at.sub(25), val(first(obr, 25)), statuses)
    section = val(first(obr, 24))
    if section:
        resource["category"] = [{"coding": [{"system": t.V2 + "0074", "code": section}]}]
    resource["code"] = code
    resource["subject"] = {"reference": group.patient.full_url}
    if group.encounter:
        resource["encounter"] = {"reference": group.encounter}
    ended = val(first(obr, 8))  # without OBR-8 there is no period (OBR-7 is `start` already)
    span = periods.period(at.sub(7), val(first(obr, 7)), at.sub(8), ended) if ended else {}
    if "start" in span and "end" in span:
        resource["effectivePeriod"] = span
    elif start:
        resource["effectiveDateTime"] = start
    issued = at.sub(22).instant(val(first(obr, 22)))
    if issued:
        resource["issued"] = issued
    if specimens:
        resource["specimen"] = [{"reference": url} for url in specimens]
    if roots:
        resource["result"] = [{"reference": e.full_url} for e in roots]
    resource.update(_report_people(ctx, obr))
    match = ids.match_of(order_id) if order_id else None
    origin = _order_origin(ctx, group, order_id)
    ctx.add(resource, "upsert" if match else "create", match, origin=origin, parts=RESULTS)


# IG OBR[DiagnosticReport]: OBR-34 (technician) and OBR-35 (transcriptionist) are performers
# whose function (v3 ParticipationType) is the core extension event-performerFunction.
PERFORMER_FUNCTION = "http://hl7.org/fhir/StructureDefinition/event-performerFunction"
V3_PARTICIPATION = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"
REPORT_PERFORMERS = ((34, "SPRF"), (35, "TRANS"))


def _report_people(ctx: MapContext, obr: Segment) -> JSON:
    """OBR-32 (principal result interpreter) -> resultsInterpreter, OBR-34/35 -> performer."""
    out: JSON = {}
    interpreters = _ndl_refs(ctx, obr, 32)
    if interpreters:
        out["resultsInterpreter"] = interpreters
    performers = [
        {"extension": [_function(code)], **ref}
        for n, code in REPORT_PERFORMERS
        for ref in _ndl_refs(ctx, obr, n)
    ]
    if performers:
        out["performer"] = performers
    return out


def _function(code: str) -> JSON:
    coding = {"system": V3_PARTICIPATION, "code": code}
    return {"url": PERFORMER_FUNCTION, "valueCodeableConcept": {"coding": [coding]}}


def _ndl_refs(ctx: MapContext, obr: Segment, n: int) -> list[JSON]:
    """The people of an NDL field, each a Practitioner ensured by its id (as OBX-16)."""
    at = ctx.at(obr, n)
    people = ((i, dt.ndl_person(rep, obr.delimiters, ctx.msg.codec)) for i, rep in at.reps())
    return [ref for i, rep in people if (ref := practitioner_ref(ctx, rep, at.sub(n, i)))]


def _report_status(where: Where, code: str, statuses: list[str]) -> str:
    refused = t.RESULT_STATUS_0123_REFUSED.get(code.upper())
    if refused:  # filing it would record a result the sender says does not exist
        where.error(103, f"OBR-25: '{code}' ({refused}) reports no result; nothing filed")
        return "unknown"
    if code:
        unknown = "OBR-25: '{code}' is not in HL7 table 0123; status derived from OBX-11"
        found = look_up(t.RESULT_STATUS_0123, code, where, unknown)
        if found:
            return found
    kinds = set(statuses) - {"unknown"}
    if not kinds:
        return "unknown"
    if len(kinds) == 1:
        only = kinds.pop()
        same = {
            "final": "final",
            "preliminary": "preliminary",
            "registered": "registered",
            "cancelled": "cancelled",
            "entered-in-error": "entered-in-error",
            "corrected": "corrected",
            "amended": "amended",
        }
        return same.get(only, "partial")
    if kinds <= {"final", "corrected"}:
        return "corrected"
    if kinds <= {"final", "corrected", "amended"}:
        return "amended"  # FHIR: amended is the broader state (corrected is a kind of it)
    return "partial"


# --------------------------------------------------------------------------- observations


def _code_key(code: JSON) -> str:
    coding = (code.get("coding") or [{}])[0]
    if coding.get("code"):
        return f"{coding.get('system', '')}|{coding['code']}"
    return f"|{code.get('text', '')}"


def _observation(
    ctx: MapContext,
    group: Group,
    entry: Entry,
    order_key: str,
    obr_time: str | None,
    seen: dict[str, int],
) -> tuple[JSON, str] | None:
    obx, at = entry.obx, entry.where
    code = dt.codeable_concept(first(obx, 3))
    if code is None:
        at.sub(3).error(101, "OBX-3 (observation identifier) is empty", 1)
        return None
    if not entry.observation:
        return None
    value = f"{order_key}|{_code_key(code)}|{entry.sub_id}"
    seen[value] = seen.get(value, 0) + 1
    if seen[value] > 1:
        value += f"#{seen[value]}"
    key = {"system": ids.OBSERVATION_KEY_SYSTEM, "value": value}
    identifiers = [key]
    instance = dt.ei_identifier(first(obx, 21), "FILL")
    if instance:
        identifiers.append(instance)
    resource: JSON = {
        "resourceType": "Observation",
        "identifier": identifiers,
        "status": ox.status(obx, at),
        "code": code,
        "subject": {"reference": group.patient.full_url},
    }
    if group.encounter:
        resource["encounter"] = {"reference": group.encounter}
    effective = at.sub(14).datetime(val(first(obx, 14))) or obr_time
    if effective:
        resource["effectiveDateTime"] = effective
    performers = [
        ref
        for i, rep in at.sub(16).reps()
        if (ref := practitioner_ref(ctx, rep, at.sub(16, i))) is not None
    ]
    organization = performing_organization(ctx, obx, at)  # OBX-15/23/24: performer[2]
    if organization:
        performers.append(organization)
    if performers:
        resource["performer"] = performers
    resource.update(ox.values(obx, at, code))
    if not any(k.startswith("value") or k == "component" for k in resource):
        absent = ox.data_absent_reason(obx)
        if absent:
            resource["dataAbsentReason"] = absent
    interpretation = ox.interpretations(obx, at)
    if interpretation:
        resource["interpretation"] = interpretation
    notes = _notes(ctx, entry.notes)
    if notes:
        resource["note"] = notes
    for n, element in ((20, "bodySite"), (17, "method")):
        concept = dt.codeable_concept(first(obx, n))
        if concept:
            resource[element] = concept
    if entry.device:
        resource["device"] = entry.device
    ranges = ox.reference_range(obx, ox.units(obx))
    if ranges:
        resource["referenceRange"] = ranges
    return resource, ids.match_of(key)


def _notes(ctx: MapContext, ntes: list[Segment]) -> list[JSON]:
    """IG NTE[Observation]: NTE-3 (FT, repeating lines) -> Annotation.text, NTE-5 (XCN) ->
    authorReference (Practitioner), NTE-6 -> time."""
    out = []
    for nte in ntes:
        at = ctx.at(nte, 3)
        text = "\n".join(s for _, rep in at.reps() if (s := at.text(rep)))
        if not text:
            continue
        note: JSON = {"text": text}
        author = _note_author(ctx, nte)
        if author:
            note.update(author)
        when = ctx.at(nte, 6).datetime(val(first(nte, 6)))
        if when:
            note["time"] = when
        out.append(note)
    return out


def _note_author(ctx: MapContext, nte: Segment) -> JSON:
    """NTE-5 as Annotation.author[x]: a Practitioner (ensured by XCN.1) when it carries an id;
    a name alone is authorString (a Reference with only a display would find nobody)."""
    at5 = ctx.at(nte, 5)
    sent = at5.reps()[:1]  # NTE-5 is 0..1
    ref = practitioner_ref(ctx, sent[0][1], at5.sub(5, 1)) if sent else None
    if ref is None:
        return {}
    return {"authorReference": ref} if "reference" in ref else {"authorString": ref["display"]}
