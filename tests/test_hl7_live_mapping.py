"""Mappings checked through the real mapper, the door and the running server (POST /hl7/v2).

Cancel events: IG ADT_A13 (cancel discharge): the Encounter is in progress again and what
the discharge wrote (period.end, hospitalization.dischargeDisposition) is gone, also when the
A13 sends no admit time or admit source of its own. IG ADT_A11 (cancel admit): cancelled.
ORU SPM segments: Specimen resources, referenced by the report and its results. ADT DG1
segments: Conditions of the visit, updated (not copied) by an A08.
"""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import LiveServer
from tests.smart_helpers import register_client
from tests.test_hl7_http import hl7, post, server_root  # noqa: F401  (fixtures)
from tests.test_hl7_ingest import err_fields, msa, search, unique_id

__all__ = ["hl7", "server_root"]


def adt(trigger: str, control: str, mrn: str, when: str, pv1: dict[int, str]) -> bytes:
    fields = [""] * max(pv1)
    for number, value in pv1.items():
        fields[number - 1] = value
    return (
        f"MSH|^~\\&|ADT|HOSP|MS|MS|{when}+0000||ADT^{trigger}|{control}|P|2.5\r"
        f"EVN|{trigger}|{when}+0000\r"
        f"PID|1||{mrn}^^^HOSP^MR||Doe^Jane||19800101|F\r"
        f"PV1|{'|'.join(fields)}\r"
    ).encode()


def visit_fields(visit: str, **extra: str) -> dict[int, str]:
    fields = {1: "1", 2: "I", 3: "W1^101^A", 19: f"{visit}^^^HOSP^VN"}
    fields.update({int(k[1:]): v for k, v in extra.items()})
    return fields


def encounter(client: httpx.Client, visit: str) -> dict:  # type: ignore[type-arg]
    [found] = search(client, "Encounter", identifier=visit)
    return found


@pytest.mark.parametrize(
    "a13_extra",
    [
        {},  # no PV1-44, PV1-14: nothing of the A13 replaces period or hospitalization
        {"f44": "20240301100000+0000", "f14": "7"},  # both sent: replaced, end still dropped
        {"f44": "20240301100000+0000", "f45": "20240302100000+0000", "f36": "01"},  # stale copy
    ],
)
def test_a13_takes_the_discharge_back(
    hl7: httpx.Client,  # noqa: F811
    client: httpx.Client,
    a13_extra: dict[str, str],
) -> None:
    mrn, visit = unique_id("P"), unique_id("V")
    admit = visit_fields(visit, f14="7", f44="20240301100000+0000")
    discharged = {**admit, 36: "01", 45: "20240302100000+0000"}
    assert msa(post(hl7, adt("A01", unique_id(), mrn, "20240301100000", admit)).content)[0] == "AA"
    answer = post(hl7, adt("A03", unique_id(), mrn, "20240302100000", discharged))
    assert msa(answer.content)[0] == "AA"
    before = encounter(client, visit)
    assert before["status"] == "finished" and before["period"]["end"]
    assert before["hospitalization"]["dischargeDisposition"]["coding"] == [
        {"system": "http://terminology.hl7.org/CodeSystem/v2-0112", "code": "01"}
    ]
    assert before["hospitalization"]["admitSource"]["coding"] == [
        {"system": "http://terminology.hl7.org/CodeSystem/v2-0023", "code": "7"}
    ]

    a13 = adt("A13", unique_id(), mrn, "20240302110000", visit_fields(visit, **a13_extra))
    assert msa(post(hl7, a13).content)[0] == "AA"
    after = encounter(client, visit)
    assert after["status"] == "in-progress"
    assert after["period"] == {"start": "2024-03-01T10:00:00+00:00"}
    assert after["hospitalization"]["admitSource"]["coding"][0]["code"] == "7"
    assert "dischargeDisposition" not in after["hospitalization"]


def test_a13_on_a_visit_never_discharged_changes_no_period(
    hl7: httpx.Client,  # noqa: F811
    client: httpx.Client,
) -> None:
    mrn, visit = unique_id("P"), unique_id("V")
    admit = visit_fields(visit, f44="20240301100000+0000")
    assert msa(post(hl7, adt("A01", unique_id(), mrn, "20240301100000", admit)).content)[0] == "AA"
    a13 = adt("A13", unique_id(), mrn, "20240301110000", visit_fields(visit))
    assert msa(post(hl7, a13).content)[0] == "AA"
    after = encounter(client, visit)
    assert after["status"] == "in-progress" and "hospitalization" not in after
    assert after["period"] == {"start": "2024-03-01T10:00:00+00:00"}


def test_a11_cancels_the_admission(
    hl7: httpx.Client,  # noqa: F811
    client: httpx.Client,
) -> None:
    mrn, visit = unique_id("P"), unique_id("V")
    admit = visit_fields(visit, f44="20240301100000+0000")
    assert msa(post(hl7, adt("A01", unique_id(), mrn, "20240301100000", admit)).content)[0] == "AA"
    a11 = adt("A11", unique_id(), mrn, "20240301110000", visit_fields(visit))
    assert msa(post(hl7, a11).content)[0] == "AA"
    assert encounter(client, visit)["status"] == "cancelled"


def lipid_oru(mrn: str, order: str, *, obx_tail: str = "", more: str = "") -> bytes:
    """One cholesterol result of order `order` for patient `mrn`: `obx_tail` goes after
    OBX-11, `more` (whole segments) after the OBX."""
    return (
        f"MSH|^~\\&|LAB|HOSP|MS|MS|20240301120000+0000||ORU^R01^ORU_R01|{unique_id()}|P|2.5.1\r"
        f"PID|1||{mrn}^^^HOSP^MR||Roe^Rich||19700101|M\r"
        f"OBR|1||{order}^LAB^1.2.9^ISO|24331-1^Lipid^LN|||20240301080000+0000"
        "||||||||||||||||||F\r"
        f"OBX|1|NM|2093-3^Chol^LN||250|mg/dL^^UCUM|||||F{obx_tail}\r{more}"
    ).encode()


def oru_with_specimen(mrn: str, order: str, specimen_id: str) -> bytes:
    spm = f"SPM|1|^{specimen_id}&LAB&1.2.9&ISO||SER^Serum^HL70487|||||||||||||20240301075000+0000\r"
    return lipid_oru(mrn, order, more=spm)


def test_a_specimen_is_stored_once_and_referenced(
    hl7: httpx.Client,  # noqa: F811
    client: httpx.Client,
) -> None:
    """IG ORU_R01 SPECIMEN group: SPM -> Specimen; a re-send (new MSH-10) updates it."""
    mrn, order, specimen_id = unique_id("P"), unique_id("F"), unique_id("S")
    for _ in range(2):
        assert msa(post(hl7, oru_with_specimen(mrn, order, specimen_id)).content)[0] == "AA"
    [specimen] = search(client, "Specimen", identifier=f"urn:oid:1.2.9|{specimen_id}")
    assert specimen["type"]["coding"][0]["code"] == "SER"
    assert specimen["collection"] == {"collectedDateTime": "2024-03-01T07:50:00+00:00"}
    [patient] = search(client, "Patient", identifier=mrn)
    assert specimen["subject"] == {"reference": f"Patient/{patient['id']}"}
    [report] = search(client, "DiagnosticReport", identifier=order)
    assert report["specimen"] == [{"reference": f"Specimen/{specimen['id']}"}]
    [result] = search(client, "Observation", subject=f"Patient/{patient['id']}")
    assert result["specimen"] == {"reference": f"Specimen/{specimen['id']}"}


def test_diagnoses_are_stored_once_per_visit(
    hl7: httpx.Client,  # noqa: F811
    client: httpx.Client,
) -> None:
    mrn, visit = unique_id("P"), unique_id("V")
    dg1 = "DG1|1||I63.9^Cerebral infarction^I10|Stroke|20240301100000+0000|A"
    for trigger, when in (("A01", "20240301100000"), ("A08", "20240301110000")):
        body = adt(trigger, unique_id(), mrn, when, visit_fields(visit)) + f"{dg1}\r".encode()
        assert msa(post(hl7, body).content)[0] == "AA"
    [found] = search(client, "Condition", code="I63.9")  # one Condition, not one per message
    assert found["code"]["coding"][0]["code"] == "I63.9"
    assert found["encounter"] == {"reference": f"Encounter/{encounter(client, visit)['id']}"}
    assert found["meta"]["versionId"] == "1"  # the A08 changed nothing


# The lab-feed token of docs/hl7v2.md: written before Specimen and Condition were mapped.
DOCS_LAB_SCOPE = (
    "system/Patient.cru system/Observation.cru system/DiagnosticReport.cru "
    "system/Encounter.cru system/Practitioner.cru system/Location.cru system/Device.cru "
    "system/Provenance.c"
)


def test_a_grant_without_specimen_or_condition_still_gets_its_results_in(
    live_server: LiveServer,
    server_root: str,
    client: httpx.Client,  # noqa: F811
) -> None:
    """Specimen and Condition are supplementary: a token without them gets AA with a
    warning (ERR 207, W), the rest written and no reference to what was left out."""
    auth = live_server.app.state.auth
    feed = register_client(auth, "backend", DOCS_LAB_SCOPE, jwks={"keys": []})
    token = auth.local_token(feed.name, DOCS_LAB_SCOPE)["access_token"]
    mrn, order, specimen_id, visit = (unique_id(p) for p in "PFSV")
    with httpx.Client(
        base_url=server_root, headers={"Authorization": f"Bearer {token}"}, timeout=30
    ) as http:
        answer = post(http, oru_with_specimen(mrn, order, specimen_id)).content
        dg1 = b"DG1|1||I63.9^Cerebral infarction^I10|Stroke\r"
        admit = post(
            http, adt("A01", unique_id(), mrn, "20240301100000", visit_fields(visit)) + dg1
        )
    assert msa(answer)[0] == "AA", answer
    assert ("207", "W") in {(code, severity) for _, code, severity in err_fields(answer)}
    assert search(client, "Specimen", identifier=f"urn:oid:1.2.9|{specimen_id}") == []
    [report] = search(client, "DiagnosticReport", identifier=order)
    assert "specimen" not in report
    [result] = search(client, "Observation", code="2093-3", subject=report["subject"]["reference"])
    assert "specimen" not in result
    assert msa(admit.content)[0] == "AA"
    assert encounter(client, visit)["status"] == "in-progress"
    [patient] = search(client, "Patient", identifier=mrn)
    assert search(client, "Condition", subject=f"Patient/{patient['id']}") == []


def test_a_numeric_array_is_stored_as_sampled_data(
    hl7: httpx.Client,  # noqa: F811
    client: httpx.Client,
) -> None:
    """OBX-2 NA -> valueSampledData, stored and read back with its unknown period."""
    mrn, order = unique_id("P"), unique_id("F")
    body = (
        f"MSH|^~\\&|LAB|HOSP|MS|MS|20240301120000+0000||ORU^R01^ORU_R01|{unique_id()}|P|2.5.1\r"
        f"PID|1||{mrn}^^^HOSP^MR||Roe^Rich||19700101|M\r"
        f"OBR|1||{order}^LAB^1.2.9^ISO|11524-6^ECG^LN|||20240301080000+0000"
        "||||||||||||||||||F\r"
        "OBX|1|NA|131329^MDC_ECG_ELEC_POTL_I^MDC||12^-7^30~11^-6^28|uV^^UCUM|||||F\r"
    ).encode()
    assert msa(post(hl7, body).content)[0] == "AA"
    [patient] = search(client, "Patient", identifier=mrn)
    [result] = search(client, "Observation", subject=f"Patient/{patient['id']}")
    assert result["valueSampledData"] == {
        "origin": {"value": 0, "unit": "uV", "system": "http://unitsofmeasure.org", "code": "uV"},
        "_period": {
            "extension": [
                {
                    "url": "http://hl7.org/fhir/StructureDefinition/data-absent-reason",
                    "valueCode": "unknown",
                }
            ]
        },
        "dimensions": 3,
        "data": "12 -7 30 11 -6 28",
    }


def demographics_adt(trigger: str, mrn: str, when: str, pid: dict[int, str]) -> bytes:
    fields = [""] * max([5, *pid])
    fields[2], fields[4] = f"{mrn}^^^HOSP^MR", "Doe^Jane"
    for number, value in pid.items():
        fields[number - 1] = value
    return (
        f"MSH|^~\\&|ADT|HOSP|MS|MS|{when}+0000||ADT^{trigger}|{unique_id()}|P|2.5\r"
        f"EVN|{trigger}|{when}+0000\r"
        f"PID|{'|'.join(fields)}\r"
    ).encode()


def test_demographics_are_updated_per_extension_and_observation(
    hl7: httpx.Client,  # noqa: F811
    client: httpx.Client,
) -> None:
    """PID-23/26/28 extensions and PID-10/22 Observations: an A08 replaces the extensions it
    sends and keeps the others (a PID-23 it leaves empty, a REST client's extension), and
    updates the race Observation instead of adding one."""
    ext = "http://hl7.org/fhir/StructureDefinition/"
    mrn = unique_id("P")
    a01 = {10: "2106-3^White^CDCREC", 23: "Springfield", 26: "USA^^ISO3166_1"}
    assert msa(post(hl7, demographics_adt("A01", mrn, "20240301100000", a01)).content)[0] == "AA"
    [patient] = search(client, "Patient", identifier=mrn)
    own = {"url": "http://example.org/fhir/StructureDefinition/vip", "valueBoolean": True}
    patient["extension"].append(own)
    assert client.put(f"/Patient/{patient['id']}", json=patient).status_code == 200
    a08 = {10: "2028-9^Asian^CDCREC", 26: "CAN^^ISO3166_1", 28: "CAN"}
    assert msa(post(hl7, demographics_adt("A08", mrn, "20240302100000", a08)).content)[0] == "AA"
    [patient] = search(client, "Patient", identifier=mrn)
    by_url = {e["url"]: e for e in patient["extension"]}
    assert set(by_url) == {
        ext + "patient-birthPlace",  # not sent in the A08: kept
        ext + "patient-citizenship",  # replaced
        ext + "patient-nationality",  # added
        own["url"],  # another channel's: kept
    }
    assert by_url[ext + "patient-birthPlace"]["valueAddress"] == {"text": "Springfield"}
    citizenship = by_url[ext + "patient-citizenship"]["extension"][0]["valueCodeableConcept"]
    assert citizenship["coding"][0]["code"] == "CAN"
    [race] = search(client, "Observation", subject=f"Patient/{patient['id']}", code="32624-9")
    assert race["valueCodeableConcept"]["coding"][0]["code"] == "2028-9"
    assert race["meta"]["versionId"] == "2"  # updated, not a second Observation
    a08_null = {23: '""'}
    answer = post(hl7, demographics_adt("A08", mrn, "20240303100000", a08_null))
    assert msa(answer.content)[0] == "AA"
    [patient] = search(client, "Patient", identifier=mrn)
    assert ext + "patient-birthPlace" not in {e["url"] for e in patient["extension"]}


def test_an_adt_token_without_observation_still_gets_its_admissions_in(
    live_server: LiveServer,
    server_root: str,
    client: httpx.Client,  # noqa: F811
) -> None:
    """The race/ethnic group Observations are supplementary: a token without
    system/Observation.cru gets AA with a warning (ERR 207, W) and the Patient written."""
    scope = "system/Patient.cru system/Provenance.c"
    auth = live_server.app.state.auth
    feed = register_client(auth, "backend", scope, jwks={"keys": []})
    token = auth.local_token(feed.name, scope)["access_token"]
    mrn = unique_id("P")
    with httpx.Client(
        base_url=server_root, headers={"Authorization": f"Bearer {token}"}, timeout=30
    ) as http:
        body = demographics_adt("A28", mrn, "20240301100000", {10: "2106-3^White^CDCREC"})
        answer = post(http, body).content
    assert msa(answer)[0] == "AA", answer
    assert ("207", "W") in {(code, severity) for _, code, severity in err_fields(answer)}
    [patient] = search(client, "Patient", identifier=mrn)
    assert search(client, "Observation", subject=f"Patient/{patient['id']}") == []


ORIGINAL_TEXT = "http://hl7.org/fhir/StructureDefinition/originalText"


@pytest.mark.parametrize(
    ("f44", "f45", "period", "warned_at"),
    [
        # a day and a minute of that day: per-1 could not order them (AE before); the end
        # takes the day's precision and keeps the value as sent in originalText
        (
            "20261122",
            "202611221530-0500",
            {
                "start": "2026-11-22",
                "end": "2026-11-22",
                "_end": {"extension": [{"url": ORIGINAL_TEXT, "valueString": "202611221530-0500"}]},
            },
            "PV1^1^45",
        ),
        # the other way round: the admit time is the finer one
        (
            "202611220815-0500",
            "20261122",
            {
                "start": "2026-11-22",
                "_start": {
                    "extension": [{"url": ORIGINAL_TEXT, "valueString": "202611220815-0500"}]
                },
                "end": "2026-11-22",
            },
            "PV1^1^44",
        ),
        # other days compare: both kept as sent, no warning
        (
            "20261121",
            "202611221530-0500",
            {"start": "2026-11-21", "end": "2026-11-22T15:30:00-05:00"},
            None,
        ),
    ],
)
def test_a_discharge_of_mixed_precision_on_the_admission_day_is_accepted(
    hl7: httpx.Client,  # noqa: F811
    client: httpx.Client,
    f44: str,
    f45: str,
    period: dict,  # type: ignore[type-arg]
    warned_at: str | None,
) -> None:
    mrn, visit = unique_id("P"), unique_id("V")
    admit = visit_fields(visit, f44=f44)
    assert msa(post(hl7, adt("A01", unique_id(), mrn, "20261122081500", admit)).content)[0] == "AA"
    discharge = post(hl7, adt("A03", unique_id(), mrn, "20261122153000", {**admit, 45: f45}))
    assert msa(discharge.content)[0] == "AA", discharge.content
    warnings = [e for e in err_fields(discharge.content) if e[0] == (warned_at or "PV1^1^45")]
    assert warnings == ([(warned_at, "0", "W")] if warned_at else [])
    stored = encounter(client, visit)
    assert stored["status"] == "finished"
    assert stored["period"] == period
    # a cancel discharge takes the end back with the value as sent
    a13 = adt("A13", unique_id(), mrn, "20261122160000", visit_fields(visit))
    assert msa(post(hl7, a13).content)[0] == "AA"
    after = encounter(client, visit)["period"]
    assert "end" not in after and "_end" not in after


def oru_by_lab(mrn: str, order: str, lab_id: str) -> bytes:
    """A result whose OBX-23/24 name the performing laboratory (IG: performer Organization)."""
    lab = f"Century Lab^^^^^&1.2.9&ISO^XX^^^{lab_id}|2070 Test Park^^Los Angeles^CA"
    return lipid_oru(mrn, order, obx_tail="||||||||||||" + lab)


def test_a_performing_organization_is_stored_once_and_is_supplementary(
    live_server: LiveServer,
    server_root: str,
    hl7: httpx.Client,  # noqa: F811
    client: httpx.Client,
) -> None:
    """OBX-23/24 -> the Observation's performer Organization, ensured by XON.10 (a second
    result names the same one); a token without system/Organization.cru (the docs' lab feed)
    gets AA with a warning (ERR 207, W) and the result without that performer."""
    mrn, lab_id = unique_id("P"), unique_id("L")
    for order in (unique_id("F"), unique_id("F")):
        assert msa(post(hl7, oru_by_lab(mrn, order, lab_id)).content)[0] == "AA"
    [lab] = search(client, "Organization", identifier=f"urn:oid:1.2.9|{lab_id}")
    assert (lab["name"], lab["address"]) == (
        "Century Lab",
        [{"line": ["2070 Test Park"], "city": "Los Angeles", "state": "CA"}],
    )
    [patient] = search(client, "Patient", identifier=mrn)
    results = search(client, "Observation", subject=f"Patient/{patient['id']}")
    assert [r["performer"] for r in results] == [
        [{"reference": f"Organization/{lab['id']}", "display": "Century Lab"}]
    ] * 2

    auth = live_server.app.state.auth
    feed = register_client(auth, "backend", DOCS_LAB_SCOPE, jwks={"keys": []})
    token = auth.local_token(feed.name, DOCS_LAB_SCOPE)["access_token"]
    other_mrn, other_lab, order = unique_id("P"), unique_id("L"), unique_id("F")
    with httpx.Client(
        base_url=server_root, headers={"Authorization": f"Bearer {token}"}, timeout=30
    ) as http:
        answer = post(http, oru_by_lab(other_mrn, order, other_lab)).content
    assert msa(answer)[0] == "AA", answer
    assert ("207", "W") in {(code, severity) for _, code, severity in err_fields(answer)}
    assert search(client, "Organization", identifier=f"urn:oid:1.2.9|{other_lab}") == []
    [report] = search(client, "DiagnosticReport", identifier=order)
    [result] = search(client, "Observation", subject=report["subject"]["reference"])
    assert "performer" not in result


def lab_result(mrn: str, order: str, *obx: str) -> bytes:
    """An ORU of one order (OBR-25 left empty: the report's status comes from OBX-11)."""
    return (
        f"MSH|^~\\&|LAB|HOSP|MS|MS|20240301120000+0000||ORU^R01^ORU_R01|{unique_id()}|P|2.5.1\r"
        f"PID|1||{mrn}^^^HOSP^MR||Roe^Rich||19700101|M\r"
        f"OBR|1||{order}^LAB^1.2.9^ISO|24331-1^Lipid^LN|||20240301080000+0000\r"
        + "".join(f"{line}\r" for line in obx)
    ).encode()


def test_a_correction_updates_the_stored_result_and_keeps_the_report_whole(
    hl7: httpx.Client,  # noqa: F811
    client: httpx.Client,
) -> None:
    """OBX-11 C re-sent for a stored result (same order, OBX-3, OBX-4) updates that
    Observation (status corrected, the new value, version 2), no second one is made; a later
    D (deleted) makes it entered-in-error. The report keeps listing every result."""
    mrn, order = unique_id("P"), unique_id("F")
    chol = "OBX|1|NM|2093-3^Chol^LN||{value}|mg/dL^^UCUM|||||{status}"
    hdl = "OBX|2|NM|2085-9^HDL^LN||50|mg/dL^^UCUM|||||F"
    sent = lab_result(mrn, order, chol.format(value=250, status="F"), hdl)
    assert msa(post(hl7, sent).content)[0] == "AA"
    assert (
        msa(post(hl7, lab_result(mrn, order, chol.format(value=205, status="C"))).content)[0]
        == "AA"
    )
    [patient] = search(client, "Patient", identifier=mrn)
    [corrected] = search(client, "Observation", code="2093-3", subject=f"Patient/{patient['id']}")
    assert (corrected["status"], corrected["valueQuantity"]["value"]) == ("corrected", 205)
    assert corrected["meta"]["versionId"] == "2"
    [report] = search(client, "DiagnosticReport", identifier=order)
    assert report["status"] == "corrected"
    listed = {r["reference"] for r in report["result"]}
    [good] = search(client, "Observation", code="2085-9", subject=f"Patient/{patient['id']}")
    assert listed == {f"Observation/{corrected['id']}", f"Observation/{good['id']}"}

    deleted = lab_result(mrn, order, "OBX|1|NM|2093-3^Chol^LN||||||||D")
    assert msa(post(hl7, deleted).content)[0] == "AA"
    [gone] = search(client, "Observation", code="2093-3", subject=f"Patient/{patient['id']}")
    assert (gone["id"], gone["status"]) == (corrected["id"], "entered-in-error")


def test_performers_of_one_field_keep_those_of_the_other(
    hl7: httpx.Client,  # noqa: F811
    client: httpx.Client,
) -> None:
    """Observation.performer comes from OBX-16 (Practitioner) and OBX-15/23 (Organization):
    a correction sending only one of the fields keeps the stored performer of the other
    (an empty field is "no change"), and replaces its own."""
    mrn, order, lab_id = unique_id("P"), unique_id("F"), unique_id("L")
    lab = f"Century Lab^^^^^&1.2.9&ISO^XX^^^{lab_id}"

    def result(status: str, observer: str, organization: str) -> bytes:
        obx = f"OBX|1|NM|2093-3^Chol^LN||250|mg/dL^^UCUM|||||{status}|||||{observer}"
        return lab_result(mrn, order, f"{obx}|||||||{organization}")

    def performers() -> list[str]:
        [patient] = search(client, "Patient", identifier=mrn)
        [found] = search(client, "Observation", subject=f"Patient/{patient['id']}")
        return [p["display"] for p in found["performer"]]

    assert msa(post(hl7, result("F", "11^Tech^Tina^^^^^^&1.2.9&ISO", lab)).content)[0] == "AA"
    assert performers() == ["Tina Tech", "Century Lab"]
    assert msa(post(hl7, result("C", "", lab)).content)[0] == "AA"
    assert performers() == ["Tina Tech", "Century Lab"]
    assert msa(post(hl7, result("C", "12^Doe^Dan^^^^^^&1.2.9&ISO", "")).content)[0] == "AA"
    assert performers() == ["Dan Doe", "Century Lab"]
