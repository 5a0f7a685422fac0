"""The shared HL7 v2 corpus (../shared/hl7v2, read in place) through map_message.

For every ADT and ORU sample: mapping succeeds, every resource validates, and the key facts
are what the file says (written down below from reading each file: patient identifier,
name, encounter status, observation values). Two ORU samples have OBX rows without OBX-3
(a required field): they must be refused with the exact location. The other message types
must be refused as unsupported. Skipped when the corpus is absent.
"""

from __future__ import annotations

import os
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from hl7_adapters.er7 import Message, parse_messages
from hl7_adapters.mapping import MappingError, MappingResult, UnsupportedMessage, map_message
from hl7_adapters.mapping.sources import unmarked
from tests.test_hl7_mapping_adt import check, of_type, only

# ../shared next to the checkout; MEDISENTINEL_HL7_CORPUS names it for a checkout elsewhere
# (a worktree).
CORPUS = Path(
    os.environ.get("MEDISENTINEL_HL7_CORPUS")
    or Path(__file__).resolve().parents[2] / "shared" / "hl7v2"
)
pytestmark = pytest.mark.skipif(
    not CORPUS.is_dir(), reason=f"shared HL7 v2 corpus not found at {CORPUS} (../shared absent)"
)
GHH = "identifier=urn:medisentinel:hl7v2:aa:test1|PATID1234"  # files 01, 05, 07, 10, 11, 12


def messages(name: str) -> list[Message]:
    return parse_messages((CORPUS / name).read_bytes())


def mapped(name: str) -> MappingResult:
    (msg,) = messages(name)
    return check(map_message(msg))


def value(resource: dict[str, Any]) -> Any:
    """The observation value in a comparable form (quantities as their number)."""
    keys = [k for k in resource if k.startswith("value")]
    if not keys:
        return None
    found = resource[keys[0]]
    return found["value"] if isinstance(found, dict) and "value" in found else found


# (file, patient match, family, first given, encounter statuses)
ADT = [
    ("01_ADT_A01.hl7", GHH, "EVERYMAN", "ADAM", ["in-progress"]),
    (
        "02_ADT_A01.hl7",
        "identifier=urn:medisentinel:hl7v2:aa:1|10006579",
        "DUCK",
        "DONALD",
        ["in-progress"],
    ),
    (
        "03_ADT_A01.hl7",
        "identifier=urn:medisentinel:hl7v2:aa:MSH_MRN|2148790",
        "RUFUSS",
        "MELLODIAL",
        ["in-progress"],
    ),
    (
        "04_ADT_A01.hl7",
        "identifier=urn:oid:1.2.3.4.5|1032702",
        "Everywoman",
        "Eve",
        ["in-progress"],
    ),
    ("05_ADT_A03.hl7", GHH, "EVERYMAN", "ADAM", ["finished"]),
    (
        "06_ADT_A03.hl7",
        "identifier=urn:medisentinel:hl7v2:aa:PK|5520255",
        "ZZZ",
        "ZZZ",
        ["finished"],
    ),
    ("07_ADT_A04.hl7", GHH, "EVERYMAN", "ADAM", ["planned"]),
    ("08_ADT_A04.hl7", "identifier=|MRN12345", "Doe", "Jane", ["planned"]),
    ("10_ADT_A08.hl7", GHH, "EVERYMAN", "ADAM", ["finished"]),  # PV1-45 is valued
    ("11_ADT_A28.hl7", GHH, "EVERYMAN", "ADAM", ["finished"]),
    ("12_ADT_A31.hl7", GHH, "EVERYMAN", "ADAM", ["finished"]),
    ("24_ADT_A01_hapi_doc.hl7", "identifier=|2216506", "Duck", "Donald", ["in-progress"]),
]


@pytest.mark.parametrize(("name", "match", "family", "given", "statuses"), ADT)
def test_adt_samples(name: str, match: str, family: str, given: str, statuses: list[str]) -> None:
    result = mapped(name)
    patient = only(result, "Patient")
    assert (patient.mode, patient.match, result.patient_match) == ("upsert", match, match)
    first_name = patient.resource["name"][0]
    assert (first_name["family"], first_name["given"][0]) == (family, given)
    assert [p.resource["status"] for p in of_type(result, "Encounter")] == statuses
    for planned in of_type(result, "Encounter"):
        assert planned.resource["subject"] == {"reference": patient.full_url}


def test_adt_01_details() -> None:
    result = mapped("01_ADT_A01.hl7")
    patient = only(result, "Patient").resource
    assert (patient["gender"], patient["birthDate"]) == ("male", "1988-08-18")
    assert [i["value"] for i in patient["identifier"]] == [
        "1234567",  # PID-2
        "PATID1234",  # PID-3 (two repetitions)
        "123456789",
        "PATID567",  # PID-4
        "PSSN123121234",  # PID-19
        "DLN-123",  # PID-20, driver's licence
    ]
    encounter = only(result, "Encounter")
    assert encounter.match == "identifier=urn:medisentinel:hl7v2:aa:AccMng|40007716"
    (allergy,) = of_type(result, "AllergyIntolerance")
    assert allergy.resource["code"]["coding"][0]["display"] == "PENICILLIN"
    mother, relative = of_type(result, "RelatedPerson")  # the PID's, then the NK1's
    assert relative.resource["name"][0]["family"] == "Evan"
    # PID-21 (mother's identifier): a RelatedPerson of the patient (IG CX[RelatedPerson-Mother])
    assert mother.resource["relationship"][0]["coding"][0]["code"] == "MTH"
    assert [i["value"] for i in mother.resource["identifier"][1:]] == ["1212121"]
    # PID-35/36 (species, breed: patient-animal) and PID-39 (tribal citizenship)
    extensions = patient["extension"]
    [animal] = [e for e in extensions if e["url"].endswith("/patient-animal")]
    kinds = [
        (x["url"], x["valueCodeableConcept"]["coding"][0]["display"]) for x in animal["extension"]
    ]
    assert kinds == [("species", "Goat"), ("breed", "Beagle")]
    citizenships = [e for e in extensions if e["url"].endswith("/patient-citizenship")]
    codes = [e["extension"][0]["valueCodeableConcept"]["coding"][0]["code"] for e in citizenships]
    assert codes == ["US", "CA"]  # PID-26, then PID-39


def test_adt_04_ig_test_message() -> None:
    result = mapped("04_ADT_A01.hl7")
    patient = only(result, "Patient").resource
    assert patient["identifier"][1]["system"] == "urn:oid:1.3.4.7"  # the driver's licence
    home = {"system": "phone", "value": "+1 555 555-8473", "use": "home"}
    assert unmarked(patient["telecom"][0]) == home
    (allergy,) = of_type(result, "AllergyIntolerance")
    assert allergy.resource["code"] == {"text": "Timothy Grass"}
    assert allergy.resource["category"] == ["environment"]  # LA pollen
    race, ethnicity, height = of_type(result, "Observation")  # PID-10, PID-22, then the OBX
    assert height.resource["code"]["coding"][0]["code"] == "8302-2"  # IG ADT_A01: OBX
    assert height.resource["valueQuantity"]["value"] == 190
    assert [c["valueCodeableConcept"]["coding"][0]["code"] for c in race.resource["component"]] == [
        "1002-5",
        "2106-3",
    ]
    assert ethnicity.resource["valueCodeableConcept"]["coding"][0]["code"] == "N"
    extensions = {e["url"].rsplit("/", 1)[1]: e for e in patient["extension"]}
    assert extensions["patient-birthPlace"]["valueAddress"] == {"text": "Indianapolis Indiana"}
    national, tribal = [
        e["extension"][0]["valueCodeableConcept"]["coding"][0]
        for e in patient["extension"]
        if e["url"].endswith("/patient-citizenship")
    ]  # PID-26, then PID-39 (tribal citizenship, IG PID[Patient])
    assert national["system"] == "http://terminology.hl7.org/CodeSystem/v2-0399"
    assert (tribal["code"], tribal["display"]) == ("364", "Birch Creek Tribe")


def test_adt_09_batch() -> None:
    msgs = messages("09_ADT_A04_batch.hl7")
    assert len(msgs) == 2
    for msg in msgs:
        result = check(map_message(msg))
        patient = only(result, "Patient")
        assert patient.match == "identifier=urn:medisentinel:hl7v2:aa:100|0000112234"
        assert patient.resource["name"][0]["family"] == "XXXXXXXXXX"


@pytest.mark.parametrize(
    ("name", "pairs"),
    [
        ("13_ADT_A40.hl7", [("12345", "56789")]),
        ("14_ADT_A40.hl7", [("12345", "56789"), ("145", "569")]),
    ],
)
def test_a40_samples(name: str, pairs: list[tuple[str, str]]) -> None:
    result = mapped(name)
    bcbs = "identifier=urn:medisentinel:hl7v2:aa:BCBS|"
    assert [(m.survivor, m.retired) for m in result.merges] == [
        (bcbs + keep, bcbs + gone) for keep, gone in pairs
    ]
    assert len(of_type(result, "Patient")) == len(pairs)


# (file, patient match, family, observation values in order, DiagnosticReport count)
ORU = [
    (
        "16_ORU_R01_lab.hl7",
        "identifier=urn:medisentinel:hl7v2:aa:1|10006579",
        "DUCK",
        [None, Decimal("4.06"), None, Decimal("40.1"), 221, 72, 2, 20, 6, 0],
        2,
    ),
    ("18_ORU_R01_lab.hl7", "identifier=|555-44-4444", "EVERYWOMAN", [182, None], 1),
    (
        "19_ORU_R01_lab.hl7",
        "identifier=urn:medisentinel:hl7v2:aa:OrdOrg|1032702",
        "Everywoman",
        [Decimal("3.9"), Decimal("0.59"), Decimal("0.10")],
        1,
    ),
    (
        "20_ORU_R01_rad_quirk.hl7",
        "identifier=|N00803",
        "RADIOLOGY",
        [
            "This is a test on 05/02/94.",
            "This is a test for the CRR.",
            "This is a test result to generate multiple obr's to check the cost",
            "display for multiple exams.",
            "APPROVING MD:",
        ],
        3,
    ),
    (
        "21_ORU_R01_pcd01.hl7",
        "identifier=urn:medisentinel:hl7v2:aa:Imaginary%2520Hospital|789567",
        "Doe",
        [120, 80, 100, None],
        1,
    ),
    (
        "22_ORU_R01_pcd01.hl7",
        "identifier=urn:medisentinel:hl7v2:aa:A|AB60001",
        "BROOKS",
        [60, 0, 92, 120, 80, 60, 14, 25, 10],
        1,
    ),
    (
        "23_ORU_R01_pcd01.hl7",
        "identifier=urn:oid:1.3.4.565|111222333444",
        "Doe",
        [80, 140, 70, 100, None, 120, 80, 100, None],
        2,
    ),
]


@pytest.mark.parametrize(("name", "match", "family", "values", "reports"), ORU)
def test_oru_samples(name: str, match: str, family: str, values: list[Any], reports: int) -> None:
    result = mapped(name)
    patient = only(result, "Patient")
    assert (patient.mode, patient.match) == ("ensure", match)
    assert patient.resource["name"][0]["family"] == family
    observations = of_type(result, "Observation")
    assert [value(p.resource) for p in observations] == values
    assert len(of_type(result, "DiagnosticReport")) == reports
    for planned in observations:
        assert planned.resource["subject"] == {"reference": patient.full_url}


def test_oru_17_nist_cbc() -> None:
    result = mapped("17_ORU_R01_lab.hl7")
    observations = of_type(result, "Observation")
    assert len(observations) == 28
    first = observations[0].resource
    assert first["valueQuantity"] == {
        "value": Decimal("4.41"),
        "unit": "million per microliter",
        "system": "http://unitsofmeasure.org",
        "code": "10*6/uL",
    }
    assert first["referenceRange"][0]["low"]["value"] == Decimal("4.3")  # "4.3 to 6.2"
    anisocytosis = observations[19].resource
    assert anisocytosis["valueCodeableConcept"]["coding"][0]["code"] == "260348001"
    assert observations[25].resource["valueString"] == "Many spherocytes present."
    report = only(result, "DiagnosticReport")
    assert report.resource["status"] == "final"
    assert len(report.resource["result"]) == 28


def test_oru_18_warns_about_bad_date_and_type() -> None:
    result = mapped("18_ORU_R01_lab.hl7")
    found = {(w.code, w.segment, w.field) for w in result.warnings}
    assert (102, "PID", 7) in found  # 196203520
    assert (103, "OBX", 2) in found  # FN is no value type
    assert "birthDate" not in only(result, "Patient").resource


def test_pcd_21_device_and_tree() -> None:
    result = mapped("21_ORU_R01_pcd01.hl7")
    (device,) = of_type(result, "Device")
    assert device.resource["identifier"][0]["value"] == "0123456789ABCDEF"
    assert device.resource["type"]["coding"][0]["display"] == "MDC_DEV_SPEC_PROFILE_BP"
    nibp = of_type(result, "Observation")[-1]
    assert nibp.resource["code"]["coding"][0]["display"] == "MDC_PRESS_BLD_NONINV"
    assert len(nibp.resource["hasMember"]) == 3


@pytest.mark.parametrize(
    ("name", "sequences"),
    [("15_ORU_R01_lab.hl7", [2]), ("25_ORU_R01_textreport.hl7", [1, 2, 3])],
)
def test_oru_without_observation_identifier_is_refused(name: str, sequences: list[int]) -> None:
    (msg,) = messages(name)
    with pytest.raises(MappingError) as caught:
        map_message(msg)
    assert [(e.code, e.segment, e.sequence, e.field) for e in caught.value.errors] == [
        (101, "OBX", seq, 3) for seq in sequences
    ]


UNSUPPORTED = [
    "26_ORM_O01.hl7",
    "27_ORM_O01.hl7",
    "28_ORM_O01_quirk.hl7",
    "29_MDM_T02.hl7",
    "30_MDM_T02.hl7",
    "31_VXU_V04.hl7",
    "32_VXU_V04.hl7",
    "33_VXU_V04.hl7",
    "34_VXU_V04.hl7",
    "35_OLIS_ERP_Z99_quirk.hl7",
]


@pytest.mark.parametrize("name", UNSUPPORTED)
def test_unsupported_samples(name: str) -> None:
    (msg,) = messages(name)
    with pytest.raises(UnsupportedMessage) as caught:
        map_message(msg)
    err = caught.value.error
    assert (err.code, err.segment, err.sequence, err.field) == (200, "MSH", 1, 9)


def test_every_sample_is_covered() -> None:
    """A new corpus file must get an expectation here rather than pass unnoticed."""
    covered = {row[0] for row in ADT} | {row[0] for row in ORU} | set(UNSUPPORTED)
    covered |= {
        "09_ADT_A04_batch.hl7",
        "13_ADT_A40.hl7",
        "14_ADT_A40.hl7",
        "15_ORU_R01_lab.hl7",
        "17_ORU_R01_lab.hl7",
        "25_ORU_R01_textreport.hl7",
    }
    assert {p.name for p in CORPUS.glob("*.hl7")} == covered
