"""ADT fields the HL7 v2-to-FHIR IG maps that the mapping used to drop, field by field (IG
segment maps PV1[Encounter], PV2[Encounter], NK1[RelatedPerson], PID[Patient])."""

from __future__ import annotations

import httpx

from hl7_adapters.mapping.sources import field_of, unmarked
from tests.test_hl7_ingest import msa, unique_id
from tests.test_hl7_integrity import AUTHORITY, Send, er7, msh, patients, send
from tests.test_hl7_mapping_adt import V2, mapped, only

V3_PARTICIPATION = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"
MODE_OF_ARRIVAL = "http://hl7.org/fhir/StructureDefinition/encounter-modeOfArrival"
HEAD = (
    "MSH|^~\\&|IG|F|R|F|20240901100000+0000||ADT^A01^ADT_A01|IG-1|P|2.5.1\n"
    "EVN|A01|20240901100000+0000\n"
    "PID|1||IGP^^^HOSP&1.2.3&ISO^MR||Ig^Pat\n"
)


def pv1(fields: dict[int, str]) -> str:
    """A PV1 with class I, visit number V1 and these fields set."""
    values = {2: "I", 19: "V1^^^HOSP&1.2.3&ISO^VN", **fields}
    return "PV1|" + "|".join(values.get(i, "") for i in range(1, max(values) + 1)) + "\n"


def pv2(fields: dict[int, str]) -> str:
    return "PV2|" + "|".join(fields.get(i, "") for i in range(1, max(fields) + 1)) + "\n"


def test_pv1_hospitalization_readmission_vip_and_diet() -> None:
    """IG PV1[Encounter]: PV1-13 hospitalization.reAdmission, PV1-16 .specialCourtesy, PV1-38
    .dietPreference (CWE[CodeableConcept], the HL7 table as system when none is sent)."""
    text = HEAD + pv1({13: "R^Readmission^HL70092", 16: "VIP", 38: "VEG^Vegetarian"})
    hospitalization = only(mapped(text), "Encounter").resource["hospitalization"]
    assert hospitalization["reAdmission"] == {
        "coding": [{"system": V2 + "0092", "code": "R", "display": "Readmission"}]
    }
    assert hospitalization["specialCourtesy"] == [
        {"coding": [{"system": V2 + "0099", "code": "VIP"}]}
    ]
    assert hospitalization["dietPreference"] == [
        {"coding": [{"system": V2 + "0114", "code": "VEG", "display": "Vegetarian"}]}
    ]


def test_pv1_52_and_pv2_13_are_participants() -> None:
    """IG PV1[Encounter] PV1-52 other healthcare provider: participant type PART; IG
    PV2[Encounter] PV2-13 referral source: participant type REF."""
    text = HEAD + pv1({7: "D1^Attend^A", 52: "D2^Other^O"}) + pv2({13: "D3^Refer^R"})
    participants = only(mapped(text), "Encounter").resource["participant"]
    roles = [(p["type"][0]["coding"][0]["code"], p["individual"]["display"]) for p in participants]
    assert [code for code, _ in roles] == ["ATND", "PART", "REF"]
    assert all(p["type"][0]["coding"][0]["system"] == V3_PARTICIPATION for p in participants)
    assert [display for _, display in roles] == ["A Attend", "O Other", "R Refer"]


def test_pv2_length_priority_and_mode_of_arrival() -> None:
    """IG PV2[Encounter]: PV2-11 length (days), PV2-25 priority through the IG concept map
    EncounterPriority (v3 ActPriority, the v2 code kept), PV2-38 the core extension
    encounter-modeOfArrival (valueCoding)."""
    text = HEAD + pv1({}) + pv2({3: "^Chest pain", 11: "4", 25: "1", 38: "A^Ambulance^HL70430"})
    encounter = only(mapped(text), "Encounter").resource
    assert encounter["reasonCode"] == [{"text": "Chest pain"}]
    assert encounter["length"] == {
        "value": 4, "unit": "days", "system": "http://unitsofmeasure.org", "code": "d",
    }  # fmt: skip
    assert encounter["priority"]["coding"] == [
        {"system": "http://terminology.hl7.org/CodeSystem/v3-ActPriority", "code": "EM",
         "display": "emergency"},
        {"system": V2 + "0217", "code": "1"},
    ]  # fmt: skip
    assert encounter["extension"] == [
        {"url": MODE_OF_ARRIVAL,
         "valueCoding": {"system": V2 + "0430", "code": "A", "display": "Ambulance"}}
    ]  # fmt: skip


def test_pv2_bad_values_are_warnings_not_data() -> None:
    result = mapped(HEAD + pv1({}) + pv2({11: "four", 25: "9"}))
    encounter = only(result, "Encounter").resource
    assert "length" not in encounter
    assert encounter["priority"] == {"text": "9"}
    assert [(w.code, w.segment, w.field) for w in result.warnings] == [
        (102, "PV2", 11),
        (103, "PV2", 25),
    ]


def test_pv1_pending_and_prior_temporary_locations() -> None:
    """IG PV1[Encounter]: PV1-42 pending location (status reserved) and PV1-43 prior
    temporary location (completed) besides PV1-3 (active) and PV1-6 (completed)."""
    text = HEAD + pv1({3: "W1^101^A^H", 6: "W1^100^A^H", 42: "W2^201^B^H", 43: "XR^1^^H"})
    result = mapped(text)
    places = only(result, "Encounter").resource["location"]
    named = [(p["location"]["display"], p["status"]) for p in places]
    assert named == [
        ("W1 101 A", "active"),
        ("W1 100 A", "completed"),
        ("W2 201 B", "reserved"),
        ("XR 1", "completed"),
    ]


def nk1(fields: dict[int, str]) -> str:
    values = {1: "1", 2: "Doe^Sam", 3: "SPO^Spouse^HL70063", **fields}
    return "NK1|" + "|".join(values.get(i, "") for i in range(1, max(values) + 1)) + "\n"


def test_nk1_identifiers_language_and_every_telecom_of_a_related_person() -> None:
    """IG NK1[RelatedPerson]: NK1-12 (employee number) and NK1-37 (SSN) are identifiers,
    NK1-20 communication.language, NK1-40 and NK1-41 telecoms (besides NK1-5/6/31)."""
    fields = {
        5: "^PRN^PH^^^555^1111111",
        12: "E77^^^ACME&1.2.9&ISO^EI",
        20: "es^Spanish^ISO639",
        37: "123-45-6789",
        40: "^PRN^CP^^^555^2222222",
        41: "^NET^Internet^sam@example.org",
    }
    person = only(mapped(HEAD + nk1(fields)), "RelatedPerson").resource
    identifiers = person["identifier"][1:]  # after the derived key
    assert identifiers[0]["value"] == "E77" and identifiers[0]["system"] == "urn:oid:1.2.9"
    assert [field_of(i) for i in identifiers] == ["NK1-12", "NK1-37"]
    assert unmarked(identifiers[1]) == {
        "type": {"coding": [{"system": V2 + "0203", "code": "SS",
                             "display": "Social Security number"}]},
        "system": "http://hl7.org/fhir/sid/us-ssn", "value": "123-45-6789",
    }  # fmt: skip
    assert person["communication"] == [
        {"language": {"coding": [{"system": "urn:ietf:bcp:47", "code": "es",
                                  "display": "Spanish"}]}}
    ]  # fmt: skip
    values = [c["value"] for c in person["telecom"]]
    assert values == ["555 1111111", "555 2222222", "sam@example.org"]


EXT = "http://hl7.org/fhir/StructureDefinition/"


def test_pid_mothers_maiden_name_religion_and_birth_time() -> None:
    """IG PID[Patient]: PID-6 -> patient-mothersMaidenName (valueString, XPN[string]: the
    family name; the extension is 0..1, so the first repetition), PID-17 -> patient-religion
    (valueCodeableConcept, table 0006), PID-7 with a time -> birthDate plus the
    patient-birthTime extension on it."""
    text = HEAD.replace(
        "PID|1||IGP^^^HOSP&1.2.3&ISO^MR||Ig^Pat\n",
        "PID|1||IGP^^^HOSP&1.2.3&ISO^MR||Ig^Pat|Smith^Ann~Jones|197003150830+0100"
        + "|" * 10
        + "CAT^Catholic^HL70006\n",
    )
    patient = only(mapped(text), "Patient")
    res = patient.resource
    assert res["birthDate"] == "1970-03-15"
    assert res["_birthDate"] == {
        "extension": [
            {"url": EXT + "patient-birthTime", "valueDateTime": "1970-03-15T08:30:00+01:00"}
        ]
    }
    extensions = {e["url"]: e for e in res["extension"]}
    assert extensions[EXT + "patient-mothersMaidenName"]["valueString"] == "Smith"
    assert [e["url"] for e in res["extension"]].count(EXT + "patient-mothersMaidenName") == 1
    assert extensions[EXT + "patient-religion"]["valueCodeableConcept"] == {
        "coding": [{"system": V2 + "0006", "code": "CAT", "display": "Catholic"}]
    }
    assert "_birthDate" not in patient.nulls


def test_pid_nulls_remove_birth_time_and_the_new_extensions() -> None:
    """A birth date without time clears a stored birth time; PID-6 / PID-17 / PID-7 sent as
    "" remove what they map to."""
    dated = HEAD.replace("||Ig^Pat\n", "||Ig^Pat||19700315\n")
    assert "_birthDate" in only(mapped(dated), "Patient").nulls
    nulled = HEAD.replace("||Ig^Pat\n", '||Ig^Pat|""|""' + "|" * 10 + '""\n')
    nulls = only(mapped(nulled), "Patient").nulls
    assert {"birthDate", "_birthDate"} <= nulls
    assert f"extension[{EXT}patient-mothersMaidenName]" in nulls
    assert f"extension[{EXT}patient-religion]" in nulls


def test_pid_12_county_is_never_dropped() -> None:
    """IG PID[Patient] PID-12: the district of the one address; with several addresses, or
    one naming another county (XAD.9), an address of its own (it was dropped)."""

    def addresses(pid11: str, county: str) -> list[dict[str, object]]:
        text = HEAD.replace("||Ig^Pat\n", f"||Ig^Pat||||||{pid11}|{county}\n")
        return [unmarked(a) for a in only(mapped(text), "Patient").resource["address"]]

    assert addresses("1 Main St^^Salem^OR", "Marion")[0]["district"] == "Marion"
    two = addresses("1 Main St^^Salem^OR~2 Oak Ave^^Albany^NY", "Marion")
    assert [a.get("district") for a in two] == [None, None, "Marion"]
    other = addresses("1 Main St^^Salem^OR^^^^^Polk", "Marion")
    assert [a.get("district") for a in other] == ["Polk", "Marion"]
    same = addresses("1 Main St^^Salem^OR^^^^^Marion", "Marion")
    assert [a.get("district") for a in same] == ["Marion"]
    assert addresses("", "Marion") == [{"district": "Marion"}]


def test_birth_time_is_stored_and_a_later_date_only_birth_date_removes_it(
    send: Send, client: httpx.Client
) -> None:
    """Through the door: the A01's birth time is stored on birthDate; an A08 that sends the
    birth date without a time removes it (the time belonged to the date as first sent)."""
    mrn = unique_id("B")
    first = er7(
        msh("ADT^A01^ADT_A01", unique_id()),
        f"PID|1||{mrn}^^^{AUTHORITY}^MR||Doe^Jo||197003150830+0100|F",
    )
    assert msa(send(first))[0] == "AA"
    [stored] = patients(client, mrn)
    assert stored["_birthDate"]["extension"][0]["valueDateTime"] == "1970-03-15T08:30:00+01:00"
    later = er7(
        msh("ADT^A08^ADT_A01", unique_id(), "20240601110000+0000"),
        f"PID|1||{mrn}^^^{AUTHORITY}^MR||Doe^Jo||19700316|F",
    )
    assert msa(send(later))[0] == "AA"
    [updated] = patients(client, mrn)
    assert updated["birthDate"] == "1970-03-16" and "_birthDate" not in updated


__all__ = ["send"]  # the fixture, shared with test_hl7_integrity
