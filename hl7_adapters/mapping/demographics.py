"""PID-6 mother's maiden name, PID-10 race, PID-17 religion, PID-21 mother's identifier,
PID-22 ethnic group, PID-23 birth place, PID-26 citizenship, PID-28 nationality, PID-35/36
species and breed, PID-39 tribal citizenship, as the IG maps them (the rows are data in
pid_tables.py).

* PID-6/17/23/26/28/39 (IG PID[Patient]) are FHIR core Patient extensions:
  ``patient-mothersMaidenName`` (valueString, the family name of the first repetition),
  ``patient-religion`` (valueCodeableConcept), ``patient-birthPlace`` (valueAddress.text),
  ``patient-citizenship`` (PID-26 and PID-39) and ``patient-nationality`` (their ``code``
  sub-extension); PID-35/36 are the one ``patient-animal`` (species, breed). An update
  replaces the stored extensions of each part the message sends and keeps the others
  (edits.merge_elements, PATIENT_EXTENSIONS): a part is a URL, but a citizenship's field
  (PID-26, PID-39) and an animal's sub-extension; ``""`` removes that part's extensions.
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
from hl7_adapters.mapping.plan import Parts
from hl7_adapters.mapping.sources import field_of, marked, without_marks
from hl7_adapters.values import Repetition, Segment

JSON = dict[str, Any]


def extension_null(part: str) -> str:
    """The ``nulls`` entry that removes the stored extensions of one part (extension_part)."""
    return f"extension[{part}]"


def patient_extensions(pid: Segment, at: Where) -> tuple[list[JSON], set[str]]:
    """(extensions, nulls) for the fields of pid_tables.PID_EXTENSIONS and PID_ANIMAL."""
    found: list[JSON] = []
    nulled: set[str] = set()
    for field, url, kind, table in pt.PID_EXTENSIONS:
        if field_is_null(pid, field):
            nulled.add(_field_part(url, field))
            continue
        for i, rep in at.sub(field).reps():
            extension = _extension(url, kind, table, rep, at.sub(field, i), field)
            if extension is not None:
                found.append(extension)
                if kind == "family":  # patient-mothersMaidenName is 0..1: the first name
                    break
    animal = _animal(pid, at)
    if animal is not None:
        found.append(animal)
    for (field, _name, _table), removes in zip(pt.PID_ANIMAL, _ANIMAL_NULLS, strict=True):
        if field_is_null(pid, field):
            nulled |= {f"{pt.ANIMAL}|{n}" for n in removes}
    sent = {extension_part(piece) for e in found for piece in unfold_animal([e])}
    return found, {extension_null(part) for part in nulled - sent}


# What "" removes of patient-animal: PID-35 the whole extension (its species is required),
# PID-36 the breed.
_ANIMAL_NULLS = (("species", "breed"), ("breed",))


def _field_part(url: str, field: int) -> str:
    """The part of an extension made by `field`: patient-citizenship is made by PID-26 and
    PID-39, so its part names the field (mark_of); any other extension's part is its URL."""
    return f"{url}|PID-{field}" if url == pt.CITIZENSHIP else url


def _animal(pid: Segment, at: Where) -> JSON | None:
    """PID-35/36 -> patient-animal. A breed sent without species is sent alone: it updates a
    stored animal's breed (fold_animal), and without one it is left out (species is
    required), with a warning."""
    parts = []
    for field, name, table in pt.PID_ANIMAL:
        concept = dt.codeable_concept(first(pid, field), table)
        if concept is not None:
            parts.append({"url": name, "valueCodeableConcept": concept})
    if parts and parts[0]["url"] != pt.PID_ANIMAL[0][1]:
        field, name = pt.PID_ANIMAL[0][:2]
        at.sub(field).warn(
            101,
            f"PID-{field} ({name}) is empty: patient-animal needs it; PID-36 kept only "
            "as the breed of a stored species",
        )
    return {"url": pt.ANIMAL, "extension": parts} if parts else None


# ---------------------------------------------------------------- the Patient's extensions
# merged per part: per URL, but patient-citizenship per field (PID-26, PID-39: the field is
# marked on the code's CodeableConcept, sources.py) and patient-animal per sub-extension
# (species PID-35, breed PID-36), so that a field left empty keeps what it stored.


def extension_part(extension: JSON) -> str | None:
    """The part of a Patient extension: its URL; for patient-citizenship the URL and the
    field marked on its code (None when unmarked: kept, sources.py); for a piece of
    patient-animal (unfold_animal) the URL and its one sub-extension."""
    url = extension.get("url")
    subs = [e for e in extension.get("extension") or [] if isinstance(e, dict)]
    if url == pt.CITIZENSHIP:  # unmarked (stored before marks, or a client's): no part
        field = next((field_of(s.get("valueCodeableConcept") or {}) for s in subs), None)
        return f"{url}|{field}" if field else None
    if url == pt.ANIMAL and len(subs) == 1:
        return f"{url}|{subs[0].get('url')}"
    return url if isinstance(url, str) else None


def unfold_animal(extensions: list[JSON]) -> list[JSON]:
    """patient-animal as one piece per sub-extension (species, breed), each its own part."""
    out: list[JSON] = []
    for e in extensions:
        subs = e.get("extension") if isinstance(e, dict) else None
        if e.get("url") == pt.ANIMAL and isinstance(subs, list) and len(subs) > 1:
            out.extend({**e, "extension": [sub]} for sub in subs)
        else:
            out.append(e)
    return out


def fold_animal(extensions: list[JSON]) -> list[JSON]:
    """The pieces of patient-animal made one extension again (species first), in the place
    of the first; without a species (required) the pieces go."""
    pieces = [e for e in extensions if isinstance(e, dict) and e.get("url") == pt.ANIMAL]
    if not pieces:
        return extensions
    order = [name for _, name, _ in pt.PID_ANIMAL]
    subs = [s for p in pieces for s in p.get("extension") or [] if isinstance(s, dict)]
    subs.sort(key=lambda s: order.index(s["url"]) if s.get("url") in order else len(order))
    whole = {**pieces[0], "extension": subs} if subs and subs[0].get("url") == order[0] else None
    out: list[JSON] = []
    for e in extensions:
        if e is pieces[0] and whole is not None:
            out.append(whole)
        elif not (isinstance(e, dict) and e.get("url") == pt.ANIMAL):
            out.append(e)
    return out


PATIENT_EXTENSIONS = Parts(
    key=extension_part,
    unmarked=without_marks,  # an unmarked citizenship equal to one sent is that one
    unfold=unfold_animal,
    settle=fold_animal,
)


def _extension(
    url: str, kind: str, table: str, rep: Repetition, at: Where, field: int
) -> JSON | None:
    """One repetition as the extension of its kind (see tables.PID_EXTENSIONS); a
    citizenship's code marked with its field (extension_part)."""
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
    if url == pt.CITIZENSHIP:
        concept = marked(concept, f"PID-{field}")
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
