"""PV1, PV2 and PID fields of the HL7 v2-to-FHIR IG that were left unmapped, field by field
(IG segment maps PV1[Encounter], PV2[Encounter], PID[Patient] and the datatype maps they
name), then through the running server (POST /hl7/v2) and read back over REST."""

from __future__ import annotations

import copy
import threading
from typing import Any

import httpx
from sqlalchemy import Engine, event

from hl7_adapters.edits import settled
from hl7_adapters.mapping.identifiers import match_of
from tests.test_hl7_http import hl7, post, server_root  # noqa: F401  (fixtures)
from tests.test_hl7_ingest import err_fields, msa, search, unique_id
from tests.test_hl7_integrity import Send, engine, send
from tests.test_hl7_mapping_adt import V2, mapped, of_type, only
from tests.test_hl7_mapping_ig_fields import HEAD, pv1, pv2

__all__ = ["engine", "hl7", "send", "server_root"]

EXT = "http://hl7.org/fhir/StructureDefinition/"
R5 = "http://hl7.org/fhir/5.0/StructureDefinition/extension-"
TEMPORARY = {
    "url": EXT + "subject-locationClassification",
    "valueCodeableConcept": {
        "coding": [
            {
                "system": "http://hl7.org/fhir/subject-locationClassification",
                "code": "temporary",
                "display": "Temporary",
            }
        ]
    },
}
MOTHER = {"system": "http://terminology.hl7.org/CodeSystem/v3-RoleCode", "code": "MTH",
          "display": "mother"}  # fmt: skip
PID_HEAD = "PID|1||IGP^^^HOSP&1.2.3&ISO^MR||Ig^Pat\n"


def with_pid(fields: dict[int, str], trigger: str = "A01") -> str:
    """HEAD with a PID carrying these fields (besides PID-3 and PID-5)."""
    values = {1: "1", 3: "IGP^^^HOSP&1.2.3&ISO^MR", 5: "Ig^Pat", **fields}
    pid = "PID|" + "|".join(values.get(i, "") for i in range(1, max(values) + 1)) + "\n"
    text = HEAD.replace(PID_HEAD, pid)
    return text.replace("ADT^A01^ADT_A01", f"ADT^{trigger}^ADT_A01")


# ---------------------------------------------------------------- PV1 / PV2, mapping only


def test_pv1_11_is_an_active_temporary_location_and_pv1_43_is_temporary_too() -> None:
    """IG PV1[Encounter]: PV1-11 is location[3], status active, with the extension
    subject-locationClassification "temporary"; PV1-43 (prior temporary location) carries
    the same classification. PV1-3 and PV1-6 carry none."""
    text = HEAD + pv1({3: "W1^101^A^H", 6: "W1^100^A^H", 11: "DIA^1^^H", 43: "XR^1^^H"})
    places = only(mapped(text), "Encounter").resource["location"]
    assert [(p["location"]["display"], p["status"]) for p in places] == [
        ("W1 101 A", "active"),
        ("W1 100 A", "completed"),
        ("DIA 1", "active"),
        ("XR 1", "completed"),
    ]
    assert [p.get("extension") for p in places] == [None, None, [TEMPORARY], [TEMPORARY]]


def test_pv1_37_is_the_discharge_destination_a_location_of_that_type() -> None:
    """IG PV1[Encounter] PV1-37 -> hospitalization.destination(Location), DLD[Location-
    Discharge]: DLD.1 is Location.type (table 0113); DLD.2 has no target. One Location per
    type, ensured by a derived identifier (mode kind)."""
    result = mapped(HEAD + pv1({36: "01", 37: "HOME&Home&HL70113^20240902"}))
    hospitalization = only(result, "Encounter").resource["hospitalization"]
    [location] = of_type(result, "Location")
    assert hospitalization["destination"] == {"reference": location.full_url, "display": "Home"}
    assert location.mode == "ensure"
    key = {"system": "urn:medisentinel:hl7v2:dld", "value": V2 + "0113|HOME"}
    assert location.resource == {
        "resourceType": "Location",
        "identifier": [key],
        "mode": "kind",
        "type": [{"coding": [{"system": V2 + "0113", "code": "HOME", "display": "Home"}]}],
    }
    assert location.match == match_of(key)
    # an IS value without a coding system (v2.5 DLD.1) gets the table's system too
    plain = mapped(HEAD + pv1({37: "SNF"}))
    [snf] = of_type(plain, "Location")
    assert snf.resource["type"] == [{"coding": [{"system": V2 + "0113", "code": "SNF"}]}]


def test_pv1_40_is_the_bed_status_of_the_assigned_bed() -> None:
    """IG PV1[Encounter] PV1-40 -> Location.operationalStatus of PV1-3's most granular level
    (table 0116), when PV1-3 names a room or a bed: on the bed as planned (a new bed is
    created with it) and as a separate upsert of the bed carrying the status alone (a bed
    found is otherwise used unchanged). PV1-6's bed gets none; a ward alone gets none; a code
    outside 0116 is W 103."""
    occupied = {"system": V2 + "0116", "code": "O", "display": "Occupied"}
    result = mapped(HEAD + pv1({3: "W1^101^A^H", 6: "W1^100^A^H", 40: "O"}))
    locations = of_type(result, "Location")
    bed = next(p for p in locations if p.resource.get("name") == "W1 101 A")
    assert bed.mode == "ensure" and bed.resource["operationalStatus"] == occupied
    [status] = [p for p in locations if p.mode == "upsert"]
    assert status.resource == {"resourceType": "Location", "operationalStatus": occupied}
    assert status.match == bed.match and status.full_url != bed.full_url
    assert status.origin == ("PV1", 1, 40)
    assert [p.resource.get("operationalStatus") for p in locations].count(occupied) == 2
    ward = mapped(HEAD + pv1({3: "W1^^^H", 40: "O"}))
    assert all("operationalStatus" not in p.resource for p in of_type(ward, "Location"))
    odd = mapped(HEAD + pv1({3: "W1^101^A^H", 40: "Z"}))
    assert all("operationalStatus" not in p.resource for p in of_type(odd, "Location"))
    assert [(w.code, w.segment, w.field) for w in odd.warnings] == [(103, "PV1", 40)]
    # an ORU's PV1 only names the visit: it writes no bed status
    oru = (
        "MSH|^~\\&|LAB|F|R|F|20240901100000+0000||ORU^R01^ORU_R01|IG-2|P|2.5.1\n"
        + PID_HEAD + pv1({3: "W1^101^A^H", 40: "O"})
        + "OBR|1||F1^LAB|2345-7^Glucose^LN\nOBX|1|NM|2345-7^Glucose^LN||99|mg/dL|||||F\n"
    )  # fmt: skip
    assert all("operationalStatus" not in p.resource for p in of_type(mapped(oru), "Location"))


def test_pv2_planned_dates_visit_description_and_protection_indicator() -> None:
    """IG PV2[Encounter]: PV2-8 / PV2-9 -> R5 Encounter.plannedStartDate / plannedEndDate as
    R4 cross-version extensions (valueDateTime); PV2-12 -> text.div (escaped, status
    additional); PV2-22 -> meta.security (ID[Coding], table 0136)."""
    fields = {8: "202409011000+0000", 9: "20240905", 12: "Knee <left> & rehab", 22: "Y"}
    encounter = only(mapped(HEAD + pv1({}) + pv2(fields)), "Encounter").resource
    assert encounter["extension"] == [
        {"url": R5 + "Encounter.plannedStartDate", "valueDateTime": "2024-09-01T10:00:00+00:00"},
        {"url": R5 + "Encounter.plannedEndDate", "valueDateTime": "2024-09-05"},
    ]
    assert encounter["text"] == {
        "status": "additional",
        "div": '<div xmlns="http://www.w3.org/1999/xhtml">Knee &lt;left&gt; &amp; rehab</div>',
    }
    assert encounter["meta"] == {"security": [{"system": V2 + "0136", "code": "Y"}]}


def test_pv2_22_other_than_y_or_n_is_a_warning_and_left_out() -> None:
    result = mapped(HEAD + pv1({}) + pv2({22: "X"}))
    assert "meta" not in only(result, "Encounter").resource
    assert [(w.code, w.segment, w.field) for w in result.warnings] == [(103, "PV2", 22)]


# ---------------------------------------------------------------- PID, mapping only


def test_pid_21_the_mother_is_a_related_person_of_the_patient() -> None:
    """IG PID[Patient] PID-21 -> CX[RelatedPerson-Mother]: a RelatedPerson whose patient is
    the PID's, carrying every identifier sent (relationship MTH), upserted by a key derived
    from the patient; an ORU's PID (which only names the patient) plans none."""
    result = mapped(with_pid({21: "M77^^^HOSP&1.2.3&ISO^MR~999^^^SSA&2.16.840.1.113883.4.1&ISO"}))
    patient = only(result, "Patient")
    mother = only(result, "RelatedPerson")
    assert mother.mode == "upsert"
    key = {"system": "urn:medisentinel:hl7v2:mother", "value": "urn:oid:1.2.3|IGP"}
    assert mother.resource["identifier"][0] == key
    assert [(i.get("system"), i["value"]) for i in mother.resource["identifier"][1:]] == [
        ("urn:oid:1.2.3", "M77"),
        ("urn:oid:2.16.840.1.113883.4.1", "999"),
    ]
    assert mother.resource["patient"] == {"reference": patient.full_url}
    assert mother.resource["relationship"] == [{"coding": [MOTHER]}]
    assert of_type(mapped(with_pid({})), "RelatedPerson") == []


def test_pid_35_36_are_the_animal_extension_and_39_a_citizenship() -> None:
    """IG PID[Patient]: PID-35 / PID-36 -> patient-animal species / breed; PID-39 (tribal
    citizenship) -> patient-citizenship, beside PID-26's."""
    fields = {26: "USA^^ISO3166_1", 35: "CAT^Cat^L", 36: "SIA^Siamese^L", 39: "NAV^Navajo"}
    extensions = only(mapped(with_pid(fields)), "Patient").resource["extension"]
    animal = [e for e in extensions if e["url"] == EXT + "patient-animal"]
    assert animal == [
        {
            "url": EXT + "patient-animal",
            "extension": [
                {"url": "species", "valueCodeableConcept": {"coding": [
                    {"code": "CAT", "display": "Cat"}]}},
                {"url": "breed", "valueCodeableConcept": {"coding": [
                    {"code": "SIA", "display": "Siamese"}]}},
            ],
        }
    ]  # fmt: skip
    citizenships = [
        e["extension"][0]["valueCodeableConcept"]["coding"][0]["code"]
        for e in extensions
        if e["url"] == EXT + "patient-citizenship"
    ]
    assert citizenships == ["USA", "NAV"]


def test_pid_36_without_a_species_is_a_warning_and_nulls_name_their_part() -> None:
    """patient-animal needs its species (R4 1..1): a breed alone, W 101 at PID-35, is
    mapped as the breed piece only a stored species completes (a new Patient is created
    without it, edits.settled). PID-26 "" removes PID-26's citizenship even beside a PID-39
    value (each field's part, demographics.extension_part); PID-35 "" removes the animal."""
    result = mapped(with_pid({36: "SIA^Siamese^L"}))
    patient = only(result, "Patient")
    assert "extension" not in settled(copy.deepcopy(patient.resource), patient.parts)
    assert [(w.code, w.segment, w.field) for w in result.warnings] == [(101, "PID", 35)]
    nulls = only(mapped(with_pid({26: '""', 35: '""', 39: "NAV"})), "Patient").nulls
    citizenship, animal = f"extension[{EXT}patient-citizenship", f"extension[{EXT}patient-animal"
    assert f"{citizenship}|PID-26]" in nulls and f"{citizenship}|PID-39]" not in nulls
    assert {f"{animal}|species]", f"{animal}|breed]"} <= nulls
    assert f"{animal}|breed]" in only(mapped(with_pid({36: '""'})), "Patient").nulls


def test_pid_fields_the_ig_leaves_unmapped_change_nothing() -> None:
    """PID-18 (the IG's PID[Account]), PID-27 / 31 / 34 (extensions the IG has not defined),
    PID-32 / 37 / 38 (no target), PID-33 (meta.lastUpdated, the server's) map to nothing."""
    unmapped = {18: "ACC1^^^HOSP", 27: "V^Veteran", 31: "Y", 32: "AL", 33: "20240101",
                34: "HOSP", 37: "Strain A", 38: "PC1"}  # fmt: skip
    bare = mapped(with_pid({}))
    full = mapped(with_pid(unmapped))
    assert only(full, "Patient").resource == only(bare, "Patient").resource
    assert [p.resource_type for p in full.planned] == [p.resource_type for p in bare.planned]
    assert full.warnings == []


# ---------------------------------------------------------------- through the server


def segment(name: str, fields: dict[int, str]) -> str:
    return name + "|" + "|".join(fields.get(i, "") for i in range(1, max(fields) + 1))


def adt(trigger: str, mrn: str, when: str, pid: dict[int, str], pv1_: dict[int, str],
        pv2_: dict[int, str]) -> bytes:  # fmt: skip
    pid = {1: "1", 3: f"{mrn}^^^HOSP^MR", 5: "Doe^Jane", 7: "19800101", 8: "F", **pid}
    return "\r".join([
        f"MSH|^~\\&|ADT|HOSP|MS|MS|{when}+0000||ADT^{trigger}|{unique_id()}|P|2.5",
        f"EVN|{trigger}|{when}+0000",
        segment("PID", pid), segment("PV1", pv1_), segment("PV2", pv2_), "",
    ]).encode()  # fmt: skip


def one(client: httpx.Client, rtype: str, **params: str) -> dict[str, Any]:
    [found] = search(client, rtype, **params)
    return found


def test_the_new_fields_are_stored_and_an_update_replaces_only_its_own(
    hl7: httpx.Client,  # noqa: F811
    client: httpx.Client,
) -> None:
    """A01 then A08 over POST /hl7/v2, read back over REST: the temporary location, the
    discharge destination (one Location for its type, also after the A08), planned dates,
    narrative and protection label, the mother (updated, not copied), the animal and
    tribal citizenship extensions. The A08's PV2-22 replaces its own label and keeps a
    REST client's label and tag on the Encounter."""
    mrn, visit = unique_id("P"), unique_id("V")
    pid = {21: "M1^^^HOSP^MR", 35: "DOG^Dog^L", 36: "LAB^Labrador^L", 39: "NAV^Navajo"}
    pv1_ = {1: "1", 2: "I", 3: "W1^101^A^H", 11: "DIA^1^^H", 19: f"{visit}^^^HOSP^VN"}
    pv2_ = {8: "20240901100000+0000", 9: "20240905", 12: "Knee rehab", 22: "Y"}
    answer = post(hl7, adt("A01", mrn, "20240901100000", pid, pv1_, pv2_)).content
    assert msa(answer)[0] == "AA", answer
    assert err_fields(answer) == []
    encounter = one(client, "Encounter", identifier=visit)
    temporary = [p for p in encounter["location"] if p.get("extension")]
    assert [(p["status"], p["location"]["display"]) for p in temporary] == [("active", "DIA 1")]
    assert temporary[0]["extension"] == [TEMPORARY]
    assert {e["url"]: e["valueDateTime"] for e in encounter["extension"]} == {
        R5 + "Encounter.plannedStartDate": "2024-09-01T10:00:00+00:00",
        R5 + "Encounter.plannedEndDate": "2024-09-05",
    }
    assert encounter["text"]["div"] == '<div xmlns="http://www.w3.org/1999/xhtml">Knee rehab</div>'
    assert encounter["meta"]["security"] == [{"system": V2 + "0136", "code": "Y"}]
    patient = one(client, "Patient", identifier=mrn)
    mother = one(client, "RelatedPerson", patient=f"Patient/{patient['id']}")
    assert mother["relationship"] == [{"coding": [MOTHER]}]
    assert [i["value"] for i in mother["identifier"][1:]] == ["M1"]
    by_url = {e["url"]: e for e in patient["extension"]}
    assert [x["url"] for x in by_url[EXT + "patient-animal"]["extension"]] == ["species", "breed"]
    citizenship = by_url[EXT + "patient-citizenship"]["extension"][0]["valueCodeableConcept"]
    assert citizenship["coding"][0]["code"] == "NAV"

    # a REST client labels the Encounter too; the discharge comes with PV2-22 N
    own = {"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "code": "R"}
    tag = {"system": "http://example.org/tags", "code": "audit"}
    encounter["meta"]["security"].append(own)
    encounter["meta"]["tag"] = [tag]
    assert client.put(f"/Encounter/{encounter['id']}", json=encounter).status_code == 200
    pid[21] = "M2^^^HOSP^MR"
    discharge = {**pv1_, 37: "HOME&Home&HL70113"}
    for trigger, when in (("A08", "20240902100000"), ("A03", "20240903100000")):
        answer = post(hl7, adt(trigger, mrn, when, pid, discharge, {22: "N"})).content
        assert msa(answer)[0] == "AA", answer
    encounter = one(client, "Encounter", identifier=visit)
    assert encounter["meta"]["security"] == [own, {"system": V2 + "0136", "code": "N"}]
    assert encounter["meta"]["tag"] == [tag]
    destination = encounter["hospitalization"]["destination"]
    home = client.get(f"/{destination['reference']}").json()
    assert home["type"] == [
        {"coding": [{"system": V2 + "0113", "code": "HOME", "display": "Home"}]}
    ]
    assert home["mode"] == "kind"
    key = home["identifier"][0]
    found = search(client, "Location", identifier=f"{key['system']}|{key['value']}".replace(
        "0113|", "0113\\|"))  # fmt: skip
    assert [x["id"] for x in found] == [home["id"]]  # one Location for the type, not two
    mother = one(client, "RelatedPerson", patient=f"Patient/{patient['id']}")
    assert [i["value"] for i in mother["identifier"][1:]] == ["M2"]


def test_bed_status_updates_only_the_bed_and_only_when_it_changes(
    hl7: httpx.Client,  # noqa: F811
    client: httpx.Client,
) -> None:
    """PV1-40 through the server: the new bed is created occupied (one version); a discharge
    with status U updates the bed (version 2), its name, partOf and identifier untouched; a
    message without PV1-40 or with the same status writes no version; an older message's
    status is kept out by the event clock (a warning)."""
    mrn, visit, ward = unique_id("P"), unique_id("V"), unique_id("W")
    pv1_ = {1: "1", 2: "I", 3: f"{ward}^7^A^H", 19: f"{visit}^^^HOSP^VN", 40: "O"}

    def send(trigger: str, when: str, **fields: str) -> bytes:
        pv1_now = {**pv1_, **{int(k[1:]): v for k, v in fields.items()}}
        answer = post(hl7, adt(trigger, mrn, when, {}, pv1_now, {1: ""})).content
        assert msa(answer)[0] == "AA", answer
        return answer

    send("A01", "20240901100000")
    [bed] = search(client, "Location", name=f"{ward} 7 A")
    assert bed["operationalStatus"]["code"] == "O" and bed["meta"]["versionId"] == "1"
    send("A03", "20240902100000", f40="U")
    [after] = search(client, "Location", name=f"{ward} 7 A")
    assert after["operationalStatus"] == {"system": V2 + "0116", "code": "U",
                                          "display": "Unoccupied"}  # fmt: skip
    assert after["meta"]["versionId"] == "2"
    assert {k: v for k, v in after.items() if k not in ("meta", "operationalStatus")} == {
        k: v for k, v in bed.items() if k not in ("meta", "operationalStatus")
    }
    send("A08", "20240903100000", f40="")
    send("A08", "20240904100000", f40="U")
    assert search(client, "Location", name=f"{ward} 7 A")[0]["meta"]["versionId"] == "2"
    late = send("A08", "20240901120000", f40="K")  # older than the A03's status
    assert ("PV1^1^40", "0", "W") in err_fields(late)
    assert search(client, "Location", name=f"{ward} 7 A")[0]["operationalStatus"]["code"] == "U"


def test_an_unchanged_bed_status_costs_no_statement(send: Send, engine: Engine) -> None:
    """The bed's status is a second write planned for a Location the message already looks
    up: an A08 whose PV1-40 repeats the stored status runs the statements of the same A08
    without PV1-40 plus one, the read of the bed to compare (the look-up is reused, its
    clock read with the others, nothing written). Searching the bed again cost one more."""
    mrn, visit, ward = unique_id("P"), unique_id("V"), unique_id("W")
    pv1_ = {1: "1", 2: "I", 3: f"{ward}^7^A^H", 19: f"{visit}^^^HOSP^VN", 40: "O"}
    assert msa(send(adt("A01", mrn, "20240901100000", {}, pv1_, {1: ""})))[0] == "AA"
    counted: list[str] = []
    me = threading.get_ident()

    def count(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if threading.get_ident() == me:
            counted.append(statement)

    def statements(when: str, status: str) -> int:
        message = adt("A08", mrn, when, {}, {**pv1_, 40: status}, {1: ""})
        counted.clear()
        event.listen(engine, "before_cursor_execute", count)
        try:
            assert msa(send(message))[0] == "AA"
        finally:
            event.remove(engine, "before_cursor_execute", count)
        return len(counted)

    without = statements("20240902100000", "")
    assert statements("20240903100000", "O") == without + 1
