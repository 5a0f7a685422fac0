"""HL7 v2 ADT -> FHIR mapping (hl7_adapters.mapping), field by field on our own fixtures.

Fixtures: tests/hl7_fixtures/mapping/ (adt_a01_v251: v2.5.1 with escapes, repetitions and
every segment we map; adt_a08_v23_nulls: v2.3 with ``""`` deletes and bad codes;
adt_a40_pairs: two PID/MRG pairs) and tests/hl7_fixtures/adt_a40_two_pairs.hl7 (v2.4).
Every planned resource is validated with app.fhir.validation.validate_resource, as the
applier creates it (edits.settled: a part only a stored element completes is left out).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from app.fhir.validation import validate_resource
from hl7_adapters.edits import settled
from hl7_adapters.er7 import Message, parse_message
from hl7_adapters.mapping import (
    MappingError,
    MappingResult,
    Planned,
    UnsupportedMessage,
    map_message,
)
from hl7_adapters.mapping import identifiers as ids
from hl7_adapters.mapping.demographics import extension_part
from hl7_adapters.mapping.identifiers import identifier_match
from hl7_adapters.mapping.patient import PARTS as PATIENT_PARTS
from hl7_adapters.mapping.sources import field_of, unmarked, without_marks

FIXTURES = Path(__file__).parent / "hl7_fixtures"
MAPPING = FIXTURES / "mapping"
V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"


V2 = "http://terminology.hl7.org/CodeSystem/v2-"


def load(name: str) -> Message:
    return parse_message((MAPPING / name).read_bytes())


def references(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["reference"]] if isinstance(node.get("reference"), str) else []
        return found + [r for v in node.values() for r in references(v)]
    if isinstance(node, list):
        return [r for v in node for r in references(v)]
    return []


def check(result: MappingResult) -> MappingResult:
    """Every resource valid R4; references only to resources planned earlier; matches set."""
    seen: set[str] = set()
    for planned in result.planned:
        created = settled(copy.deepcopy(planned.resource), planned.parts)
        validate_resource(created, expected_type=planned.resource_type)
        assert planned.full_url.startswith("urn:uuid:")
        assert "id" not in planned.resource
        assert set(planned.resource.get("meta", {})) <= {"security"}  # PV2-22 only
        for ref in references(planned.resource):
            assert ref in seen, f"{planned.resource_type} references {ref} before it is planned"
        if planned.mode in ("upsert", "ensure"):
            assert planned.match and planned.match.startswith("identifier=")
        seen.add(planned.full_url)
    return result


def mapped(msg: Message | bytes | str) -> MappingResult:
    if isinstance(msg, str):
        msg = msg.replace("\n", "\r").encode()
    if isinstance(msg, bytes):
        msg = parse_message(msg)
    return check(map_message(msg))


def only(result: MappingResult, rtype: str) -> Planned:
    found = of_type(result, rtype)
    assert len(found) == 1, f"expected one {rtype}, got {len(found)}"
    return found[0]


def of_type(result: MappingResult, rtype: str) -> list[Planned]:
    return [p for p in result.planned if p.resource_type == rtype]


def by_url(result: MappingResult, url: str) -> Planned:
    return next(p for p in result.planned if p.full_url == url)


# --------------------------------------------------------------------------- A01 v2.5.1


def test_a01_patient_field_by_field() -> None:
    result = mapped(load("adt_a01_v251.hl7"))
    patient = only(result, "Patient")
    # each list entry says which PID field made it (mapping/sources.py); compared unmarked
    lists = [k for k in PATIENT_PARTS if k in patient.resource]
    assert {k: [field_of(e) for e in patient.resource[k]] for k in lists} == {
        "identifier": ["PID-3", "PID-3", "PID-3"],
        "name": ["PID-5", "PID-5"],
        "address": ["PID-11", "PID-11"],
        "telecom": ["PID-13", "PID-13", "PID-14"],
    }
    res = {
        k: [unmarked(e) for e in v] if k in PATIENT_PARTS else v
        for k, v in patient.resource.items()
    }
    assert patient.mode == "upsert"
    assert patient.match == "identifier=urn:oid:1.2.3.4|12345"
    assert result.patient_match == patient.match
    assert result.event_time == "2024-01-31T15:44:00+01:00"  # EVN-2, not MSH-7
    assert result.merges == [] and result.warnings == []

    mr, ss, pi = res["identifier"]  # the empty third PID-3 repetition is skipped
    assert mr == {
        "type": {"coding": [{"system": V2_0203, "code": "MR", "display": "Medical record number"}]},
        "system": "urn:oid:1.2.3.4",
        "value": "12345",
        "assigner": {
            "identifier": {"system": "urn:ietf:rfc:3986", "value": "urn:oid:1.2.3.4"},
            "display": "GENHOSP",
        },
    }
    assert (ss["system"], ss["value"], ss["type"]["coding"][0]["code"]) == (
        "urn:oid:2.16.840.1.113883.4.1",
        "987-65-4321",
        "SS",
    )
    assert (pi["system"], pi["value"], pi["assigner"]) == (
        "urn:medisentinel:hl7v2:aa:LOCALREG",
        "X99",
        {"display": "LOCALREG"},
    )

    official, nickname = res["name"]
    assert official == {
        "use": "official",
        "family": "O^Brien&Smith",  # \S\ and \T\ unescaped
        "given": ["Mary", "Ann"],
        "prefix": ["Dr."],
        "suffix": ["Jr", "PhD"],
    }
    assert nickname == {"use": "nickname", "family": "Molly"}
    assert res["birthDate"] == "1970-03-15"
    assert res["gender"] == "female"
    home, postal = res["address"]
    assert home == {
        "use": "home",
        "line": ["12 Main St~Apt 4", "Unit B"],  # \R\ is a literal repetition character
        "city": "Springfield",
        "state": "IL",
        "postalCode": "62701",
        "country": "USA",
        "district": "Sangamon",
    }
    assert postal["type"] == "postal" and "use" not in postal
    assert res["telecom"] == [
        {"system": "phone", "value": "+1 555 5551234", "use": "home"},
        {"system": "email", "value": "mary@example.org", "use": "home"},
        {"system": "phone", "value": "(555)555-9876", "use": "work"},
    ]
    assert res["communication"] == [
        {
            "language": {
                "coding": [{"system": "urn:ietf:bcp:47", "code": "en", "display": "English"}]
            }
        }
    ]
    assert res["maritalStatus"]["coding"] == [
        {
            "system": "http://terminology.hl7.org/CodeSystem/v3-MaritalStatus",
            "code": "M",
            "display": "Married",
        },
        {
            "system": "http://terminology.hl7.org/CodeSystem/v2-0002",
            "code": "M",
            "display": "Married",
        },
    ]
    assert res["deceasedBoolean"] is False  # PID-30 N
    # the other deceased[x] variant is cleared, and a birth time of an earlier birth date
    assert patient.nulls == {"deceasedDateTime", "_birthDate"}


def test_a01_encounter_practitioners_location() -> None:
    result = mapped(load("adt_a01_v251.hl7"))
    patient = only(result, "Patient")
    encounter = only(result, "Encounter")
    enc = encounter.resource
    assert encounter.mode == "upsert"
    assert encounter.match == "identifier=urn:oid:1.2.3.4|V0001"
    assert enc["status"] == "in-progress"
    assert enc["class"] == {
        "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
        "code": "IMP",
        "display": "inpatient encounter",
    }
    assert enc["subject"] == {"reference": patient.full_url}
    visit = enc["identifier"][0]
    assert (visit["value"], visit["system"], visit["type"]["coding"][0]["code"]) == (
        "V0001",
        "urn:oid:1.2.3.4",
        "VN",
    )
    assert enc["period"] == {"start": "2024-01-31T15:00:00+01:00"}
    # IS fields sent without a coding system are codes of their HL7 table (PV1-10 0069,
    # PV1-14 0023); PV2-3 (admit reason) is bound to no table and stays without one
    assert enc["serviceType"] == {"coding": [{"system": V2 + "0069", "code": "MED"}]}
    assert enc["reasonCode"] == [{"coding": [{"code": "CHEST", "display": "Chest pain"}]}]
    assert enc["hospitalization"] == {
        "admitSource": {"coding": [{"system": V2 + "0023", "code": "7"}]}
    }

    (where,) = enc["location"]
    location = by_url(result, where["location"]["reference"])
    assert where["status"] == "active"
    assert location.mode == "ensure"
    assert location.resource["name"] == "WARD1 101 A"
    assert location.resource["identifier"] == [
        {"system": "urn:medisentinel:hl7v2:location", "value": "GENHOSP^WARD1^101^A"}
    ]
    assert location.resource["physicalType"]["coding"][0]["code"] == "bd"

    roles = [
        (p["type"][0]["coding"][0]["code"], p["individual"].get("display"))
        for p in enc["participant"]
    ]
    assert roles == [
        ("ATND", "Dr. Alice Attend MD"),
        ("ATND", "Ned Nameless"),
        ("REF", "Rita Refer"),
        ("ADM", "Adam Admit"),
        ("ADM", "Dr. Alice Attend MD"),
    ]
    ned = enc["participant"][1]["individual"]
    assert "reference" not in ned  # no XCN.1: named only, never a duplicate Practitioner
    practitioners = of_type(result, "Practitioner")
    assert len(practitioners) == 3  # Alice appears twice (PV1-7, PV1-17) and is planned once
    alice = by_url(result, enc["participant"][0]["individual"]["reference"])
    assert enc["participant"][4]["individual"]["reference"] == alice.full_url
    assert alice.mode == "ensure" and alice.match == "identifier=urn:oid:1.2.3.4|1234"
    assert alice.resource["name"] == [
        {
            "use": "official",
            "family": "Attend",
            "given": ["Alice"],
            "prefix": ["Dr."],
            "suffix": ["MD"],
        }
    ]
    assert alice.resource["identifier"][0]["type"]["coding"][0]["code"] == "DN"
    rita = by_url(result, enc["participant"][2]["individual"]["reference"])
    assert rita.match == "identifier=|2222"  # no XCN.9: a system-less identifier


def test_professional_suffix_is_a_suffix() -> None:
    """IG XPN[HumanName]: XPN.14 professional suffix -> suffix (XCN.21 in a doctor's name),
    after XPN.4 and XPN.6; one sent twice is kept once."""
    msg = (
        "MSH|^~\\&|ADT|H|MS|MS|20240101120000+0000||ADT^A04|S1|P|2.5.1\r"
        "PID|1||7^^^H&1.2.3&ISO^MR||Smith^John^Q^Jr^Dr^PhD^L^^^^^^^MD~Roe^Ann^^^^MD^L^^^^^^^MD\r"
        "PV1|1|O|||||55^Who^Doc^^^^MD^^H&1.2.3&ISO^L^^^DN^^^^^^^^FACP|||||||||||||V1^^^H&1.2.3&ISO\r"
    )
    result = mapped(msg.encode())
    names = only(result, "Patient").resource["name"]
    assert [n["suffix"] for n in names] == [["Jr", "PhD", "MD"], ["MD"]]
    doctor = only(result, "Practitioner").resource
    assert doctor["name"][0]["suffix"] == ["MD", "FACP"]


def test_street_address_parts_are_not_repeated() -> None:
    """XAD.1 (SAD): SAD.1 is the whole street line; SAD.2 (street name) and SAD.3 (dwelling
    number) are its parts and make the line only when SAD.1 is empty."""
    msg = (
        "MSH|^~\\&|ADT|H|MS|MS|20240101120000+0000||ADT^A04|S2|P|2.5.1\r"
        "PID|1||7^^^H&1.2.3&ISO^MR||Roe^Ann||||||"
        "1000 Hospital Lane&Hospital Lane&1000^^Town^ST~&Main St&12^^Town^ST\r"
    )
    addresses = only(mapped(msg.encode()), "Patient").resource["address"]
    assert [a["line"] for a in addresses] == [["1000 Hospital Lane"], ["12 Main St"]]


def test_diagnoses_are_conditions_of_the_visit() -> None:
    """IG DG1[Condition]: code (DG1-4 its text), onset, recorded date, asserter, DG1-20 kept;
    category encounter-diagnosis, the message's Encounter; DG1-21 D -> entered-in-error."""
    msg = (
        "MSH|^~\\&|ADT|H|MS|MS|20240101120000+0000||ADT^A01|D1|P|2.5.1\r"
        "PID|1||7^^^H&1.2.3&ISO^MR||Roe^Ann\r"
        "PV1|1|I|||||||||||||||||V9^^^H&1.2.3&ISO^VN\r"
        "DG1|1||I63.9^Cerebral infarction^I10|Stroke|20240101100000+0000|A|||||||||1|"
        "55^Diag^Robin^^^^^^H&1.2.3&ISO|||20240101110000+0000|DX1^H^1.2.3^ISO\r"
        "DG1|2||E11.9^Type 2 diabetes^I10||||||||||||||||||D\r"
    )
    result = mapped(msg.encode())
    stroke, diabetes = of_type(result, "Condition")
    encounter = only(result, "Encounter")
    res = stroke.resource
    assert stroke.mode == "upsert"
    assert (
        stroke.match
        == "identifier=urn:medisentinel:hl7v2:dg1|urn:oid:1.2.3%5C|7%5C|id:urn:oid:1.2.3%5C|DX1"
    )
    assert res["identifier"][1] == {"system": "urn:oid:1.2.3", "value": "DX1"}
    assert res["code"] == {
        "coding": [
            {"system": "http://hl7.org/fhir/sid/icd-10", "code": "I63.9",
             "display": "Cerebral infarction"}
        ],
        "text": "Stroke",
    }  # fmt: skip
    assert res["category"][0]["coding"][0]["code"] == "encounter-diagnosis"
    assert res["subject"] == {"reference": only(result, "Patient").full_url}
    assert res["encounter"] == {"reference": encounter.full_url}
    assert res["onsetDateTime"] == "2024-01-01T10:00:00+00:00"
    assert res["recordedDate"] == "2024-01-01T11:00:00+00:00"
    assert by_url(result, res["asserter"]["reference"]).resource["name"][0]["family"] == "Diag"
    assert "verificationStatus" not in res
    assert diabetes.resource["verificationStatus"]["coding"][0]["code"] == "entered-in-error"
    assert diabetes.resource["identifier"][0]["value"].endswith(
        "|urn:oid:1.2.3|V9|http://hl7.org/fhir/sid/icd-10|E11.9"
    )


def test_a01_related_persons() -> None:
    result = mapped(load("adt_a01_v251.hl7"))
    patient = only(result, "Patient")
    spouse, mother = of_type(result, "RelatedPerson")
    key = "urn:oid:1.2.3.4|12345"
    assert spouse.mode == "upsert"
    assert [unmarked(i) for i in spouse.resource["identifier"]] == [
        {"system": "urn:medisentinel:hl7v2:nk1", "value": f"{key}|1"}
    ]
    assert spouse.match == identifier_match("urn:medisentinel:hl7v2:nk1", f"{key}|1")
    assert mother.resource["identifier"][0]["value"] == f"{key}|2"
    res = spouse.resource
    assert res["patient"] == {"reference": patient.full_url}
    relationship, role = res["relationship"]
    assert relationship["coding"][0] == {
        "system": "http://terminology.hl7.org/CodeSystem/v3-RoleCode",
        "code": "SPS",
        "display": "spouse",
    }
    assert relationship["coding"][1]["code"] == "SPO"
    assert role == {
        "coding": [
            {
                "system": "http://terminology.hl7.org/CodeSystem/v2-0131",
                "code": "N",
                "display": "Next-of-Kin",
            }
        ]
    }
    # each entry marked with its NK1 field (mapping/sources.py)
    assert [field_of(e) for k in ("name", "telecom") for e in res[k]] == ["NK1-2", "NK1-5", "NK1-6"]
    assert [unmarked(n) for n in res["name"]] == [
        {"use": "official", "family": "Smith", "given": ["John"]}
    ]
    assert [unmarked(c) for c in res["telecom"]] == [
        {"system": "phone", "value": "+1 555 5559999", "use": "home"},
        {"system": "phone", "value": "+1 555 5550000", "use": "work"},
    ]
    assert res["address"][0]["line"] == ["1 Elm St"]
    assert (res["gender"], res["birthDate"]) == ("male", "1968-01-01")
    assert mother.resource["relationship"][0]["coding"][0]["code"] == "MTH"


def test_a01_allergies() -> None:
    result = mapped(load("adt_a01_v251.hl7"))
    penicillin, peanuts = of_type(result, "AllergyIntolerance")
    rxnorm = "http://www.nlm.nih.gov/research/umls/rxnorm"
    res = penicillin.resource
    assert penicillin.mode == "upsert"
    assert res["identifier"] == [
        {"system": "urn:medisentinel:hl7v2:al1", "value": f"urn:oid:1.2.3.4|12345|{rxnorm}|70618"}
    ]
    assert res["code"] == {"coding": [{"system": rxnorm, "code": "70618", "display": "Penicillin"}]}
    assert res["clinicalStatus"]["coding"][0]["code"] == "active"
    assert (res["type"], res["category"], res["criticality"]) == ("allergy", ["medication"], "high")
    assert [unmarked(r) for r in res["reaction"]] == [
        {"manifestation": [{"text": "Hives"}, {"text": "Rash"}], "severity": "severe"}
    ]
    assert field_of(res["reaction"][0]) == "AL1-5"  # AL1-4 and AL1-5 merge into it
    assert res["onsetDateTime"] == "2020-01-01"
    food = peanuts.resource
    assert food["code"] == {"text": "Peanuts"}
    assert food["identifier"][0]["value"] == "urn:oid:1.2.3.4|12345||Peanuts"
    assert (food["category"], food["criticality"]) == (["food"], "low")
    # AL1-4 alone: a severity that only a stored reaction could hold; created without it
    assert "reaction" not in settled(copy.deepcopy(food), peanuts.parts)


def test_resend_gives_the_same_matches() -> None:
    """A re-sent message must find the same resources: every match is deterministic."""
    first = mapped(load("adt_a01_v251.hl7"))
    second = mapped(load("adt_a01_v251.hl7"))
    assert [(p.resource_type, p.mode, p.match) for p in first.planned] == [
        (p.resource_type, p.mode, p.match) for p in second.planned
    ]
    assert len({p.full_url for p in first.planned} & {p.full_url for p in second.planned}) == 0


# --------------------------------------------------------------------------- A08 v2.3


def test_a08_v23_nulls_and_warnings() -> None:
    result = mapped(load("adt_a08_v23_nulls.hl7"))
    patient = only(result, "Patient")
    res = patient.resource
    assert patient.match == "identifier=urn:medisentinel:hl7v2:aa:OLDHOSP|4711"
    assert patient.nulls == {
        "telecom[PID-13]",  # PID-13 "": its entries go (PID-14, PID-40 empty: theirs stay)
        "maritalStatus",  # PID-16 ""
        "deceasedDateTime",  # PID-29 ""
        "deceasedBoolean",  # PID-30 ""
        "multipleBirthInteger",  # PID-24 Y set multipleBirthBoolean
    }
    assert "telecom" not in res and "maritalStatus" not in res
    assert "address" not in res and "address" not in patient.nulls  # empty is not a delete
    assert unmarked(res["identifier"][0]) == {"value": "4711"}  # PID-2 without authority
    assert [unmarked(n) for n in res["name"]] == [{"family": "DOE", "given": ["JOHN", "Q"]}]
    assert res["multipleBirthBoolean"] is True
    assert "birthDate" not in res and "gender" not in res
    warnings = [(w.code, w.segment, w.sequence, w.field, w.severity) for w in result.warnings]
    assert (102, "PID", 1, 7, "W") in warnings  # 19450229 does not exist
    assert (103, "PID", 1, 8, "W") in warnings  # X is not in table 0001
    assert result.event_time == "2003-02-01T11:59:00"  # v2.3 without offset, as sent

    encounter = only(result, "Encounter")
    assert encounter.match == "identifier=|VN42"
    assert encounter.resource["status"] == "in-progress"  # A08: from PV1 (class O, no PV1-45)
    assert encounter.resource["class"]["code"] == "AMB"
    # PV1-44 has a time but neither it nor MSH-7 has a zone: FHIR needs one, so a date.
    assert encounter.resource["period"] == {"start": "2003-02-01"}
    assert (102, "PV1", 1, 44, "W") in warnings


def test_default_offset_completes_times_without_zone() -> None:
    msg = load("adt_a08_v23_nulls.hl7")
    result = check(map_message(msg, default_offset="-05:00"))
    encounter = only(result, "Encounter")
    assert encounter.resource["period"] == {"start": "2003-02-01T09:00:00-05:00"}
    assert result.event_time == "2003-02-01T11:59:00-05:00"


# --------------------------------------------------------------------------- events

TEMPLATE = (
    "MSH|^~\\&|REG|GENHOSP|MEDISENTINEL|HUB|20240301080000+0100||ADT^{trigger}|C{trigger}|P|2.5\n"
    "EVN|{trigger}|20240301080000+0100\n"
    "PID|1||555^^^GENHOSP^MR||Event^Eve||19900101|F\n"
    "PV1|1|{klass}|WARD2^1^1||||||||||||||||{visit}|||||||||||||||||||||||||{admit}|{discharge}\n"
)


def adt(trigger: str, klass: str = "I", visit: str = "V77", discharge: str = "") -> str:
    return TEMPLATE.format(
        trigger=trigger, klass=klass, visit=visit, admit="20240301070000+0100", discharge=discharge
    )


@pytest.mark.parametrize(
    ("trigger", "klass", "discharge", "status"),
    [
        ("A01", "I", "", "in-progress"),  # IG Event[EncounterStatus]
        ("A02", "I", "", "in-progress"),
        ("A03", "I", "20240302100000+0100", "finished"),
        ("A04", "O", "", "planned"),
        ("A05", "P", "", "planned"),
        ("A11", "I", "", "cancelled"),
        ("A13", "I", "", "in-progress"),
        ("A06", "I", "", "in-progress"),  # v2.5 chapter 3 / R4 EncounterStatus (tables.py)
        ("A07", "O", "", "in-progress"),
        ("A12", "I", "", "in-progress"),
        ("A14", "P", "", "planned"),
        ("A21", "I", "", "onleave"),
        ("A22", "I", "", "in-progress"),
        ("A27", "P", "", "cancelled"),
        ("A38", "P", "", "cancelled"),
        ("A08", "I", "", "in-progress"),  # no event status: PV1 class I
        ("A08", "I", "20240302100000+0100", "finished"),  # PV1-45 valued
        ("A08", "P", "", "planned"),  # PV1 class P
        ("A31", "E", "", "in-progress"),
    ],
)
def test_encounter_status_by_event(trigger: str, klass: str, discharge: str, status: str) -> None:
    result = mapped(adt(trigger, klass, discharge=discharge))
    encounter = only(result, "Encounter")
    assert encounter.resource["status"] == status
    assert encounter.mode == "upsert"
    assert encounter.match == "identifier=|V77"
    if discharge:
        assert encounter.resource["period"]["end"] == "2024-03-02T10:00:00+01:00"
    *_, planned_location = of_type(result, "Location")  # ward, room, then the bed
    expected = "planned" if klass == "P" else "active"
    assert encounter.resource["location"] == [
        {
            "location": {"reference": planned_location.full_url, "display": "WARD2 1 1"},
            "status": expected,
        }
    ]


LOCATION_KEY = "urn:medisentinel:hl7v2:location"


def locations(pl: str) -> dict[str, Planned]:
    """The Locations planned for a PV1-3, by name."""
    result = mapped(
        "MSH|^~\\&|A|F|R|F|20240901100000+0000||ADT^A01^ADT_A01|LOC-1|P|2.5.1\n"
        "PID|1||LOC1^^^HOSP&1.2.3&ISO^MR||Loc^Pat\n"
        f"PV1|1|I|{pl}" + "|" * 16 + "LOCV^^^HOSP&1.2.3&ISO^VN\n"
    )
    found = {p.resource["name"]: p for p in of_type(result, "Location")}
    (stay,) = only(result, "Encounter").resource["location"]
    assert stay["location"]["reference"] == list(found.values())[-1].full_url  # the leaf
    return found


def test_a_pl_is_a_location_hierarchy() -> None:
    """IG PL[Location]: bed partOf room partOf floor partOf point of care partOf facility,
    building partOf facility; every level ensured by its own identifier. It was one flat
    Location for the most granular place."""
    found = locations("WARD1^101^A^GENHOSP^^^EAST^3^Window bed")
    assert list(found) == ["GENHOSP", "EAST", "WARD1", "3", "101", "Window bed"]
    keys = {name: p.resource["identifier"][0] for name, p in found.items()}
    assert {k["system"] for k in keys.values()} == {LOCATION_KEY}
    assert {name: k["value"] for name, k in keys.items()} == {
        "GENHOSP": "GENHOSP",
        "EAST": "GENHOSP^building:EAST",
        "WARD1": "GENHOSP^WARD1",
        "3": "GENHOSP^WARD1^floor:3",
        "101": "GENHOSP^WARD1^101",
        "Window bed": "GENHOSP^WARD1^101^A",  # the key the flat Location had
    }

    def parent(name: str) -> str | None:
        ref = found[name].resource.get("partOf", {}).get("reference")
        return next((n for n, p in found.items() if p.full_url == ref), None)

    assert [parent(n) for n in found] == [None, "GENHOSP", "GENHOSP", "WARD1", "3", "101"]
    types = [p.resource["physicalType"]["coding"][0]["code"] for p in found.values()]
    assert types == ["si", "bu", "wa", "lvl", "ro", "bd"]
    assert all(p.mode == "ensure" and p.match for p in found.values())
    assert found["Window bed"].resource.get("description") is None  # it is the name
    # Only a new bed needs the levels above it (nothing else refers to them): they are
    # ensured only for it, so a known bed is looked up and locked alone.
    bed = found["Window bed"].full_url
    assert [p.only_for for p in found.values()] == [frozenset({bed})] * 5 + [None]


def test_a_level_that_one_pl_names_as_its_most_granular_is_always_ensured() -> None:
    """PV1-3 a bed in room 101, PV1-6 room 101 itself: the room is the prior location, ensured
    whether or not the bed exists; the ward above stays only for the new bed or room."""
    result = mapped(
        "MSH|^~\\&|A|F|R|F|20240901100000+0000||ADT^A02^ADT_A02|LOC-2|P|2.5.1\n"
        "PID|1||LOC2^^^HOSP&1.2.3&ISO^MR||Loc^Pat\n"
        "PV1|1|I|WARD1^101^A^GENHOSP|||WARD1^101^^GENHOSP"
        + "|" * 13
        + "LOCV2^^^HOSP&1.2.3&ISO^VN\n"
    )
    found = {p.resource["name"]: p for p in of_type(result, "Location")}
    assert list(found) == ["GENHOSP", "WARD1", "101", "WARD1 101 A"]
    leaves = {found["WARD1 101 A"].full_url, found["101"].full_url}
    assert found["GENHOSP"].only_for == found["WARD1"].only_for == leaves
    assert found["101"].only_for is None
    assert found["WARD1 101 A"].only_for is None


def test_missing_levels_are_skipped_and_pl10_names_the_leaf() -> None:
    found = locations("WARD2^^B")
    assert list(found) == ["WARD2", "WARD2 B"]
    bed = found["WARD2 B"].resource
    assert bed["partOf"] == {"reference": found["WARD2"].full_url}
    assert bed["identifier"] == [{"system": LOCATION_KEY, "value": "^WARD2^^B"}]
    found = locations("^202^^^^^^^^R202&HOSP&1.2.3&ISO")
    assert list(found) == ["202"]
    assert found["202"].resource["identifier"] == [{"system": "urn:oid:1.2.3", "value": "R202"}]


def test_an_organisation_as_next_of_kin_is_a_patient_contact() -> None:
    """IG ADT_A01: NK1-3 EMR or NK1-7 in E/F/I/S -> NK1[Patient]; others RelatedPerson."""
    text = (
        "MSH|^~\\&|NK|F|R|F|20240901100000+0000||ADT^A01^ADT_A01|NK-1|P|2.5.1\n"
        "EVN|A01|20240901100000+0000\n"
        "PID|1||NKP^^^HOSP&1.2.3&ISO^MR||Nk^P\n"
        "NK1|1|Smith^Jane|EMC^Emergency contact^HL70063|||C^Emergency Contact^HL70131\n"
        "NK1|2|Acme Corp|EMR^Employer^HL70063|||E^Employer^HL70131\n"
        "NK1|3|State Agency|||||S^State Agency^HL70131||||||Acme State Office\n"
    )
    result = mapped(text)
    person = only(result, "RelatedPerson")
    assert [unmarked(n) for n in person.resource["name"]] == [
        {"family": "Smith", "given": ["Jane"]}
    ]
    relationship = person.resource["relationship"]
    codes = [(c["system"][-4:], c["code"]) for r in relationship for c in r["coding"]]
    assert codes == [("0131", "C"), ("0063", "EMC")]  # NK1-7 C not repeated
    contacts = only(result, "Patient").resource["contact"]
    assert [c["name"] for c in contacts] == [{"family": "Acme Corp"}, {"family": "State Agency"}]
    employer = [
        (c["system"][-4:], c["code"]) for r in contacts[0]["relationship"] for c in r["coding"]
    ]
    assert employer == [("0131", "E"), ("0063", "EMR")]  # the one concept, once
    assert contacts[1]["organization"] == {"display": "Acme State Office"}


def test_observations_and_drivers_licence_in_an_admission() -> None:
    """IG ADT_A01: OBX -> Observation of the patient and encounter; PID-20 -> identifier DL."""
    text = (
        "MSH|^~\\&|A|F|R|F|20240901100000+0000||ADT^A01^ADT_A01|OB-1|P|2.5.1\n"
        "EVN|A01|20240901100000+0000\n"
        "PID|1||OBP^^^HOSP&1.2.3&ISO^MR||Ob^P" + "|" * 15 + "D1234567^CA^20301231\n"
        "PV1|1|I" + "|" * 17 + "OBV^^^HOSP&1.2.3&ISO^VN\n"
        "OBX|1|NM|8302-2^Body height^LN||180|cm^cm^UCUM|||||F\n"
        "NTE|1||measured at admission\n"
    )
    result = mapped(text)
    patient = only(result, "Patient")
    [licence] = [i for i in patient.resource["identifier"] if i["value"] == "D1234567"]
    assert licence["type"]["coding"][0]["code"] == "DL"
    assert licence["period"] == {"end": "2030-12-31"} and licence["assigner"] == {"display": "CA"}
    encounter = only(result, "Encounter")
    height = only(result, "Observation")
    assert height.resource["subject"] == {"reference": patient.full_url}
    assert height.resource["encounter"] == {"reference": encounter.full_url}
    assert height.resource["valueQuantity"]["value"] == 180
    assert height.resource["note"] == [{"text": "measured at admission"}]
    assert height.mode == "upsert" and "visit%3A" not in (height.match or "")
    assert "OBV" in (height.resource["identifier"][0]["value"])  # keyed under the visit


def pid_fields(**fields: str) -> str:
    """A PID with PID-3 and the given fields (f10="...")."""
    values = [""] * 30
    values[2], values[4] = "DEM1^^^HOSP&1.2.3&ISO^MR", "Dem^Pat"
    for name, value in fields.items():
        values[int(name[1:]) - 1] = value
    return "PID|" + "|".join(values).rstrip("|") + "\n"


def demographics(**fields: str) -> MappingResult:
    return mapped(
        "MSH|^~\\&|A|F|R|F|20240901100000+0000||ADT^A08^ADT_A01|DM-1|P|2.5.1\n"
        "EVN|A08|20240901100000+0000\n" + pid_fields(**fields)
    )


EXT = "http://hl7.org/fhir/StructureDefinition/"


def test_race_ethnicity_birth_place_citizenship_nationality() -> None:
    """IG PID[Patient]: PID-23 -> patient-birthPlace (valueAddress.text), PID-26 (repeating)
    -> patient-citizenship, PID-28 -> patient-nationality (their "code"); IG PID[Race] and
    PID[EthnicGroup] to Observation: PID-10 and PID-22 -> Observations of the patient.
    All five were left out."""
    result = demographics(
        f10="2106-3^White^CDCREC~2028-9^Asian^CDCREC",
        f22="2186-5^Not Hispanic or Latino^CDCREC",
        f23="Springfield General",
        f26="USA^United States^ISO3166_1~CAN^Canada^ISO3166_1",
        f28="NLD",
    )
    patient = only(result, "Patient")
    citizenships = [e for e in patient.resource["extension"] if e["url"].endswith("citizenship")]
    assert [extension_part(e) for e in citizenships] == [EXT + "patient-citizenship|PID-26"] * 2
    assert without_marks(patient.resource["extension"]) == [
        {"url": EXT + "patient-birthPlace", "valueAddress": {"text": "Springfield General"}},
        *(
            {
                "url": EXT + "patient-citizenship",
                "extension": [
                    {
                        "url": "code",
                        "valueCodeableConcept": {
                            "coding": [{"system": "urn:iso:std:iso:3166", "code": c, "display": d}]
                        },
                    }
                ],
            }
            for c, d in (("USA", "United States"), ("CAN", "Canada"))
        ),
        {
            "url": EXT + "patient-nationality",
            "extension": [
                {
                    "url": "code",
                    "valueCodeableConcept": {"coding": [{"system": V2 + "0212", "code": "NLD"}]},
                }
            ],
        },
    ]
    race, ethnicity = of_type(result, "Observation")
    for obs, code in ((race, "32624-9"), (ethnicity, "69490-1")):
        assert obs.mode == "upsert" and obs.match and obs.match.startswith("identifier=")
        assert obs.resource["subject"] == {"reference": patient.full_url}
        assert obs.resource["status"] == "final"
        assert obs.resource["code"]["coding"][0]["code"] == code
    cdcrec = "urn:oid:2.16.840.1.113883.6.238"
    assert [c["valueCodeableConcept"]["coding"][0]["code"] for c in race.resource["component"]] == [
        "2106-3",
        "2028-9",
    ]
    assert ethnicity.resource["valueCodeableConcept"] == {
        "coding": [{"system": cdcrec, "code": "2186-5", "display": "Not Hispanic or Latino"}]
    }
    assert ethnicity.nulls == frozenset({"component"})
    # the same PID re-sent finds the same Observations
    assert [o.match for o in of_type(demographics(f10="2106-3", f22="2186-5"), "Observation")] == [
        race.match,
        ethnicity.match,
    ]


def test_demographic_nulls_remove_only_their_extension() -> None:
    patient = only(demographics(f23='""', f28="NLD"), "Patient")
    assert f"extension[{EXT}patient-birthPlace]" in patient.nulls
    assert [e["url"] for e in patient.resource["extension"]] == [EXT + "patient-nationality"]
    assert not of_type(demographics(f23="X"), "Observation")  # no PID-10/22: none planned


def test_an_oru_plans_no_race_observation() -> None:
    """An ORU's PID only names the patient (ensure): no demographics Observations."""
    text = (
        "MSH|^~\\&|LAB|L|R|F|20240901100000+0000||ORU^R01|DM-2|P|2.5.1\n"
        + pid_fields(f10="2106-3^White^CDCREC")
        + "OBR|1||F1|1^P^L|||20240901080000+0000||||||||||||||||||F\n"
        "OBX|1|NM|1^A^L||1||||||F\n"
    )
    assert len(of_type(mapped(text), "Observation")) == 1  # the OBX only


def test_visit_number_rules() -> None:
    # a new visit without number: found again by patient, admit time (PV1-44) and class
    created = mapped(adt("A04", visit=""))
    encounter = only(created, "Encounter")
    assert encounter.mode == "upsert"
    assert encounter.match == ids.match_of(encounter.resource["identifier"][0])
    key = encounter.resource["identifier"][0]
    assert key["system"] == ids.VISIT_KEY_SYSTEM
    assert key["value"].endswith("|admit:20240301070000+0100|I")
    # without an admit time: the event time (EVN-2), else the message time (MSH-7)
    no_admit = mapped(adt("A04", visit="").replace("20240301070000+0100", ""))
    assert "|event:" in only(no_admit, "Encounter").resource["identifier"][0]["value"]
    # no time at all: nothing to find it by, so it is created
    timeless = (
        "MSH|^~\\&|A|F|R|F|||ADT^A04^ADT_A01|T-1|P|2.5.1\n"
        "PID|1||TL^^^HOSP&1.2.3&ISO^MR||Tl^P\nPV1|1|O\n"
    )
    encounter = only(mapped(timeless), "Encounter")
    assert (encounter.mode, encounter.match) == ("create", None)
    updated = mapped(adt("A08", visit=""))  # nothing to find: no Encounter, a warning
    assert of_type(updated, "Encounter") == []
    assert [(w.code, w.segment, w.field) for w in updated.warnings] == [(101, "PV1", 19)]
    person = mapped(adt("A28", visit=""))  # a person-level event: silently none
    assert of_type(person, "Encounter") == [] and person.warnings == []


def test_patient_class_missing_is_unknown() -> None:
    result = mapped(adt("A01", klass=""))
    assert only(result, "Encounter").resource["class"]["code"] == "U"
    assert [(w.code, w.segment, w.field) for w in result.warnings] == [(101, "PV1", 2)]


def test_old_message_trigger_from_evn() -> None:
    """v2.2 without MSH-9.2: the event comes from EVN-1."""
    text = (
        "MSH|^~\\&|REG|GENHOSP|MEDISENTINEL|HUB|199901011200||ADT|OLD1|P|2.2\n"
        "EVN|A01|199901011200\n"
        "PID|1||123^^^GENHOSP||OLD^TIMER||19300101|M\n"
    )
    result = mapped(text)
    [name] = only(result, "Patient").resource["name"]
    assert unmarked(name) == {"family": "OLD", "given": ["TIMER"]}
    assert of_type(result, "Encounter") == []  # no PV1


# --------------------------------------------------------------------------- A40


def test_a40_two_pairs() -> None:
    result = mapped(load("adt_a40_pairs.hl7"))
    one, two = of_type(result, "Patient")
    assert [(m.survivor, m.retired, m.survivor_full_url) for m in result.merges] == [
        (
            "identifier=urn:oid:1.2.3.4|KEEP1",
            "identifier=urn:oid:1.2.3.4|GONE1",
            one.full_url,
        ),
        (
            "identifier=urn:oid:1.2.3.4|KEEP2",
            "identifier=urn:medisentinel:hl7v2:aa:OTHERHOSP|GONE2",
            two.full_url,
        ),
    ]
    assert (one.mode, one.match) == ("upsert", "identifier=urn:oid:1.2.3.4|KEEP1")
    assert [unmarked(n) for n in one.resource["name"]] == [{"family": "Keep", "given": ["One"]}]
    assert two.resource["gender"] == "female"
    assert result.patient_match == one.match


def test_a40_v24_fixture_without_structure() -> None:
    result = mapped(parse_message((FIXTURES / "adt_a40_two_pairs.hl7").read_bytes()))
    assert [(m.survivor, m.retired) for m in result.merges] == [
        (
            "identifier=urn:medisentinel:hl7v2:aa:GENHOSP|SURV1",
            "identifier=urn:medisentinel:hl7v2:aa:GENHOSP|OLD1",
        ),
        (
            "identifier=urn:medisentinel:hl7v2:aa:GENHOSP|SURV2",
            "identifier=urn:medisentinel:hl7v2:aa:GENHOSP|OLD2",
        ),
    ]


# --------------------------------------------------------------------------- errors


def errors_of(text: str) -> list[tuple[int, str, int | None, int | None, int | None]]:
    with pytest.raises(MappingError) as caught:
        mapped(text)
    return [(e.code, e.segment, e.sequence, e.field, e.component) for e in caught.value.errors]


def test_content_errors_name_their_location() -> None:
    head = "MSH|^~\\&|REG|GENHOSP|MEDISENTINEL|HUB|20240301080000+0100||ADT^A01|E1|P|2.5\n"
    assert errors_of(head + "EVN|A01|20240301080000\n") == [(100, "PID", None, None, None)]
    assert errors_of(head + "PID|1||^^^GENHOSP^MR||No^Id\n") == [(101, "PID", 1, 3, 1)]
    merge = head.replace("ADT^A01", "ADT^A40") + "PID|1||1^^^H^MR||A^B\nMRG|^^^H^MR\n"
    assert errors_of(merge) == [(101, "MRG", 1, 1, 1)]
    with pytest.raises(MappingError) as caught:
        mapped(head + "PID|1||^^^GENHOSP^MR||No^Id\n")
    assert caught.value.errors[0].severity == "E"
    assert "PID-3" in caught.value.errors[0].text


@pytest.mark.parametrize(
    ("msh9", "version", "code", "field"),
    [
        ("ORM^O01", "2.5", 200, 9),
        ("MDM^T02", "2.5", 200, 9),
        ("ADT^A99", "2.5", 201, 9),
        ("ORU^R30", "2.5", 201, 9),
        ("ADT^A01", "2.1", 203, 12),
        ("ADT^A01", "2.9", 203, 12),
        ("ADT^A01", "", 203, 12),
    ],
)
def test_unsupported_messages(msh9: str, version: str, code: int, field: int) -> None:
    text = f"MSH|^~\\&|X|Y|Z|W|20240301||{msh9}|U1|P|{version}\nPID|1||1^^^H^MR||A^B\n"
    with pytest.raises(UnsupportedMessage) as caught:
        mapped(text)
    err = caught.value.error
    assert (err.code, err.segment, err.sequence, err.field) == (code, "MSH", 1, field)


@pytest.mark.parametrize("order", ["²", "1" * 5000, "2147483648", "-1"])
def test_a_birth_order_that_is_no_fhir_integer_is_a_warning(order: str) -> None:
    """PID-25 "²" passed str.isdigit() and int() refused it; 5,000 digits int() refuses too:
    the mapping failed (AE 207, an internal error). It is the field's data type error."""
    message = (
        "MSH|^~\\&|A|B|C|D|20240101120000||ADT^A01^ADT_A01|C1|P|2.5.1\r"
        "EVN|A01|20240101120000\r"
        f"PID|1||X1^^^FAC^MR||Doe^Jane||19700101|F|||||555^PRN^PH^^^^^^^^^^^^^^^^²"
        f"|||||||||||Y|{order}\r"
        "PV1|1|I\r"
    )
    result = mapped(message)
    res = only(result, "Patient").resource
    assert "multipleBirthInteger" not in res and res["multipleBirthBoolean"] is True
    assert [unmarked(t).get("rank") for t in res["telecom"]] == [None]  # XTN-18 "²" too
    warnings = [(w.code, w.segment, w.field) for w in result.warnings]
    assert (102, "PID", 25) in warnings
