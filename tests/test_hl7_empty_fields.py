"""HL7 v2 "empty means no change" inside FHIR elements built from several fields.

An empty field leaves what is stored; ``""`` deletes it; a value replaces it (HL7 v2 chapter
2, docs/hl7v2.md "Applying"). Encounter.period (PV1-44/45), .hospitalization (PV1-5, 13, 14,
16, 36-38), .location (PV1-3/6/11/42/43) and .participant (PV1-7/8/9/17/52, PV2-13) are built
from several fields each, so an update merges them field by field: a discharge without PV1-44
keeps the admit time. So are the Patient's name, address, telecom and identifier lists (PID)
and the RelatedPerson's name, address and telecom (NK1), whose entries carry the field they
came from (urn:medisentinel:hl7v2-field). Checked through the real mapper, the door and the
running server.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from hl7_adapters.mapping.patient import PARTS as PATIENT_PARTS
from hl7_adapters.mapping.sources import field_of, unmarked
from tests.hl7_messages import AdtPatient, accepted, adt_message, patient, segment  # noqa: F401
from tests.test_hl7_http import hl7, post, server_root  # noqa: F401  (fixtures)
from tests.test_hl7_ingest import err_fields, msa, search, unique_id

__all__ = ["hl7", "patient", "server_root"]

ADMITTED = "20240301100000+0000"
DISCHARGED = "20240302100000+0000"


def test_a_discharge_without_admit_time_keeps_the_stored_one(patient: AdtPatient) -> None:
    patient.send("A01", "20240301100000", patient.fields(f44=ADMITTED))
    patient.send("A03", "20240302100000", patient.fields(f45=DISCHARGED))
    assert patient.encounter()["period"] == {
        "start": "2024-03-01T10:00:00+00:00",
        "end": "2024-03-02T10:00:00+00:00",
    }
    # "" deletes: the admit time goes, the discharge time stays
    patient.send("A03", "20240302110000", patient.fields(f44='""', f45=DISCHARGED))
    assert patient.encounter()["period"] == {"end": "2024-03-02T10:00:00+00:00"}


def message(trigger: str, mrn: str, when: str, pv1: dict[int, str], pv2: dict[int, str]) -> bytes:
    visit = [segment("PV1", pv1), *([segment("PV2", pv2)] if pv2 else [])]
    return adt_message(trigger, when, mrn, *visit)


MODE_OF_ARRIVAL = "http://hl7.org/fhir/StructureDefinition/encounter-modeOfArrival"
PLANNED = "http://hl7.org/fhir/5.0/StructureDefinition/extension-Encounter.planned"

# (segment, field, first value, second value, where the field lands in the Encounter):
# every PV1/PV2 field an update maps, one row each.
FIELDS: list[tuple[str, int, str, str, str]] = [
    ("PV1", 3, "W1^101^A", "W2^202^B", "location[PV1-3]"),
    ("PV1", 4, "R", "E", "type"),
    ("PV1", 5, "PRE1^^^HOSP", "PRE2^^^HOSP", "hospitalization.preAdmissionIdentifier"),
    ("PV1", 6, "W0^001^A", "W0^002^A", "location[PV1-6]"),
    ("PV1", 7, "D1^Smith^Ann", "D2^Jones^Bob", "participant[ATND]"),
    ("PV1", 8, "D3^Brown^Cy", "D4^Green^Di", "participant[REF]"),
    ("PV1", 9, "D5^White^Ed", "D6^Black^Flo", "participant[CON]"),
    ("PV1", 10, "MED", "SUR", "serviceType"),
    ("PV1", 11, "T1^301^A", "T1^302^A", "location[PV1-11]"),
    ("PV1", 13, "R", "N", "hospitalization.reAdmission"),
    ("PV1", 14, "7", "1", "hospitalization.admitSource"),
    ("PV1", 16, "VIP", "NO", "hospitalization.specialCourtesy"),
    ("PV1", 17, "D7^Gray^Gus", "D8^Rose^Hal", "participant[ADM]"),
    ("PV1", 36, "01", "02", "hospitalization.dischargeDisposition"),
    ("PV1", 37, "HOME&Home&HL70113", "SNF&Skilled nursing&HL70113", "hospitalization.destination"),
    ("PV1", 38, "V", "K", "hospitalization.dietPreference"),
    ("PV1", 42, "P1^401^A", "P1^402^A", "location[PV1-42]"),
    ("PV1", 43, "Q1^501^A", "Q1^502^A", "location[PV1-43]"),
    ("PV1", 44, "20240301100000+0000", "20240301090000+0000", "period.start"),
    ("PV1", 45, "20240305100000+0000", "20240306100000+0000", "period.end"),
    ("PV1", 50, "ALT1^^^HOSP", "ALT2^^^HOSP", "identifier[PV1-50]"),
    ("PV1", 52, "D9^Lee^Ida", "D10^Kim^Jo", "participant[PART]"),
    ("PV2", 3, "CHEST^Chest pain", "FALL^Fall", "reasonCode"),
    ("PV2", 8, "20240301090000+0000", "20240301080000+0000", f"extension[{PLANNED}StartDate]"),
    ("PV2", 9, "20240304090000+0000", "20240305080000+0000", f"extension[{PLANNED}EndDate]"),
    ("PV2", 11, "4", "5", "length"),
    ("PV2", 12, "First visit", "Second visit", "text"),
    ("PV2", 25, "2", "3", "priority"),
    ("PV2", 38, "A", "C", f"extension[{MODE_OF_ARRIVAL}]"),
]


LOCATION_FIELDS = {  # (status, temporary) of an Encounter.location entry -> its PV1 field
    ("active", False): "PV1-3",
    ("completed", False): "PV1-6",
    ("active", True): "PV1-11",
    ("reserved", False): "PV1-42",
    ("completed", True): "PV1-43",
}


def location_field(entry: dict) -> str | None:  # type: ignore[type-arg]
    temporary = "subject-locationClassification" in json.dumps(entry.get("extension"))
    return LOCATION_FIELDS.get((entry["status"], temporary))


def participant_type(entry: dict) -> str:  # type: ignore[type-arg]
    return str(entry["type"][0]["coding"][0]["code"])


def alternate_id(entry: dict) -> str:  # type: ignore[type-arg]
    return "PV1-50" if entry["value"].startswith("ALT") else "PV1-19"


def piece(resource: dict, path: str) -> object:  # type: ignore[type-arg]
    """What of the Encounter a row's field makes (None when nothing)."""
    key, bracket, name = path.partition("[")
    key, _, child = key.partition(".")
    value = resource.get(key)
    if bracket:
        kinds = {"location": location_field, "participant": participant_type,
                 "identifier": alternate_id}  # fmt: skip
        part = kinds.get(key, lambda e: e.get("url"))
        return [e for e in value or [] if part(e) == name.removesuffix("]")] or None
    if child:
        return (value or {}).get(child)
    return value


def rest(resource: dict, path: str) -> dict:  # type: ignore[type-arg]
    """The Encounter without the row's piece, meta and status (compared across updates)."""
    out = json.loads(json.dumps(resource))
    for drop in ("meta", "status"):
        out.pop(drop, None)
    key, bracket, name = path.partition("[")
    key, _, child = key.partition(".")
    if bracket:
        out[key] = [e for e in out.get(key) or [] if e not in (piece(resource, path) or [])]
    elif child:
        (out.get(key) or {}).pop(child, None)
    else:
        out.pop(key, None)
    return {k: v for k, v in out.items() if v not in ({}, [])}


Row = tuple[str, int, str, str, str]


def sent_again(
    http: httpx.Client, trigger: str, mrn: str, when: str, admission: dict[str, dict[int, str]],
    row: Row, value: str | None,
) -> None:  # fmt: skip
    """The admission's fields sent again in `trigger`, but the row's field is `value`
    (None: left empty)."""
    segment, number = row[0], row[1]
    fields = {seg: dict(values) for seg, values in admission.items()}
    del fields[segment][number]
    if value is not None:
        fields[segment][number] = value
    reply = post(http, message(trigger, mrn, when, fields["PV1"], fields["PV2"]))
    assert msa(reply.content)[0] == "AA", (row, reply.text)


@pytest.mark.parametrize("trigger", ["A08", "A02"])
@pytest.mark.parametrize("row", FIELDS, ids=[f"{s}-{n}" for s, n, *_ in FIELDS])
def test_each_field_empty_keeps_null_deletes_value_replaces(
    patient: AdtPatient, trigger: str, row: Row
) -> None:
    """For every mapped PV1/PV2 field of an update (A08) or a transfer (A02): sent empty, the
    Encounter is as it was; sent with another value, only its piece changes; sent as ""
    its piece goes and nothing else does (the other fields are sent again each time)."""
    path, hl7, mrn = row[4], patient.hl7, patient.mrn
    admission = {seg: {n: v for s, n, v, _, _ in FIELDS if s == seg} for seg in ("PV1", "PV2")}
    admission["PV1"].update({1: "1", 2: "I", 19: f"{patient.visit}^^^HOSP^VN"})
    answer = post(hl7, message("A01", mrn, "20240301100000", admission["PV1"], admission["PV2"]))
    assert msa(answer.content)[0] == "AA", answer.text
    stored = patient.encounter()
    assert piece(stored, path), (path, stored)

    sent_again(hl7, trigger, mrn, "20240302100000", admission, row, None)
    left = patient.encounter()
    assert piece(left, path) == piece(stored, path)
    assert rest(left, path) == rest(stored, path)

    sent_again(hl7, trigger, mrn, "20240303100000", admission, row, row[3])
    replaced = patient.encounter()
    assert piece(replaced, path) not in (None, piece(stored, path))
    assert rest(replaced, path) == rest(stored, path)

    sent_again(hl7, trigger, mrn, "20240304100000", admission, row, '""')
    nulled = patient.encounter()
    assert piece(nulled, path) is None, nulled
    assert rest(nulled, path) == rest(stored, path)


def test_an_update_without_discharge_time_keeps_a_discharged_visit_finished(
    patient: AdtPatient,
) -> None:
    patient.send("A01", "20240301100000", patient.fields(f44=ADMITTED))
    patient.send("A03", "20240302100000", patient.fields(f45=DISCHARGED))
    patient.send("A08", "20240302110000", patient.fields())  # PV1-45 empty
    after = patient.encounter()
    assert after["status"] == "finished"
    assert after["period"]["end"] == "2024-03-02T10:00:00+00:00"
    patient.send("A08", "20240302120000", patient.fields(f45='""'))  # discharge deleted
    after = patient.encounter()
    assert after["status"] == "in-progress" and "end" not in after["period"]


def test_a_merged_period_of_mixed_precision_is_kept_orderable(patient: AdtPatient) -> None:
    """A01 admits on a day (PV1-44 without time), the A03 sends only PV1-45 with a time on
    that day: stored start and new end cannot be ordered by R4's per-1, so the end is kept
    to the day with its value in originalText, as when one message sends both."""
    patient.send("A01", "20261122080000", patient.fields(f44="20261122"))
    patient.send("A03", "20261122153000", patient.fields(f45="202611221530-0500"))
    period = patient.encounter()["period"]
    assert period["start"] == period["end"] == "2026-11-22"
    [original] = period["_end"]["extension"]
    assert original["valueString"] == "2026-11-22T15:30:00-05:00"


def test_a_next_of_kin_update_without_start_date_keeps_it(
    hl7: httpx.Client,  # noqa: F811
    client: httpx.Client,
) -> None:
    """NK1-8 and NK1-9 (start, end date) are RelatedPerson.period: an NK1 sending only the
    end keeps the stored start."""
    mrn = unique_id("P")

    def nk1(trigger: str, when: str, dates: str) -> bytes:
        return adt_message(trigger, when, mrn, f"NK1|1|Roe^Ann|SPO^Spouse^HL70063|||||{dates}")

    for trigger, when, dates in (
        ("A01", "20240301100000", "20200101"),
        ("A08", "20240302100000", "|20240301"),  # NK1-8 empty, NK1-9 sent
    ):
        assert msa(post(hl7, nk1(trigger, when, dates)).content)[0] == "AA"
    [patient] = search(client, "Patient", identifier=mrn)
    [kin] = search(client, "RelatedPerson", patient=f"Patient/{patient['id']}")
    assert kin["period"] == {"start": "2020-01-01", "end": "2024-03-01"}


EXT = "http://hl7.org/fhir/StructureDefinition/"
SSN = "http://hl7.org/fhir/sid/us-ssn"
LIST_LIMIT = pytest.mark.xfail(
    strict=True,
    reason="a list built from several PID fields is replaced whole: its entries do not say "
    'which field made them (docs/hl7v2.md, Empty fields and "")',
)


def family_of(*names: str) -> Callable[[dict], bool]:  # type: ignore[type-arg]
    return lambda entry: entry.get("family") in names


def phone(use: str) -> Callable[[dict], bool]:  # type: ignore[type-arg]
    return lambda entry: entry.get("use") == use


def ssn(entry: dict) -> bool:  # type: ignore[type-arg]
    return entry.get("system") == SSN


# (PID field, first value, second value, element, which entries of a list the field makes)
PID_FIELDS: list[Any] = [
    (6, "Smith", "Jones", f"extension[{EXT}patient-mothersMaidenName]", None),
    (7, "19800101", "19800202", "birthDate", None),
    (8, "F", "M", "gender", None),
    (11, "1 Main St^^Town^ST^11111", "2 Oak Rd^^City^ST^22222", "address", None),
    (15, "en", "fr", "communication", None),
    (16, "M", "S", "maritalStatus", None),
    (17, "CAT^Catholic^HL70006", "JEW^Jewish^HL70006", f"extension[{EXT}patient-religion]", None),
    (23, "Springfield", "Shelbyville", f"extension[{EXT}patient-birthPlace]", None),
    (28, "FR^France", "DE^Germany", f"extension[{EXT}patient-nationality]", None),
    (29, "20240101", "20240102", "deceasedDateTime", None),
    # lists made by two fields each (name: PID-5 and PID-9; telecom: PID-13 and PID-14;
    # identifier: PID-3 and PID-19): sending one replaces the other's entries too
    pytest.param(5, "Doe^Jane", "Roe^Janet", "name", family_of("Doe", "Roe")),
    pytest.param(9, "Alias^Al", "Other^Ot", "name", family_of("Alias", "Other")),
    pytest.param(13, "(555)111-1111", "(555)222-2222", "telecom", phone("home")),
    pytest.param(14, "(555)333-3333", "(555)444-4444", "telecom", phone("work")),
    pytest.param(19, "123-45-6789", "987-65-4321", "identifier", ssn),
]


def pid_piece(resource: dict, element: str, mine: Any) -> Any:  # type: ignore[type-arg]
    key, bracket, url = element.partition("[")
    if bracket:
        return [e for e in resource.get(key) or [] if e["url"] == url[:-1]] or None
    if mine is not None:
        return [e for e in resource.get(key) or [] if mine(e)] or None
    return resource.get(key)


def pid_rest(resource: dict, element: str, mine: Any) -> dict:  # type: ignore[type-arg]
    out = {k: v for k, v in resource.items() if k != "meta"}
    key = element.partition("[")[0]
    if "[" in element or mine is not None:
        mine_now = pid_piece(resource, element, mine) or []
        out[key] = [e for e in out.get(key) or [] if e not in mine_now]
    else:
        out.pop(key, None)
    return {k: v for k, v in out.items() if v not in ({}, [])}


@pytest.mark.parametrize(("number", "first", "second", "element", "mine"), PID_FIELDS)
def test_each_pid_field_empty_keeps_null_deletes_value_replaces(
    hl7: httpx.Client,  # noqa: F811
    client: httpx.Client,
    number: int,
    first: str,
    second: str,
    element: str,
    mine: Any,
) -> None:
    """The same for the Patient of an A08: every other mapped PID field is sent again."""
    mrn = unique_id("P")
    values = {int(r.values[0]) if hasattr(r, "values") else r[0]: r for r in PID_FIELDS}
    pid = {n: (r.values if hasattr(r, "values") else r)[1] for n, r in values.items()}

    def sent(trigger: str, when: str, value: str | None) -> dict:  # type: ignore[type-arg]
        fields = {n: v for n, v in pid.items() if n != number}
        if value is not None:
            fields[number] = value
        accepted(hl7, adt_message(trigger, when, mrn, pid=fields))
        [patient] = search(client, "Patient", identifier=mrn)
        return patient

    stored = sent("A01", "20240301100000", first)
    assert pid_piece(stored, element, mine), stored
    left = sent("A08", "20240302100000", None)
    assert pid_piece(left, element, mine) == pid_piece(stored, element, mine)
    assert pid_rest(left, element, mine) == pid_rest(stored, element, mine)
    replaced = sent("A08", "20240303100000", second)
    assert pid_piece(replaced, element, mine) not in (None, pid_piece(stored, element, mine))
    assert pid_rest(replaced, element, mine) == pid_rest(stored, element, mine)
    nulled = sent("A08", "20240304100000", '""')
    assert pid_piece(nulled, element, mine) is None
    assert pid_rest(nulled, element, mine) == pid_rest(stored, element, mine)


@pytest.mark.parametrize("class_sent", ["", '""'])
def test_an_update_without_patient_class_keeps_the_stored_class(
    patient: AdtPatient, class_sent: str
) -> None:
    """PV1-2 is required by the mapping (Encounter.class is 1..1): left empty (or "", which
    cannot delete a required element) a new Encounter gets U (unknown), with a warning, but
    a stored one keeps its class, and its status."""
    patient.send("A01", "20240301100000", patient.fields(f44=ADMITTED))
    for trigger, when in (("A08", "20240302100000"), ("A02", "20240302110000")):
        answer = patient.post(trigger, when, patient.fields(f2=class_sent))
        assert msa(answer.content)[0] == "AA", answer.text
        assert err_fields(answer.content) == [("PV1^1^2", "101", "W")]
        after = patient.encounter()
        assert after["class"]["code"] == "IMP"
        assert after["status"] == "in-progress"


def pid_message(trigger: str, when: str, mrn: str, fields: dict[int, str]) -> bytes:
    return adt_message(trigger, when, mrn, pid=fields)


def test_each_list_entry_is_marked_with_its_field(
    hl7: httpx.Client,  # noqa: F811
    client: httpx.Client,
) -> None:
    """Every name, address, telecom and identifier entry carries the field it came from
    (urn:medisentinel:hl7v2-field), and the Patient so marked passed the server's validation."""
    mrn = unique_id("P")
    fields = {5: "Doe^Jane", 9: "Alias^Al", 11: "1 Main St^^Town^ST^11111", 12: "Cty"}
    fields |= {13: "(555)111-1111", 14: "(555)333-3333", 19: "123-45-6789"}
    assert msa(post(hl7, pid_message("A01", "20240301100000", mrn, fields)).content)[0] == "AA"
    [patient] = search(client, "Patient", identifier=mrn)
    assert {k: [field_of(e) for e in patient[k]] for k in PATIENT_PARTS if k in patient} == {
        "identifier": ["PID-3", "PID-19"],
        "name": ["PID-5", "PID-9"],
        "address": ["PID-11"],  # PID-12 is the district of the one address
        "telecom": ["PID-13", "PID-14"],
    }


def test_entries_stored_before_marks_are_neither_duplicated_nor_dropped(
    hl7: httpx.Client,  # noqa: F811
    client: httpx.Client,
) -> None:
    """A Patient stored before entries were marked (here: the A01's Patient written back
    without the marks, plus an e-mail another client added): an A08 sending the same PID-13
    and PID-14 takes each unmarked entry equal to a mapped one as that field's (replaced in
    place, marked, not doubled); an A08 changing PID-13 with PID-14 empty keeps the old
    unmarked entries it cannot tell apart (the work phone, the e-mail, the old home phone)."""
    mrn = unique_id("P")
    fields = {5: "Doe^Jane", 13: "(555)111-1111", 14: "(555)333-3333"}
    assert msa(post(hl7, pid_message("A01", "20240301100000", mrn, fields)).content)[0] == "AA"
    [patient] = search(client, "Patient", identifier=mrn)
    old = {k: v for k, v in patient.items() if k != "meta"}
    for key in ("identifier", "name", "telecom"):
        old[key] = [unmarked(e) for e in old[key]]
    email = {"system": "email", "value": "jane@example.org"}
    old["telecom"].append(email)
    written = client.put(f"/Patient/{patient['id']}", json=old)
    assert written.status_code == 200, written.text

    assert msa(post(hl7, pid_message("A08", "20240302100000", mrn, fields)).content)[0] == "AA"
    [again] = search(client, "Patient", identifier=mrn)
    assert [(unmarked(e), field_of(e)) for e in again["telecom"]] == [
        (old["telecom"][0], "PID-13"),
        (old["telecom"][1], "PID-14"),
        (email, None),
    ]
    assert [field_of(e) for e in again["name"]] == ["PID-5"]
    assert [field_of(e) for e in again["identifier"]] == ["PID-3"]

    # marked now: PID-13 changed with PID-14 empty replaces only the home phone
    changed = {5: "Doe^Jane", 13: "(555)222-2222"}
    assert msa(post(hl7, pid_message("A08", "20240303100000", mrn, changed)).content)[0] == "AA"
    [after] = search(client, "Patient", identifier=mrn)
    assert [(e["value"], field_of(e)) for e in after["telecom"]] == [
        ("(555)222-2222", "PID-13"),
        ("(555)333-3333", "PID-14"),
        (email["value"], None),
    ]


def test_an_unmarked_entry_unlike_every_mapped_one_is_kept(
    hl7: httpx.Client,  # noqa: F811
    client: httpx.Client,
) -> None:
    """An unmarked stored phone that no entry of the message equals cannot be told apart
    from another channel's: a change of PID-13 keeps it (it is not dropped)."""
    mrn = unique_id("P")
    fields = {5: "Doe^Jane", 13: "(555)111-1111"}
    assert msa(post(hl7, pid_message("A01", "20240301100000", mrn, fields)).content)[0] == "AA"
    [patient] = search(client, "Patient", identifier=mrn)
    old = {k: v for k, v in patient.items() if k != "meta"}
    old["telecom"] = [unmarked(e) for e in old["telecom"]]
    assert client.put(f"/Patient/{patient['id']}", json=old).status_code == 200
    changed = {5: "Doe^Jane", 13: "(555)222-2222"}
    assert msa(post(hl7, pid_message("A08", "20240302100000", mrn, changed)).content)[0] == "AA"
    [after] = search(client, "Patient", identifier=mrn)
    assert [field_of(e) for e in after["telecom"]] == [None, "PID-13"]
    assert after["telecom"][0] == old["telecom"][0]


# (NK1 field, first value, second value, RelatedPerson list): the lists built from several
# NK1 fields (name NK1-2/30, telecom NK1-5/6/31/40/41, address NK1-4/32)
NK1_FIELDS = [
    (2, "Roe^Ann", "Roe^Anna", "name"),
    (30, "Contact^Carl", "Contact^Cora", "name"),
    (4, "1 Kin St^^Town^ST", "2 Kin Rd^^City^ST", "address"),
    (32, "9 Care Ave^^Town^ST", "8 Care Ave^^City^ST", "address"),
    (5, "(555)510-0001", "(555)510-0002", "telecom"),
    (6, "(555)610-0001", "(555)610-0002", "telecom"),
    (31, "(555)710-0001", "(555)710-0002", "telecom"),
]


@pytest.mark.parametrize(("number", "first", "second", "element"), NK1_FIELDS)
def test_each_nk1_list_field_empty_keeps_null_deletes_value_replaces(
    hl7: httpx.Client,  # noqa: F811
    client: httpx.Client,
    number: int,
    first: str,
    second: str,
    element: str,
) -> None:
    """The RelatedPerson of an NK1: each field of its name, address and telecom lists left
    empty keeps its entries, a value replaces them, "" deletes them; the other fields'
    entries stay (every other NK1 field is sent again each time)."""
    mrn = unique_id("P")
    nk1 = {1: "1", 3: "SPO^Spouse^HL70063", **{n: v for n, v, _, _ in NK1_FIELDS}}
    mine = f"NK1-{number}"

    def sent(trigger: str, when: str, value: str | None) -> dict:  # type: ignore[type-arg]
        fields = {n: v for n, v in nk1.items() if n != number}
        if value is not None:
            fields[number] = value
        accepted(hl7, adt_message(trigger, when, mrn, segment("NK1", fields)))
        [patient] = search(client, "Patient", identifier=mrn)
        [kin] = search(client, "RelatedPerson", patient=f"Patient/{patient['id']}")
        return kin

    def piece(kin: dict) -> list:  # type: ignore[type-arg]
        return [e for e in kin.get(element) or [] if field_of(e) == mine]

    def rest(kin: dict) -> dict:  # type: ignore[type-arg]
        out = {k: v for k, v in kin.items() if k != "meta"}
        out[element] = [e for e in out.get(element) or [] if field_of(e) != mine]
        return {k: v for k, v in out.items() if v != []}

    stored = sent("A01", "20240301100000", first)
    assert piece(stored), stored
    left = sent("A08", "20240302100000", None)
    assert (piece(left), rest(left)) == (piece(stored), rest(stored))
    replaced = sent("A08", "20240303100000", second)
    assert piece(replaced) not in ([], piece(stored))
    assert rest(replaced) == rest(stored)
    nulled = sent("A08", "20240304100000", '""')
    assert (piece(nulled), rest(nulled)) == ([], rest(stored))


def test_a_resent_pid_with_every_list_writes_no_new_version(
    hl7: httpx.Client,  # noqa: F811
    client: httpx.Client,
) -> None:
    """The marked entries merged per field come back in their stored places: an A08 sending
    the A01's PID again writes no version (and none for the RelatedPerson of its NK1)."""
    mrn = unique_id("P")
    fields = {2: "ALT1^^^HOSP", 5: "Doe^Jane~Doe^J", 9: "Alias^Al", 12: "Cty"}
    fields |= {11: "1 Main St^^Town^ST~2 Oak Rd^^City^ST", 13: "(555)111-1111~(555)111-2222"}
    fields |= {14: "(555)333-3333", 19: "123-45-6789", 20: "D123^OR^20300101"}
    nk1 = "NK1|1|Roe^Ann|SPO^Spouse^HL70063|1 Kin St^^Town^ST|(555)510-0001|(555)610-0001\r"
    versions = []
    for trigger, when in (("A01", "20240301100000"), ("A08", "20240302100000")):
        body = pid_message(trigger, when, mrn, fields) + nk1.encode()
        assert msa(post(hl7, body).content)[0] == "AA"
        [patient] = search(client, "Patient", identifier=mrn)
        [kin] = search(client, "RelatedPerson", patient=f"Patient/{patient['id']}")
        versions.append((patient["meta"]["versionId"], kin["meta"]["versionId"]))
    assert versions == [("1", "1"), ("1", "1")]


def test_a_bare_identifier_stored_unmarked_is_the_mapped_one(
    hl7: httpx.Client,  # noqa: F811
    client: httpx.Client,
) -> None:
    """A Patient a REST client wrote with PID-3's identifier as a bare system and value (no
    type, assigner, mark): the A08 takes it as PID-3's (same system and value) and replaces
    it, instead of storing it twice. A phone is compared whole (the same number may be a
    home and a work phone), so a bare copy of PID-13's number is kept beside it."""
    mrn = unique_id("P")
    fields = {5: "Doe^Jane", 13: "(555)111-1111"}
    assert msa(post(hl7, pid_message("A01", "20240301100000", mrn, fields)).content)[0] == "AA"
    [patient] = search(client, "Patient", identifier=mrn)
    bare = {k: v for k, v in patient.items() if k != "meta"}
    for key in ("identifier", "telecom"):
        bare[key] = [{"system": e["system"], "value": e["value"]} for e in patient[key]]
    assert client.put(f"/Patient/{patient['id']}", json=bare).status_code == 200
    assert msa(post(hl7, pid_message("A08", "20240302100000", mrn, fields)).content)[0] == "AA"
    [after] = search(client, "Patient", identifier=mrn)
    assert after["identifier"] == patient["identifier"]
    assert after["telecom"] == bare["telecom"] + patient["telecom"]


def test_an_identifier_moved_to_another_field_is_stored_once(
    hl7: httpx.Client,  # noqa: F811
    client: httpx.Client,
) -> None:
    """An identifier stored from PID-4 and sent in PID-2 by an A08 leaving PID-4 empty is
    one identifier (system and value), now PID-2's: not kept twice."""
    mrn = unique_id("P")
    for trigger, when, field in (("A01", "20240301100000", 4), ("A08", "20240302100000", 2)):
        body = pid_message(trigger, when, mrn, {field: "ALT7^^^HOSP", 5: "Doe^Jane"})
        assert msa(post(hl7, body).content)[0] == "AA"
    [after] = search(client, "Patient", identifier=mrn)
    assert [(e["value"], field_of(e)) for e in after["identifier"]] == [
        (mrn, "PID-3"),
        ("ALT7", "PID-2"),  # in the place it was stored in
    ]
