"""PID-6 mother's maiden name, PID-10 race, PID-17 religion, PID-21 mother's identifier,
PID-22 ethnic group, PID-23 birth place, PID-26 citizenship, PID-28 nationality, PID-35/36
species and breed, PID-39 tribal citizenship, as the IG maps them (the rows are data in
pid_tables.py).

* PID-6/17/23/26/28/39 (IG PID[Patient]) are FHIR core Patient extensions:
  ``patient-mothersMaidenName`` (valueString, the family name of the first repetition),
  ``patient-religion`` (valueCodeableConcept), ``patient-birthPlace`` (valueAddress.text),
  ``patient-citizenship`` (PID-26 and PID-39) and ``patient-nationality`` (their ``code``
  sub-extension); PID-35/36 are the one ``patient-animal`` (species, breed). An update
  replaces the stored extensions of the URLs the message sends and keeps the others
  (edits.merge_elements); ``""`` removes that URL's extensions, unless another field of the
  message sends that URL (PID-26 ``""`` beside a PID-39 value).
* PID-21 (IG CX[RelatedPerson-Mother]) is a RelatedPerson of the patient, relationship
  mother, carrying the identifiers sent; upserted by a key derived from the patient (one
  mother per patient, an A08 updates her identifiers). Only ADT messages plan it.
* PID-10/22 (IG PID[Race] / PID[EthnicGroup] to Observation) are Observations of the patient,
  status final, upserted by a key derived from the patient and the field, so an A08 updates
  them. One repetition is the valueCodeableConcept; several are components, as repeated OBX-5
  values are. Only ADT messages (whose PID is the patient's record) plan them.
"""

from __future__ import annotations

from typing import Any

from hl7_adapters.mapping import datatypes as dt
from hl7_adapters.mapping import identifiers as ids
from hl7_adapters.mapping import pid_tables as pt
from hl7_adapters.mapping.context import MapContext, Where, field_is_null, first
from hl7_adapters.values import Repetition, Segment

JSON = dict[str, Any]


def extension_null(url: str) -> str:
    """The ``nulls`` entry that removes the stored extensions with this URL."""
    return f"extension[{url}]"


def patient_extensions(pid: Segment, at: Where) -> tuple[list[JSON], set[str]]:
    """(extensions, nulls) for the fields of pid_tables.PID_EXTENSIONS and PID_ANIMAL."""
    found: list[JSON] = []
    nulled: set[str] = set()
    for field, url, kind, table in pt.PID_EXTENSIONS:
        if field_is_null(pid, field):
            nulled.add(url)
            continue
        for i, rep in at.sub(field).reps():
            extension = _extension(url, kind, table, rep, at.sub(field, i))
            if extension is not None:
                found.append(extension)
                if kind == "family":  # patient-mothersMaidenName is 0..1: the first name
                    break
    animal = _animal(pid, at)
    if animal is not None:
        found.append(animal)
    elif field_is_null(pid, pt.PID_ANIMAL[0][0]):
        nulled.add(pt.ANIMAL)
    sent = {e["url"] for e in found}  # a URL another field sends is replaced, not removed
    return found, {extension_null(url) for url in nulled - sent}


def _animal(pid: Segment, at: Where) -> JSON | None:
    """PID-35/36 -> patient-animal (species required: a breed alone is left out, warned)."""
    parts = []
    for field, name, table in pt.PID_ANIMAL:
        concept = dt.codeable_concept(first(pid, field), table)
        if concept is not None:
            parts.append({"url": name, "valueCodeableConcept": concept})
    if parts and parts[0]["url"] != pt.PID_ANIMAL[0][1]:
        field, name = pt.PID_ANIMAL[0][:2]
        at.sub(field).warn(
            101, f"PID-{field} ({name}) is empty: patient-animal needs it; PID-35..36 left out"
        )
        return None
    return {"url": pt.ANIMAL, "extension": parts} if parts else None


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
    for field, kind, code, table in pt.PID_OBSERVATIONS:
        values = [c for _, rep in at.sub(field).reps() if (c := dt.codeable_concept(rep, table))]
        if not values:
            continue
        key = {"system": ids.PID_OBSERVATION_KEY_SYSTEM, "value": f"{patient_key}|{kind}"}
        concept = {"coding": [code._asdict()]}
        resource: JSON = {
            "resourceType": "Observation",
            "identifier": [key],
            "status": "final",
            "category": [{"coding": [pt.SOCIAL_HISTORY._asdict()]}],
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


def plan_mother(ctx: MapContext, pid: Segment, patient_url: str, patient_key: str) -> None:
    """PID-21 -> the patient's mother, a RelatedPerson (IG CX[RelatedPerson-Mother])."""
    at = ctx.at(pid, 21)
    identifiers = [i for n, rep in at.reps() if (i := dt.cx_identifier(rep, at.sub(21, n)))]
    if not identifiers:
        return
    key = {"system": ids.MOTHER_KEY_SYSTEM, "value": patient_key}
    resource: JSON = {
        "resourceType": "RelatedPerson",
        "identifier": [key, *identifiers],
        "patient": {"reference": patient_url},
        "relationship": [{"coding": [pt.MOTHER._asdict()]}],
    }
    ctx.add(resource, "upsert", ids.match_of(key), origin=ctx.origin(pid, 21))
