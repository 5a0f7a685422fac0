"""PID-6 mother's maiden name, PID-10 race, PID-17 religion, PID-22 ethnic group, PID-23
birth place, PID-26 citizenship, PID-28 nationality, as the IG maps them (the rows are data:
``tables.PID_EXTENSIONS`` and ``tables.PID_OBSERVATIONS``).

* PID-6/17/23/26/28 (IG PID[Patient]) are FHIR core Patient extensions:
  ``patient-mothersMaidenName`` (valueString, the family name of the first repetition),
  ``patient-religion`` (valueCodeableConcept), ``patient-birthPlace`` (valueAddress.text),
  ``patient-citizenship`` and ``patient-nationality`` (their ``code`` sub-extension). An
  update replaces the stored extensions of the URLs the message sends and keeps the others
  (edits.merge_elements); ``""`` removes that URL's extensions.
* PID-10/22 (IG PID[Race] / PID[EthnicGroup] to Observation) are Observations of the patient,
  status final, upserted by a key derived from the patient and the field, so an A08 updates
  them. One repetition is the valueCodeableConcept; several are components, as repeated OBX-5
  values are. Only ADT messages (whose PID is the patient's record) plan them.
"""

from __future__ import annotations

from typing import Any

from hl7_adapters.mapping import datatypes as dt
from hl7_adapters.mapping import identifiers as ids
from hl7_adapters.mapping import tables as t
from hl7_adapters.mapping.context import MapContext, Where, field_is_null
from hl7_adapters.values import Repetition, Segment

JSON = dict[str, Any]


def extension_null(url: str) -> str:
    """The ``nulls`` entry that removes the stored extensions with this URL."""
    return f"extension[{url}]"


def patient_extensions(pid: Segment, at: Where) -> tuple[list[JSON], set[str]]:
    """(extensions, nulls) for the fields of tables.PID_EXTENSIONS."""
    found: list[JSON] = []
    nulls: set[str] = set()
    for field, url, kind, table in t.PID_EXTENSIONS:
        if field_is_null(pid, field):
            nulls.add(extension_null(url))
            continue
        for i, rep in at.sub(field).reps():
            extension = _extension(url, kind, table, rep, at.sub(field, i))
            if extension is not None:
                found.append(extension)
                if kind == "family":  # patient-mothersMaidenName is 0..1: the first name
                    break
    return found, nulls


def _extension(url: str, kind: str, table: str, rep: Repetition, at: Where) -> JSON | None:
    """One repetition as the extension of its kind (see tables.PID_EXTENSIONS)."""
    if kind == "address":
        text = at.text(rep)
        return {"url": url, "valueAddress": {"text": text}} if text else None
    if kind == "family":  # IG XPN[string]: the family name
        family = (dt.human_name(rep, at) or {}).get("family")
        return {"url": url, "valueString": family} if family else None
    concept = dt.codeable_concept(rep, table)
    if concept is None:
        return None
    if kind == "concept":
        return {"url": url, "valueCodeableConcept": concept}
    return {"url": url, "extension": [{"url": "code", "valueCodeableConcept": concept}]}


def plan_observations(ctx: MapContext, pid: Segment, patient_url: str, patient_key: str) -> None:
    """The race and ethnic group Observations of an ADT's patient."""
    at = ctx.at(pid)
    for field, kind, code, table in t.PID_OBSERVATIONS:
        values = [c for _, rep in at.sub(field).reps() if (c := dt.codeable_concept(rep, table))]
        if not values:
            continue
        key = {"system": ids.PID_OBSERVATION_KEY_SYSTEM, "value": f"{patient_key}|{kind}"}
        concept = {"coding": [code._asdict()]}
        resource: JSON = {
            "resourceType": "Observation",
            "identifier": [key],
            "status": "final",
            "category": [{"coding": [t.SOCIAL_HISTORY._asdict()]}],
            "code": concept,
            "subject": {"reference": patient_url},
        }
        if len(values) == 1:
            resource["valueCodeableConcept"] = values[0]
        else:
            resource["component"] = [{"code": concept, "valueCodeableConcept": v} for v in values]
        nulls = frozenset({"component"} if len(values) == 1 else {"valueCodeableConcept"})
        origin = ctx.origin(pid, field)
        # supplementary: an ADT feed's token predating this mapping may lack Observation
        ctx.add(resource, "upsert", ids.match_of(key), nulls, origin=origin, supplementary=True)
