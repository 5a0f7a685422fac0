"""PID -> Patient (IG "Segment PID to Patient Map", mappings/segments PID[Patient]).

Mapped: PID-2/3/4 identifiers (CX, type from CX.5, system and assigner from CX.4), PID-19
SSN, PID-20 driver's licence, PID-5 and PID-9 names, PID-7 birthDate (and a time of birth as
the patient-birthTime extension on it), PID-8 gender, PID-11 addresses with PID-12 county,
PID-13/14/40 telecoms, PID-15 communication.language, PID-16 maritalStatus, PID-24/25
multipleBirth, PID-29/30 deceased; PID-6/17/23/26/28/35/36/39 as the IG's core extensions,
PID-10/22 as Observations and PID-21 as the mother RelatedPerson (demographics.py). Not
mapped, as the IG's PID[Patient] map gives them no target (pid_tables.py says why, field by
field): PID-18, PID-27, PID-31..34, PID-37, PID-38.

**Match rule.** A Patient is found by the first PID-3 repetition that has a value and a
system (see identifiers.hd_system); failing that, the first with a value, matched as a
system-less identifier. That identifier is the same whichever message (ADT upsert, ORU
ensure, A40 survivor) carries the PID.

**nulls.** A top-level element is listed when its source fields hold ``""`` and none of them
holds a value; for the lists merged per field (name, address, telecom, identifier: PARTS)
the part of each field sent as ``""`` (PID-13 ``""`` -> ``telecom[PID-13]``). For the
choice elements (deceased[x], multipleBirth[x]) the variant not sent is also listed whenever
one is set, so a merge-update never leaves both variants on the stored Patient.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

from hl7_adapters.mapping import datatypes as dt
from hl7_adapters.mapping import identifiers as ids
from hl7_adapters.mapping import tables as t
from hl7_adapters.mapping.context import MapContext, Where, field_is_null, first, val
from hl7_adapters.mapping.demographics import PATIENT_EXTENSIONS, patient_extensions
from hl7_adapters.mapping.lookups import look_up
from hl7_adapters.mapping.sources import by_field, field_of, marked, null_paths
from hl7_adapters.values import Repetition, Segment, fhir_integer

JSON = dict[str, Any]
SSN_SYSTEM = "http://hl7.org/fhir/sid/us-ssn"
BCP47 = "urn:ietf:bcp:47"
BIRTH_TIME = t.EXTENSION + "patient-birthTime"
_LANGUAGE_TAG = re.compile(r"[A-Za-z]{2,3}(?:-[A-Za-z0-9]{2,8})*")

# Lists built from several fields, merged per field (each entry marked with its own):
# element -> the fields. PID-3 is the match (required), so it is never null.
_LISTS: dict[str, tuple[int, ...]] = {
    "name": (5, 9),
    "address": (11, 12),
    "telecom": (13, 14, 40),
    "identifier": (2, 4, 19, 20),
}
COUNTY = "PID-12"


def unfold_county(addresses: list[JSON]) -> list[JSON]:
    """Each address whose district is PID-12's (the mark on ``_district``) as two entries:
    the address without it (PID-11's part) and the county alone (PID-12's part), so that an
    update merges the two fields apart (plan.Parts.unfold); fold_county puts it back."""
    out = []
    for a in addresses:
        if isinstance(a, dict) and "district" in a and field_of(a.get("_district") or {}) == COUNTY:
            out.append({k: v for k, v in a.items() if k not in ("district", "_district")})
            out.append(marked({"district": a["district"]}, COUNTY))
        else:
            out.append(a)
    return out


def fold_county(addresses: list[JSON]) -> list[JSON]:
    """PID-12 as the IG places it: the district of the one PID-11 address that has none,
    marked as PID-12's on ``_district``; else (several addresses, or the one names another
    county in XAD.9) an address of its own (PID-12 does not repeat, so it cannot belong to
    one of several)."""
    counties = [
        i for i, a in enumerate(addresses) if field_of(a) == COUNTY and set(a) == _COUNTY_ONLY
    ]
    homes = [i for i, a in enumerate(addresses) if field_of(a) == "PID-11"]
    if len(counties) != 1 or len(homes) != 1 or "district" in addresses[homes[0]]:
        return addresses
    district = addresses[counties[0]]["district"]
    home = {**addresses[homes[0]], "district": district, "_district": marked({}, COUNTY)}
    return [home if i == homes[0] else a for i, a in enumerate(addresses) if i != counties[0]]


_COUNTY_ONLY = {"district", "extension"}
# Patient.contact (NK1 organisations, nk1.py): the feed's entries, marked "NK1", replace its
# stored ones; a contact another client added is kept. Patient.address: PID-12's county
# merged apart from the PID-11 address it is the district of.
PARTS = by_field(*_LISTS, "contact")
PARTS["address"] = dataclasses.replace(PARTS["address"], unfold=unfold_county, settle=fold_county)
PARTS["extension"] = PATIENT_EXTENSIONS  # demographics.py: per URL, field, sub-extension

# Top-level element -> the PID fields it is built from (for nulls).
_SOURCES: dict[str, tuple[int, ...]] = {
    "birthDate": (7,),
    "_birthDate": (7,),  # the birthTime extension
    "gender": (8,),
    "communication": (15,),
    "maritalStatus": (16,),
    "deceasedDateTime": (29,),
    "deceasedBoolean": (30,),
    "multipleBirthInteger": (25,),
    "multipleBirthBoolean": (24,),
}
_CHOICES = (
    ("deceasedDateTime", "deceasedBoolean"),
    ("multipleBirthInteger", "multipleBirthBoolean"),
)


def patient_identifiers(ctx: MapContext, pid: Segment, field: int = 3) -> list[JSON]:
    """The Identifiers of one CX field (PID-3, MRG-1), in order, without empty ones."""
    where = ctx.at(pid, field)
    found = []
    for i, rep in where.reps():
        ident = dt.cx_identifier(rep, where.sub(field, i))
        if ident is not None:
            found.append(ident)
    return found


def match_identifier(identifiers: list[JSON]) -> JSON | None:
    """The identifier a Patient is matched by (rule in the module doc)."""
    for ident in identifiers:
        if ident.get("system"):
            return ident
    return identifiers[0] if identifiers else None


def patient_match(ctx: MapContext, pid: Segment, field: int = 3) -> tuple[str, JSON]:
    """(match query, identifier) for PID-3 (or MRG-1); a missing value is a content error."""
    ident = match_identifier(patient_identifiers(ctx, pid, field))
    if ident is None:
        ctx.at(pid, field).error(
            101,
            f"{pid.id}-{field} holds no identifier value (CX.1); the patient cannot be identified",
            1,
        )
        return "", {}
    return ids.match_of(ident), ident


def ssn_identifier(number: str) -> JSON:
    """A social security number (PID-19, NK1-37: an ST) as the IG maps it: type SS, the US
    SSN system."""
    ss = {"system": t.V2 + "0203", "code": "SS", "display": "Social Security number"}
    return {"type": {"coding": [ss]}, "system": SSN_SYSTEM, "value": number}


def _drivers_licence(pid: Segment, at: Where) -> JSON | None:
    """PID-20 (DLN) -> an identifier of type DL (IG PID[Patient], DLN[Identifier]): DLN.1 the
    value, DLN.2 the issuing state as assigner, DLN.3 the expiry as period.end."""
    rep = first(pid, 20)
    number = val(rep)
    if rep is None or not number:
        return None
    licence: JSON = {
        "type": {
            "coding": [
                {"system": t.V2 + "0203", "code": "DL", "display": "Driver's license number"}
            ]
        },
        "value": number,
    }
    expires = at.sub(20).date(val(rep, 3), 3)
    if expires:
        licence["period"] = {"end": expires}
    issuer = val(rep, 2)
    if issuer:
        licence["assigner"] = {"display": issuer}
    return licence


def build_patient(ctx: MapContext, pid: Segment) -> tuple[JSON, frozenset[str]]:
    """(Patient resource, nulls) for one PID segment. Each entry of name, address, telecom
    and identifier is marked with its field (mapping/sources.py, PARTS)."""
    at = ctx.at(pid)
    identifiers: list[JSON] = []
    for field in (2, 3, 4):
        for ident in patient_identifiers(ctx, pid, field):
            if all(
                (i.get("system"), i["value"]) != (ident.get("system"), ident["value"])
                for i in identifiers
            ):
                identifiers.append(marked(ident, f"PID-{field}"))
    ssn = val(first(pid, 19))
    if ssn and all(i["value"] != ssn for i in identifiers):
        identifiers.append(marked(ssn_identifier(ssn), "PID-19"))
    licence = _drivers_licence(pid, at)
    if licence and all(i["value"] != licence["value"] for i in identifiers):
        identifiers.append(marked(licence, "PID-20"))

    names = [
        marked(n, f"PID-{f}")
        for f in (5, 9)
        for i, r in at.sub(f).reps()
        if (n := dt.human_name(r, at.sub(f, i))) is not None
    ]
    addresses = [
        marked(a, "PID-11")
        for i, r in at.sub(11).reps()
        if (a := dt.address(r, at.sub(11, i))) is not None
    ]
    county = val(first(pid, 12))
    if county and all(a.get("district") != county for a in addresses):
        addresses = fold_county([*addresses, marked({"district": county}, COUNTY)])
    telecom = [
        marked(c, f"PID-{f}")
        for f, use in ((13, "home"), (14, "work"), (40, None))
        for i, r in at.sub(f).reps()
        if (c := dt.contact_point(r, at.sub(f, i), use)) is not None
    ]

    resource: JSON = {"resourceType": "Patient", "identifier": identifiers}
    if names:
        resource["name"] = names
    born = at.sub(7).datetime(val(first(pid, 7)))
    if born:
        resource["birthDate"] = born[:10]
        if "T" in born:  # IG PID[Patient]: a time of birth is the birthTime extension
            resource["_birthDate"] = {"extension": [{"url": BIRTH_TIME, "valueDateTime": born}]}
    gender = _gender(at.sub(8), val(first(pid, 8)))
    if gender:
        resource["gender"] = gender
    if addresses:
        resource["address"] = addresses
    if telecom:
        resource["telecom"] = telecom
    language = language_concept(first(pid, 15))
    if language:
        resource["communication"] = [{"language": language}]
    marital = dt.mapped_concept(first(pid, 16), t.MARITAL_0002, "0002", at.sub(16))
    if marital:
        resource["maritalStatus"] = marital
    _choices(resource, pid, at)
    extensions, extension_nulls = patient_extensions(pid, at)
    if extensions:
        resource["extension"] = extensions
    return resource, _nulls(pid, resource) | extension_nulls


def language_concept(rep: Repetition | None) -> JSON | None:
    """PID-15, NK1-20: a code that is a language tag (``en``, ``en-US``, ``ara``) sent as HL70296,
    ISO639 or without a system is given the BCP-47 system FHIR binds languages to."""
    concept = dt.codeable_concept(rep)
    for coding in (concept or {}).get("coding", []):
        system = coding.get("system")
        if _LANGUAGE_TAG.fullmatch(coding["code"]) and system in (None, BCP47, t.V2 + "0296"):
            coding["system"] = BCP47
    return concept


def _gender(where: Where, code: str) -> str | None:
    if not code:
        return None
    unknown = "PID-8: '{code}' is not in HL7 table 0001; gender left out"
    return look_up(t.GENDER_0001, code, where, unknown)


def _boolean(where: Where, code: str) -> bool | None:
    if not code:
        return None
    unknown = "{name}: '{code}' is not Y or N (HL7 table 0136); left out"
    return look_up(t.YES_NO_0136, code, where, unknown)


def _choices(resource: JSON, pid: Segment, at: Where) -> None:
    """deceased[x] (PID-29, else PID-30) and multipleBirth[x] (PID-25, else PID-24)."""
    died = at.sub(29).datetime(val(first(pid, 29)))
    if died:
        resource["deceasedDateTime"] = died
    else:
        dead = _boolean(at.sub(30), val(first(pid, 30)))
        if dead is not None:
            resource["deceasedBoolean"] = dead
    order = val(first(pid, 25))
    birth_order = fhir_integer(order)
    if birth_order is not None:
        resource["multipleBirthInteger"] = birth_order
    else:
        if order:
            text = f"PID-25: '{order[:40]}' is not a birth order (a number); left out"
            at.sub(25).warn(102, text)
        multiple = _boolean(at.sub(24), val(first(pid, 24)))
        if multiple is not None:
            resource["multipleBirthBoolean"] = multiple


def _nulls(pid: Segment, resource: JSON) -> frozenset[str]:
    nulls = {
        element
        for element, fields in _SOURCES.items()
        if element not in resource and any(field_is_null(pid, f) for f in fields)
    }
    for element, fields in _LISTS.items():
        sent_null = [f"PID-{f}" for f in fields if field_is_null(pid, f)]
        if sent_null:
            nulls |= null_paths(element, sent_null, resource.get(element) or [])
    for pair in _CHOICES:
        for element in pair:
            if element in resource:
                nulls.update(other for other in pair if other != element)
    if "birthDate" in resource and "_birthDate" not in resource:
        nulls.add("_birthDate")  # a birth date sent without time: a stored time is not its
    return frozenset(nulls)
