"""HL7 v2 ORU^R01 (lab and IHE PCD-01) -> FHIR mapping, field by field on our own fixtures;
also the identifier-system and match-query rules both ADT and ORU rely on.

oru_r01_values.hl7 carries one OBX per value type (NM, SN as quantity/ratio/range/string, ST,
TX, FT, CWE, CE, DT, TS, TM, NR, ID, repeated NM, ED, an unknown type), a cancelled result,
an equipment identifier and a second OBR without OBR-25; oru_r01_pcd01.hl7 is a PCD-01
message with an MDS/VMD/channel/metric tree. Every planned resource is validated.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import pytest

from app.fhir.search.criteria import split_token
from app.fhir.search.params import SearchParams
from hl7_adapters.er7 import Message, parse_message
from hl7_adapters.mapping import MappingError, MappingResult, Planned, map_message
from hl7_adapters.mapping.identifiers import hd_system, identifier_match
from tests.test_hl7_mapping_adt import by_url, check, mapped, of_type, only

MAPPING = Path(__file__).parent / "hl7_fixtures" / "mapping"
LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
MDC = "urn:iso:std:iso:11073:10101"
EUI64 = "urn:oid:1.2.840.10004.1.1.1.0.0.1.0.0.1.2680"


def raw(name: str) -> bytes:
    return (MAPPING / name).read_bytes()


def load(name: str) -> Message:
    return parse_message(raw(name))


@pytest.fixture(scope="module")
def values() -> MappingResult:
    return check(map_message(load("oru_r01_values.hl7")))


def obs(result: MappingResult, code: str, sub_id: str = "") -> Planned:
    """The Observation whose derived key ends in '|<code>|<sub id>'."""
    found = [
        p
        for p in of_type(result, "Observation")
        if p.resource["identifier"][0]["value"].endswith(f"|{code}|{sub_id}")
    ]
    assert len(found) == 1, f"{code}: {len(found)} observations"
    return found[0]


def value_of(resource: dict[str, Any]) -> tuple[str, Any]:
    (key,) = [k for k in resource if k.startswith("value")]
    return key, resource[key]


# --------------------------------------------------------------------------- lab values


def test_nm_value_units_range_flags_performer_note(values: MappingResult) -> None:
    potassium = obs(values, "2823-3")
    res = potassium.resource
    assert potassium.mode == "upsert"
    order = "urn:oid:2.16.840.1.113883.19.4.6|FL200"
    assert res["identifier"] == [
        {"system": "urn:medisentinel:hl7v2:obx", "value": f"{order}|{LOINC}|2823-3|"}
    ]
    assert res["code"] == {"coding": [{"system": LOINC, "code": "2823-3", "display": "Potassium"}]}
    assert res["status"] == "final"
    quantity = res["valueQuantity"]
    assert quantity == {
        "value": Decimal("4.10"),
        "unit": "millimole per liter",
        "system": UCUM,
        "code": "mmol/L",
    }
    assert str(quantity["value"]) == "4.10"  # the sent precision is kept
    assert res["referenceRange"] == [
        {
            "text": "3.5-5.0",
            "low": {
                "value": Decimal("3.5"),
                "unit": "millimole per liter",
                "system": UCUM,
                "code": "mmol/L",
            },
            "high": {
                "value": Decimal("5.0"),
                "unit": "millimole per liter",
                "system": UCUM,
                "code": "mmol/L",
            },
        }
    ]
    assert res["interpretation"] == [
        {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation",
                    "code": "N",
                    "display": "Normal",
                }
            ]
        }
    ]
    assert res["effectiveDateTime"] == "2024-02-01T08:15:00+01:00"  # OBX-14
    assert res["note"] == [{"text": "Repeat confirmed\nsecond line"}]
    (performer,) = res["performer"]
    tech = by_url(values, performer["reference"])
    assert (tech.mode, tech.match) == ("ensure", "identifier=urn:oid:2.16.840.1.113883.19.4.6|1111")
    assert performer["display"] == "Tina Tech"
    patient = only(values, "Patient")
    encounter = only(values, "Encounter")
    assert res["subject"] == {"reference": patient.full_url}
    assert res["encounter"] == {"reference": encounter.full_url}


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (
            "2160-0",
            (
                "valueQuantity",
                {
                    "value": Decimal("0.5"),
                    "comparator": "<",
                    "unit": "mg/dL",
                    "system": UCUM,
                    "code": "mg/dL",
                },
            ),
        ),
        ("X-RATIO", ("valueRatio", {"numerator": {"value": 1}, "denominator": {"value": 128}})),
        (
            "X-RANGE",
            (
                "valueRange",
                {"low": {"value": 10, "unit": "mg"}, "high": {"value": 20, "unit": "mg"}},
            ),
        ),
        ("X-PLUS", ("valueString", "2 +")),
        ("8251-1", ("valueString", "Clear\nYellow & cloudy")),  # \.br\ and \T\ resolved
        ("X-TX", ("valueString", "line one\nline two")),  # repetitions are lines
        ("X-FT", ("valueString", "Bold text")),  # \H\ \N\ highlighting dropped
        (
            "5778-6",
            (
                "valueCodeableConcept",
                {"coding": [{"code": "YEL", "display": "Yellow"}], "text": "Pale yellow"},
            ),
        ),
        (
            "600-7",
            (
                "valueCodeableConcept",
                {
                    "coding": [
                        {
                            "system": "http://snomed.info/sct",
                            "code": "3092008",
                            "display": "Staphylococcus aureus",
                        }
                    ]
                },
            ),
        ),
        ("X-DT", ("valueDateTime", "2024-01-15")),
        ("X-TS", ("valueDateTime", "2024-01-15T10:30:00+01:00")),
        ("X-TM", ("valueTime", "10:30:00")),
        (
            "X-NR",
            ("valueRange", {"low": {"value": 1, "unit": "mg"}, "high": {"value": 5, "unit": "mg"}}),
        ),
        ("X-ID", ("valueCodeableConcept", {"coding": [{"code": "POS"}]})),
    ],
)
def test_value_types(values: MappingResult, code: str, expected: tuple[str, Any]) -> None:
    assert value_of(obs(values, code).resource) == expected


def test_statuses(values: MappingResult) -> None:
    assert obs(values, "X-FT").resource["status"] == "corrected"  # OBX-11 C
    assert obs(values, "600-7").resource["status"] == "preliminary"  # P
    sodium = obs(values, "2951-2").resource  # X: cancelled, no value
    assert sodium["status"] == "cancelled"
    assert sodium["dataAbsentReason"] == {
        "coding": [
            {
                "system": "http://terminology.hl7.org/CodeSystem/data-absent-reason",
                "code": "cannot-be-obtained",
            }
        ]
    }
    assert not any(k.startswith("value") for k in sodium)


def test_repetitions_become_components(values: MappingResult) -> None:
    res = obs(values, "8867-4", "1").resource
    assert not any(k.startswith("value") for k in res)
    assert [c["valueQuantity"]["value"] for c in res["component"]] == [60, 62]
    assert all(c["code"] == res["code"] for c in res["component"])


def test_unmapped_types_and_flags_are_warnings(values: MappingResult) -> None:
    assert not any(k.startswith("value") for k in obs(values, "X-ZZ").resource)
    found = {(w.code, w.segment, w.sequence, w.field, w.repetition) for w in values.warnings}
    assert found == {
        (103, "OBX", 17, 2, None),  # ZZ is not a value type at all
        (103, "OBX", 19, 8, 2),  # abnormal flag ZZZ (the H before it is kept)
    }
    assert all(w.severity == "W" for w in values.warnings)
    heart = obs(values, "8867-4", "2").resource
    assert [i["coding"][0]["code"] for i in heart["interpretation"]] == ["H"]


def test_equipment_identifier_is_a_device(values: MappingResult) -> None:
    heart = obs(values, "8867-4", "2").resource
    device = by_url(values, heart["device"]["reference"])
    assert (device.mode, device.match) == ("ensure", "identifier=urn:oid:1.2.3.99|EQ123")
    assert device.resource == {
        "resourceType": "Device",
        "identifier": [{"system": "urn:oid:1.2.3.99", "value": "EQ123"}],
    }


def test_diagnostic_reports(values: MappingResult) -> None:
    first, second = of_type(values, "DiagnosticReport")
    res = first.resource
    assert first.mode == "upsert"
    assert first.match == "identifier=urn:oid:2.16.840.1.113883.19.4.6|FL200"
    placer, filler = res["identifier"]
    assert (placer["value"], placer["system"], placer["type"]["coding"][0]["code"]) == (
        "PL100",
        "urn:medisentinel:hl7v2:aa:ORDERS",
        "PLAC",
    )
    assert (filler["value"], filler["type"]["coding"][0]["code"]) == ("FL200", "FILL")
    assert res["status"] == "final"  # OBR-25 F
    assert res["code"]["coding"][0]["code"] == "24323-8"
    assert res["category"] == [
        {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0074", "code": "CH"}]}
    ]
    assert res["effectiveDateTime"] == "2024-02-01T08:00:00+01:00"
    assert res["issued"] == "2024-02-01T09:30:00+01:00"
    observations = of_type(values, "Observation")
    first_order = [p for p in observations if "|FL200|" in p.resource["identifier"][0]["value"]]
    assert [r["reference"] for r in res["result"]] == [p.full_url for p in first_order]
    assert len(first_order) == 20
    # The second OBR sends no OBR-25: the status comes from its (preliminary) results.
    assert second.resource["status"] == "preliminary"
    assert len(second.resource["result"]) == 2
    # NTE after an OBR has no place in an R4 DiagnosticReport.
    assert "note" not in res


def test_same_code_twice_in_one_order_keeps_both(values: MappingResult) -> None:
    glucose = [
        p.resource["identifier"][0]["value"]
        for p in of_type(values, "Observation")
        if "|2345-7|" in p.resource["identifier"][0]["value"]
    ]
    order = "urn:oid:2.16.840.1.113883.19.4.6|FL201"
    assert glucose == [f"{order}|{LOINC}|2345-7|", f"{order}|{LOINC}|2345-7|#2"]


def test_patient_is_ensured_with_the_adt_match(values: MappingResult) -> None:
    patient = only(values, "Patient")
    adt = mapped(raw("adt_a01_v251.hl7"))
    assert patient.mode == "ensure"
    assert patient.match == only(adt, "Patient").match == values.patient_match
    assert patient.resource["name"][0]["family"] == "O^Brien&Smith"
    encounter = only(values, "Encounter")
    assert (encounter.mode, encounter.match) == ("ensure", "identifier=urn:oid:1.2.3.4|V0002")
    assert values.event_time == "2024-02-01T10:00:00+01:00"  # MSH-7 (no EVN in an ORU)


def test_corrected_result_updates_the_same_observation() -> None:
    original = map_message(load("oru_r01_values.hl7"))
    corrected_bytes = raw("oru_r01_values.hl7").replace(b"|LAB0001|", b"|LAB0002|")
    corrected_bytes = corrected_bytes.replace(
        b"|N|||F|||20240201081500+0100", b"|N|||C|||20240201081500+0100"
    )
    corrected = check(map_message(parse_message(corrected_bytes)))
    before, after = obs(original, "2823-3"), obs(corrected, "2823-3")
    assert before.match == after.match
    assert (before.resource["status"], after.resource["status"]) == ("final", "corrected")


# --------------------------------------------------------------------------- errors


def oru(*obx: str, pid: str = "PID|1||7^^^H&1.2.3&ISO^MR||Lab^Pat\n") -> str:
    return (
        "MSH|^~\\&|LAB|L|MEDISENTINEL|HUB|20240201100000+0100||ORU^R01|E1|P|2.5.1\n"
        + pid
        + "OBR|1|P1|F1|123^Panel^L|||20240201080000+0100||||||||||||||||||F\n"
        + "".join(line + "\n" for line in obx)
    )


def errors(text: str) -> list[tuple[int, str, int | None, int | None, int | None]]:
    with pytest.raises(MappingError) as caught:
        mapped(text)
    return [(e.code, e.segment, e.sequence, e.field, e.component) for e in caught.value.errors]


def test_content_errors() -> None:
    assert errors(oru("OBX|1|NM|1^A^L||12a||||||F")) == [(102, "OBX", 1, 5, 1)]
    assert errors(oru("OBX|1|NM|1^A^L||1||||||F", "OBX|2|ST|||text||||||F")) == [
        (101, "OBX", 2, 3, 1)
    ]
    assert errors(oru("OBX|1|NM|1^A^L||1||||||F", pid="")) == [(100, "PID", None, None, None)]
    no_code = oru("OBX|1|NM|1^A^L||1||||||F").replace("|123^Panel^L|", "||")
    assert errors(no_code) == [(101, "OBR", 1, 4, None)]


def test_lenient_readings_are_warnings() -> None:
    result = mapped(
        oru(
            "OBX|1||1^A^L||free text||||||",
            "OBX|2|TM|2^B^L||2561||||||F",
            "OBX|3|DT|3^C^L||20240230||||||F",
            "OBX|4|SN|4^D^L||>=5||||||F",
        )
    )
    first, second, third, fourth = of_type(result, "Observation")
    assert first.resource["valueString"] == "free text"  # no OBX-2: read as ST
    assert first.resource["status"] == "unknown"  # no OBX-11
    assert "valueTime" not in second.resource and "valueDateTime" not in third.resource
    assert fourth.resource["valueQuantity"] == {"value": 5, "comparator": ">="}  # unsplit SN
    assert {(w.code, w.sequence, w.field) for w in result.warnings} == {
        (101, 1, 5),
        (101, 1, 11),
        (102, 2, 5),
        (102, 3, 5),
    }


ATTACHMENT = "http://hl7.org/fhir/5.0/StructureDefinition/extension-Observation.valueAttachment"


def test_encoded_data_and_reference_pointers_become_attachments(values: MappingResult) -> None:
    """IG OBX map: OBX-2 ED (and RP) -> the R5 valueAttachment extension (R4 has no
    Observation.valueAttachment); ED.5 base64 (Hex and A converted), ED.2/ED.3 contentType."""
    [sent_in_fixture] = obs(values, "X-ED").resource["extension"]
    # att-1: data needs a contentType; data of no known type is application/octet-stream
    octets = {"contentType": "application/octet-stream", "data": "SGVsbG8="}
    assert sent_in_fixture == {"url": ATTACHMENT, "valueAttachment": octets}
    result = mapped(
        oru(
            "OBX|1|ED|11502-2^Report^LN||^application^pdf^Base64^JVBERi0x||||||F",
            "OBX|2|ED|11502-2^Report^LN||^AP^PDF^Hex^48656C6C6F||||||F",
            "OBX|3|ED|11502-2^Report^LN||^TEXT^^A^Hello||||||F",
            "OBX|4|RP|18748-4^Image^LN||http://pacs/x/1^PACS^image^jpeg||||||F",
            "OBX|5|ED|11502-2^Report^LN||^AP^PDF^Base64^not*base64||||||F",
        )
    )
    pdf, hexed, ascii_, pointer, broken = of_type(result, "Observation")
    assert pdf.resource["extension"] == [
        {
            "url": ATTACHMENT,
            "valueAttachment": {"contentType": "application/pdf", "data": "JVBERi0x"},
        }
    ]
    assert hexed.resource["extension"][0]["valueAttachment"] == {
        "contentType": "application/pdf",
        "data": "SGVsbG8=",
    }
    assert ascii_.resource["extension"][0]["valueAttachment"] == octets
    assert pointer.resource["extension"][0]["valueAttachment"] == {
        "contentType": "image/jpeg",
        "url": "http://pacs/x/1",
    }
    assert "extension" not in broken.resource
    assert {(w.code, w.sequence, w.field) for w in result.warnings} == {(102, 5, 5)}


@pytest.mark.parametrize(
    ("obx11", "report"),
    [("FC", "corrected"), ("FA", "amended"), ("CA", "amended"), ("FP", "partial")],
)
def test_report_status_from_mixed_results(obx11: str, report: str) -> None:
    """OBR-25 empty: the report's status from its results' (FHIR: amended covers corrected)."""
    text = oru(*(f"OBX|{i}|NM|{i}^T{i}^L||{i}||||||{s}" for i, s in enumerate(obx11, start=1)))
    text = text.replace("||||||F\n", "||||||\n", 1)  # OBR-25 empty
    assert only(mapped(text), "DiagnosticReport").resource["status"] == report


def test_date_ranges_are_periods() -> None:
    """IG OBX map: OBX-2 DR -> valuePeriod (DR[Period]); it was left out with a warning."""
    result = mapped(
        oru(
            "OBX|1|DR|X-DR^Range^L||20240101080000+0100^20240103+0100||||||F",
            "OBX|2|DR|X-DR2^Open range^L||20240105||||||F",
        )
    )
    closed, open_ended = of_type(result, "Observation")
    assert closed.resource["valuePeriod"] == {
        "start": "2024-01-01T08:00:00+01:00",
        "end": "2024-01-03",
    }
    assert open_ended.resource["valuePeriod"] == {"start": "2024-01-05"}
    assert not result.warnings


DATA_ABSENT = "http://hl7.org/fhir/StructureDefinition/data-absent-reason"
PERIOD_UNKNOWN = {"extension": [{"url": DATA_ABSENT, "valueCode": "unknown"}]}


def test_numeric_arrays_are_sampled_data() -> None:
    """IG OBX map: OBX-2 NA -> valueSampledData (NA[SampledData]); it was left out with a
    warning. One repetition is a vector (dimensions 1); several are the rows of a matrix, one
    per time point, written row after row; origin 0 in the OBX-6 units; period unknown."""
    result = mapped(
        oru(
            "OBX|1|NA|X-NA1^Vector^L||1^2.50^-3^+4|mV^millivolt^UCUM|||||F",
            "OBX|2|NA|X-NA2^Matrix^L||1^2~3^4~5^6|mm[Hg]^^UCUM|||||F",
            "OBX|3|NA|X-NA3^Ragged^L||1^2^3~4|mV|||||F",
        )
    )
    vector, matrix, ragged = (p.resource for p in of_type(result, "Observation"))
    assert vector["valueSampledData"] == {
        "origin": {"value": 0, "unit": "millivolt", "system": UCUM, "code": "mV"},
        "_period": PERIOD_UNKNOWN,
        "dimensions": 1,
        "data": "1 2.50 -3 4",
    }
    assert "component" not in matrix  # the repetitions are one array, not three values
    sampled = matrix["valueSampledData"]
    assert (sampled["dimensions"], sampled["data"]) == (2, "1 2 3 4 5 6")
    assert sampled["origin"] == {"value": 0, "unit": "mm[Hg]", "system": UCUM, "code": "mm[Hg]"}
    assert ragged["valueSampledData"]["data"] == "1 2 3 4 E E"
    assert ragged["valueSampledData"]["origin"] == {"value": 0, "unit": "mV"}
    assert [(w.code, w.sequence, w.field, w.repetition) for w in result.warnings] == [
        (102, 3, 5, 2)
    ]
    assert errors(oru("OBX|1|NA|X-NA^Bad^L||1^x^3|mV|||||F")) == [(102, "OBX", 1, 5, 2)]


def test_specimens_are_mapped_and_referenced() -> None:
    """IG ORU_R01 SPECIMEN group: SPM -> Specimen of the patient, in DiagnosticReport.specimen,
    and Observation.specimen when the order has one specimen."""
    result = mapped(
        oru(
            "OBX|1|NM|2823-3^Potassium^LN||4.1|mmol/L^^UCUM|||||F",
            "SPM|1|P77&LAB&1.2.9&ISO^F88&LAB&1.2.9&ISO||BLD^Blood^HL70487|||VENIP^Venipuncture^HL70488"
            "|LACF^Left antecubital fossa^HL70550||||5^mL&milliliter&UCUM||Hemolyzed|||"
            "20240201075000+0100^20240201075500+0100|20240201081000+0100||Y",
        )
    )
    specimen = only(result, "Specimen")
    res = specimen.resource
    assert specimen.mode == "upsert" and specimen.match == "identifier=urn:oid:1.2.9|F88"
    assert [(i["type"]["coding"][0]["code"], i["value"]) for i in res["identifier"]] == [
        ("FILL", "F88"),
        ("PLAC", "P77"),
    ]
    assert res["type"]["coding"][0] == {
        "system": "http://terminology.hl7.org/CodeSystem/v2-0487",
        "code": "BLD",
        "display": "Blood",
    }
    assert res["status"] == "available"
    assert res["subject"] == {"reference": only(result, "Patient").full_url}
    assert res["receivedTime"] == "2024-02-01T08:10:00+01:00"
    assert res["note"] == [{"text": "Hemolyzed"}]
    collection = res["collection"]
    assert collection["collectedPeriod"] == {
        "start": "2024-02-01T07:50:00+01:00",
        "end": "2024-02-01T07:55:00+01:00",
    }
    assert collection["method"]["coding"][0]["code"] == "VENIP"
    assert collection["bodySite"]["coding"][0]["code"] == "LACF"
    assert collection["quantity"] == {"value": 5, "unit": "milliliter"}
    report = only(result, "DiagnosticReport").resource
    assert report["specimen"] == [{"reference": specimen.full_url}]
    (potassium,) = of_type(result, "Observation")
    assert potassium.resource["specimen"] == {"reference": specimen.full_url}


def test_specimens_without_an_authority_are_found_under_their_order() -> None:
    result = mapped(
        oru(
            "OBX|1|NM|2823-3^Potassium^LN||4.1|mmol/L^^UCUM|||||F",
            "SPM|1|SpecimenID||BLD",
            "SPM|2|||SER",
        )
    )
    first_spm, second_spm = of_type(result, "Specimen")
    assert first_spm.match == "identifier=urn:medisentinel:hl7v2:spm|%5C|F1%5C|SpecimenID"
    assert first_spm.resource["identifier"][1]["value"] == "SpecimenID"  # kept as sent
    assert second_spm.resource["identifier"] == [
        {"system": "urn:medisentinel:hl7v2:spm", "value": "|F1|2"}
    ]
    assert len(only(result, "DiagnosticReport").resource["specimen"]) == 2
    (potassium,) = of_type(result, "Observation")
    assert "specimen" not in potassium.resource  # two specimens: Observation holds one


def test_obx_before_any_obr_is_a_patient_observation() -> None:
    text = oru().replace("OBR|1", "OBX|1|NM|29463-7^Weight^LN||80|kg^^UCUM|||||F\nOBR|1")
    result = mapped(text)
    (weight,) = of_type(result, "Observation")
    assert weight.resource["identifier"][0]["value"] == (
        f"patient:urn:oid:1.2.3|7|{LOINC}|29463-7|"
    )
    report = only(result, "DiagnosticReport")
    assert "result" not in report.resource  # the weight belongs to no order


# --------------------------------------------------------------------------- IHE PCD-01


@pytest.fixture(scope="module")
def pcd() -> MappingResult:
    return check(map_message(load("oru_r01_pcd01.hl7")))


def test_pcd_devices(pcd: MappingResult) -> None:
    monitor, sensor = of_type(pcd, "Device")
    assert (monitor.mode, monitor.match) == ("ensure", f"identifier={EUI64}|AABBCCDDEEFF0011")
    assert monitor.resource["identifier"] == [{"system": EUI64, "value": "AABBCCDDEEFF0011"}]
    assert monitor.resource["type"] == {
        "coding": [
            {"system": MDC, "code": "69837", "display": "MDC_DEV_MON_PHYSIO_MULTI_PARAM_MDS"}
        ]
    }
    assert sensor.match == f"identifier={EUI64}|1122334455667788"
    assert "type" not in sensor.resource  # named by a metric row, not an MDS row


def test_pcd_containment_tree(pcd: MappingResult) -> None:
    monitor, sensor = of_type(pcd, "Device")
    observations = of_type(pcd, "Observation")
    codes = [p.resource["code"]["coding"][0]["code"] for p in observations]
    # MDS (1) and VMD (1.1) rows describe equipment: no Observation. Members come first.
    assert codes == ["150021", "150022", "147842", "150020"]
    systolic, diastolic, heart, nibp = observations
    assert nibp.resource["hasMember"] == [
        {"reference": systolic.full_url},
        {"reference": diastolic.full_url},
    ]
    assert "value" not in str(list(nibp.resource))
    assert nibp.resource["effectiveDateTime"] == "2024-03-01T11:58:00+00:00"  # its OBX-14
    for metric in (systolic, diastolic, nibp):  # inherited from the MDS row
        assert metric.resource["device"] == {"reference": monitor.full_url}
    assert heart.resource["device"] == {"reference": sensor.full_url}  # its own OBX-18
    assert systolic.resource["valueQuantity"] == {
        "value": 120,
        "unit": "MDC_DIM_MMHG",
        "system": MDC,
        "code": "266016",
    }
    assert systolic.resource["referenceRange"][0]["low"]["value"] == 90
    assert systolic.resource["status"] == "preliminary"  # OBX-11 R
    assert systolic.resource["effectiveDateTime"] == "2024-03-01T11:59:00+00:00"  # OBR-7
    assert heart.resource["method"] == {
        "coding": [{"system": MDC, "code": "AMEAS", "display": "auto-measurement"}]
    }
    report = only(pcd, "DiagnosticReport")
    assert [r["reference"] for r in report.resource["result"]] == [nibp.full_url, heart.full_url]
    assert report.resource["status"] == "preliminary"  # no OBR-25: from the results
    assert report.match == "identifier=urn:medisentinel:hl7v2:aa:GATEWAY|F900"
    assert pcd.warnings == []


# ---------------------------------------------------------------- identifiers (ADT and ORU)


@pytest.mark.parametrize(
    ("hd", "system"),
    [
        (("GENHOSP", "1.2.3.4", "ISO"), "urn:oid:1.2.3.4"),
        (("", "2.16.840.1.113883.19", ""), "urn:oid:2.16.840.1.113883.19"),
        (
            ("X", "426D2726-51FC-89FE-A946-8596E80A80EB", "GUID"),
            "urn:uuid:426d2726-51fc-89fe-a946-8596e80a80eb",
        ),
        (("X", "https://ids.example.org/mrn", "URI"), "https://ids.example.org/mrn"),
        (("test1", "2.16.1", "HCD"), "urn:medisentinel:hl7v2:aa:test1"),  # not ISO: namespace
        (("MI", "1.2.5.2.", "ISO"), "urn:medisentinel:hl7v2:aa:MI"),  # not an OID
        (("Imaginary Hospital", "", ""), "urn:medisentinel:hl7v2:aa:Imaginary%20Hospital"),
        (("", "ACDE48234567ABCD", "EUI-64"), "urn:medisentinel:hl7v2:eui-64:ACDE48234567ABCD"),
        (("", "", ""), None),
    ],
)
def test_assigning_authority_to_system(hd: tuple[str, str, str], system: str | None) -> None:
    assert hd_system(*hd) == system


def test_match_queries_survive_the_search_parser() -> None:
    """The applier hands matches to the conditional-search door: values must come back."""
    system, value = "urn:medisentinel:hl7v2:aa:NIST%20MPI", "a|b,c$d\\e f+g"
    query = identifier_match(system, value)
    ((key, token),) = parse_qsl(query)
    assert key == "identifier"
    assert split_token(token.replace("\\,", ",")) == [system, value]
    (criterion,) = SearchParams.parse_query(query, "Patient", strict=True).criteria
    assert criterion.name == "identifier"
    assert identifier_match(None, "123") == "identifier=|123"


# --------------------------------------------------------------------------- IG field review


def test_note_author_and_time() -> None:
    """IG NTE[Observation]: NTE-5 (XCN) -> note.authorReference(Practitioner), NTE-6 -> time;
    a name without an id is authorString; an NTE-3 of only "" is no note."""
    result = mapped(
        oru(
            "OBX|1|NM|1^A^L||1||||||F",
            "NTE|1||Checked twice||8945^Gonzalez^Maria^^^^^^LAB&1.2.3&ISO|202406011810+0100",
            "NTE|2||Called ward||^Nurse^Nora",
            'NTE|3||""',
        )
    )
    res = only(result, "Observation").resource
    checked, called = res["note"]
    author = by_url(result, checked["authorReference"]["reference"])
    assert (author.resource_type, author.mode, author.match) == (
        "Practitioner",
        "ensure",
        "identifier=urn:oid:1.2.3|8945",
    )
    assert author.resource["name"] == [{"family": "Gonzalez", "given": ["Maria"]}]
    assert checked == {
        "text": "Checked twice",
        "authorReference": {"reference": author.full_url, "display": "Maria Gonzalez"},
        "time": "2024-06-01T18:10:00+01:00",
    }
    assert called == {"text": "Called ward", "authorString": "Nora Nurse"}


def test_reference_range_with_one_bound() -> None:
    """IG OBX map: OBX-7 -> referenceRange.text, with low/high "if sufficiently parseable";
    '<0.10' (sample 19 of the shared corpus) and '>10' are one bound each."""
    result = mapped(
        oru(
            "OBX|1|NM|1^A^L||0.05|kU/L^^UCUM|<0.10||||F",
            "OBX|2|NM|2^B^L||12|mg|> 10||||F",
            "OBX|3|NM|3^C^L||12|mg|<=-1.5||||F",
            "OBX|4|NM|4^D^L||12|mg|>=2||||F",
            "OBX|5|NM|5^E^L||12|mg|negative||||F",
        )
    )
    ranges = [o.resource["referenceRange"] for o in of_type(result, "Observation")]
    assert ranges == [
        [
            {
                "text": "<0.10",
                "high": {"value": Decimal("0.10"), "unit": "kU/L", "system": UCUM, "code": "kU/L"},
            }
        ],
        [{"text": "> 10", "low": {"value": 10, "unit": "mg"}}],
        [{"text": "<=-1.5", "high": {"value": Decimal("-1.5"), "unit": "mg"}}],
        [{"text": ">=2", "low": {"value": 2, "unit": "mg"}}],
        [{"text": "negative"}],
    ]
    assert not result.warnings


def test_report_interpreter_technician_transcriptionist() -> None:
    """IG OBR[DiagnosticReport]: OBR-32 -> resultsInterpreter, OBR-34 -> performer (function
    SPRF), OBR-35 -> performer (TRANS), each NDL's person as XCN[Practitioner]. NDL.1 is a
    CNN in subcomponents; an XCN sent there instead (as many feeds do) is read as one."""
    obr = (
        "OBR|1|P1|F1|123^Panel^L|||20240201080000+0100||||||||||||||||||F|||||||"
        "444&Hippocrates&Howard&&&&MD&&LAB&1.2.3&ISO^20240201"
        "||&Cyto&Jane^20240201090000+0100~55&Tech&Tom&&&&&&LAB&1.2.3&ISO|202300^Baker^Mark"
    )
    result = mapped(
        oru("OBX|1|NM|1^A^L||1||||||F").replace(
            "OBR|1|P1|F1|123^Panel^L|||20240201080000+0100||||||||||||||||||F", obr
        )
    )
    report = only(result, "DiagnosticReport").resource
    (interpreter,) = report["resultsInterpreter"]
    howard = by_url(result, interpreter["reference"])
    assert (howard.mode, howard.match) == ("ensure", "identifier=urn:oid:1.2.3|444")
    assert howard.resource["name"] == [
        {"family": "Hippocrates", "given": ["Howard"], "suffix": ["MD"]}
    ]
    assert interpreter["display"] == "Howard Hippocrates MD"

    def function(code: str) -> list[dict[str, Any]]:
        coding = {"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"}
        return [
            {
                "url": "http://hl7.org/fhir/StructureDefinition/event-performerFunction",
                "valueCodeableConcept": {"coding": [{**coding, "code": code}]},
            }
        ]

    jane, tom, mark = report["performer"]
    assert jane == {"extension": function("SPRF"), "display": "Jane Cyto"}  # no id: by name
    assert tom["extension"] == function("SPRF")
    assert by_url(result, tom["reference"]).match == "identifier=urn:oid:1.2.3|55"
    assert mark["extension"] == function("TRANS")
    baker = by_url(result, mark["reference"])
    assert (baker.match, baker.resource["name"]) == (
        "identifier=|202300",  # no system: matched by the value alone
        [{"family": "Baker", "given": ["Mark"]}],
    )


def test_performing_organization() -> None:
    """IG OBX[Observation]: OBX-23 (XON) with OBX-24 (XAD) and OBX-15 (CWE[Organization]) ->
    one performer Organization, ensured by its first identifier; a name alone is a display.
    OBX-23 as in sample 17 of the shared corpus (XON.6 authority, XON.7 XX, XON.10 the id)."""
    lab = "Century Hospital^^^^^NIST-AA-1^XX^^^987|2070 Test Park^^Los Angeles^CA^90067^USA^B"
    result = mapped(
        oru(
            f"OBX|1|NM|1^A^L||1||||||F||||CLIA77^Central Lab^CLIA||||||||{lab}",
            "OBX|2|NM|2^B^L||2||||||F||||||||||||ABC Hospital",
            "OBX|3|NM|3^C^L||3||||||F||||CentralLab^Central Laboratory^HL70624",
            f"OBX|4|NM|4^D^L||4||||||F||||||||||||{lab}",
        )
    )
    first_obs, second, third, fourth = (o.resource for o in of_type(result, "Observation"))
    (century,) = first_obs["performer"]
    org = by_url(result, century["reference"])
    assert (org.mode, org.match) == ("ensure", "identifier=urn:medisentinel:hl7v2:aa:NIST-AA-1|987")
    xx = "http://terminology.hl7.org/CodeSystem/v2-0203"
    assert org.resource == {
        "resourceType": "Organization",
        "identifier": [
            {
                "type": {
                    "coding": [{"system": xx, "code": "XX", "display": "Organization identifier"}]
                },
                "system": "urn:medisentinel:hl7v2:aa:NIST-AA-1",
                "value": "987",
            },
            {"value": "CLIA77"},  # CWE.3 "CLIA" names no code system we know
        ],
        "name": "Century Hospital",
        "address": [
            {
                "use": "work",
                "line": ["2070 Test Park"],
                "city": "Los Angeles",
                "state": "CA",
                "postalCode": "90067",
                "country": "USA",
            }
        ],
    }
    assert century["display"] == "Century Hospital"
    assert second["performer"] == [{"display": "ABC Hospital"}]
    (central,) = third["performer"]
    producer = by_url(result, central["reference"])
    assert producer.resource == {
        "resourceType": "Organization",
        "identifier": [
            {"system": "http://terminology.hl7.org/CodeSystem/v2-0624", "value": "CentralLab"}
        ],
        "name": "Central Laboratory",
    }
    assert fourth["performer"][0]["reference"] == century["reference"]  # planned once
    assert len(of_type(result, "Organization")) == 2


@pytest.mark.parametrize("code", ["Y", "z"])
def test_report_status_of_a_query_answer_is_an_error(code: str) -> None:
    """IG ResultStatus[Non-Queries]: OBR-25 Y (no order on record) and Z (no record of this
    patient) are "IF NOT MAPPED ERROR": AE at OBR-25, nothing filed (it was an AA warning
    calling them "not in table 0123", which they are)."""
    text = oru("OBX|1|NM|1^A^L||1||||||F").replace("||||||F\n", f"||||||{code}\n", 1)
    assert errors(text) == [(103, "OBR", 1, 25, None)]


def test_an_obx_after_an_spm_is_an_observation_of_the_specimen() -> None:
    """IG ORU_R01 SPECIMEN_OBSERVATION: an OBX after the order's SPM -> an Observation whose
    focus is that Specimen, not a result of the report (as in sample 15 of the shared
    corpus); it used to be listed among the report's results."""
    text = oru(
        "OBX|1|NM|2823-3^Potassium^LN||4.1|mmol/L^^UCUM|||||F",
        "SPM|1|^S1&LAB&1.2.9&ISO||BLD^Blood^HL70487",
        "OBX|1|NM|X-VOL^Volume^L||5|mL^^UCUM|||||P",
        "SPM|2|^S2&LAB&1.2.9&ISO||SER^Serum^HL70487",
        "OBX|1|CWE|X-COND^Condition^L||HEM^Hemolyzed^L||||||F",
    )
    result = mapped(text.replace("||||||F\n", "||||||\n", 1))  # OBR-25 empty: derived
    first_specimen, second_specimen = (s.full_url for s in of_type(result, "Specimen"))
    potassium, volume, condition = of_type(result, "Observation")
    assert "focus" not in potassium.resource
    assert volume.resource["focus"] == [{"reference": first_specimen}]
    assert condition.resource["focus"] == [{"reference": second_specimen}]
    report = only(result, "DiagnosticReport").resource
    assert report["result"] == [{"reference": potassium.full_url}]
    assert report["status"] == "final"  # from the results only (the volume is preliminary)
    assert report["specimen"] == [{"reference": first_specimen}, {"reference": second_specimen}]
