"""DG1 -> Condition (IG segment map DG1[Condition]; ADT_A01 and kin: DG1 -> Condition of the
patient, in the message's Encounter).

Mapped: DG1-3 code (DG1-4 its text when the code has none), DG1-5 onsetDateTime, DG1-16
asserter (the first diagnosing clinician; a Practitioner found by XCN.1), DG1-19
recordedDate, DG1-20 identifier, DG1-21 "D" (delete) -> verificationStatus entered-in-error.
Category ``encounter-diagnosis``: a DG1 is a diagnosis given for the visit. Not mapped:
DG1-6 (diagnosis type: no Condition element; Encounter.diagnosis.use would be its place, but
Encounter -> Condition -> Encounter is a reference cycle a message cannot plan; the
Condition names its Encounter instead), the DRG fields, DG1-22 (parent diagnosis).

**Match.** Upsert, found by a derived identifier under the patient:
``urn:medisentinel:hl7v2:dg1|<patient>|id:<DG1-20>`` when DG1-20 is sent (it is kept as a
second identifier), else ``...|<patient>|<visit>|<code system>|<code>`` (the visit part empty
without an Encounter), so an A08 re-sending the diagnoses updates them instead of adding
copies. Scoped to the patient because senders reuse DG1-20 values (the shared corpus sends
one "DI20" in six messages): a diagnosis id is not worth refusing a whole ADT over.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from hl7_adapters.mapping import datatypes as dt
from hl7_adapters.mapping import identifiers as ids
from hl7_adapters.mapping.context import MapContext, Where, first, val
from hl7_adapters.values import Segment

if TYPE_CHECKING:
    from hl7_adapters.mapping.adt import PatientRef

JSON = dict[str, Any]
PractitionerRef = Callable[[MapContext, Any, Where], "JSON | None"]
CATEGORY = {
    "coding": [
        {
            "system": "http://terminology.hl7.org/CodeSystem/condition-category",
            "code": "encounter-diagnosis",
            "display": "Encounter Diagnosis",
        }
    ]
}
ENTERED_IN_ERROR = {
    "coding": [
        {
            "system": "http://terminology.hl7.org/CodeSystem/condition-ver-status",
            "code": "entered-in-error",
        }
    ]
}


def map_diagnoses(
    ctx: MapContext,
    segments: list[Segment],
    patient: PatientRef,
    encounter_url: str | None,
    practitioner_ref: PractitionerRef,
) -> None:
    visit = ""
    if encounter_url is not None:
        identifiers = ctx.resource_of(encounter_url).get("identifier") or [None]
        visit = ids.key_part(identifiers[0])
    for dg1 in segments:
        _condition(ctx, dg1, patient, encounter_url, visit, practitioner_ref)


def _condition(
    ctx: MapContext,
    dg1: Segment,
    patient: PatientRef,
    encounter_url: str | None,
    visit: str,
    practitioner_ref: PractitionerRef,
) -> None:
    at = ctx.at(dg1)
    code = dt.codeable_concept(first(dg1, 3))
    description = val(first(dg1, 4))
    if code is not None and description and "text" not in code:
        code["text"] = description
    elif code is None and description:
        code = {"text": description}
    if code is None:
        at.sub(3).warn(101, "DG1-3 (diagnosis code) is empty; diagnosis left out")
        return
    sent = dt.ei_identifier(first(dg1, 20))
    if sent is not None:
        which = f"id:{ids.key_part(sent)}"
    else:
        coding = (code.get("coding") or [{}])[0]
        which = f"{visit}|{coding.get('system', '')}|{coding.get('code') or code.get('text', '')}"
    key = {"system": ids.DIAGNOSIS_KEY_SYSTEM, "value": f"{patient.key}|{which}"}
    resource: JSON = {
        "resourceType": "Condition",
        "identifier": [key] + ([sent] if sent is not None else []),
        "category": [CATEGORY],
        "code": code,
        "subject": {"reference": patient.full_url},
    }
    if val(first(dg1, 21)).upper() == "D":
        resource["verificationStatus"] = ENTERED_IN_ERROR
    if encounter_url is not None:
        resource["encounter"] = {"reference": encounter_url}
    onset = at.sub(5).datetime(val(first(dg1, 5)))
    if onset:
        resource["onsetDateTime"] = onset
    recorded = at.sub(19).datetime(val(first(dg1, 19)))
    if recorded:
        resource["recordedDate"] = recorded
    clinicians = at.sub(16).reps()
    if clinicians:
        i, rep = clinicians[0]
        asserter = practitioner_ref(ctx, rep, at.sub(16, i))
        if asserter:
            resource["asserter"] = asserter
    ctx.add(resource, "upsert", ids.match_of(key), origin=ctx.origin(dg1, 20 if sent else 3))
