"""The ADT events beyond admit/transfer/discharge, each after a realistic sequence on the
running server (POST /hl7/v2): ACK AA and the stored Encounter field by field, its
Provenance (activity = the trigger) and the message-level AuditEvent.

A06/A07 change the class of the same visit (found by MRG-5 when they renumber it); A12
cancels a transfer (PV1-3 back, the transfer's PV1-6 entry gone); A14/A27 pending admit and
its cancel; A38 cancels a pre-admit (A05); A21/A22 leave of absence and return (R4
Encounter.status onleave, the leave in statusHistory); a cancel without PV1-19.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sqlalchemy.engine import Engine

from tests.hl7_messages import AdtPatient, patient, segment  # noqa: F401  (fixture)
from tests.test_hl7_http import engine, hl7, server_root  # noqa: F401  (fixtures)
from tests.test_hl7_ingest import (
    err_fields,
    hl7_audit_events,
    msa,
    provenances_of,
    rows_for,
    search,
    unique_id,
)
from tests.test_hl7_live_mapping import visit_fields

__all__ = ["engine", "hl7", "patient", "server_root"]

V3_ACT = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
V2_0003 = "http://terminology.hl7.org/CodeSystem/v2-0003"


def locations(found: dict[str, Any]) -> list[tuple[str, str]]:
    """(Location reference, entry status) of the Encounter's locations, in order."""
    return [(e["location"]["reference"], e["status"]) for e in found.get("location", [])]


def check_recorded(
    client: httpx.Client, engine: Engine, control: str, trigger: str, found: dict[str, Any]
) -> None:
    """The message's Provenance names the Encounter version it wrote with the trigger as
    activity, and its AuditEvent has subtype ADT^<trigger>, outcome 0."""
    [row] = rows_for(engine, control)
    [provenance] = provenances_of(client, row.id)
    version = f"Encounter/{found['id']}/_history/{found['meta']['versionId']}"
    assert version in [t["reference"] for t in provenance["target"]]
    assert provenance["activity"]["coding"][0]["code"] == trigger
    assert provenance["activity"]["coding"][0]["system"] == V2_0003
    [event] = hl7_audit_events(engine, row.id)
    assert event["subtype"][0]["code"] == f"ADT^{trigger}" and event["outcome"] == "0"


def klass(found: dict[str, Any]) -> tuple[str, str]:
    return found["class"]["system"], found["class"]["code"]


def test_a04_then_a06_makes_the_outpatient_visit_an_inpatient_one(
    patient: AdtPatient,
    engine: Engine,  # noqa: F811
) -> None:
    start = "20261101090000+0000"
    patient.send("A04", "20261101090000", patient.fields(f2="O", f3="CLIN^^^HOSP", f44=start))
    registered = patient.encounter()
    assert registered["status"] == "planned" and klass(registered) == (V3_ACT, "AMB")
    control = patient.send("A06", "20261101120000", patient.fields(f3="W1^101^A^HOSP", f2="I"))
    changed = patient.encounter()
    assert changed["id"] == registered["id"]  # the same visit, not a new Encounter
    assert changed["status"] == "in-progress"
    assert klass(changed) == (V3_ACT, "IMP")
    assert changed["class"]["display"] == "inpatient encounter"
    assert changed["period"] == {"start": "2026-11-01T09:00:00+00:00"}
    assert [status for _, status in locations(changed)] == ["active"]
    assert len(patient.encounters()) == 1
    check_recorded(patient.client, engine, control, "A06", changed)


def test_a01_then_a07_makes_the_inpatient_visit_an_outpatient_one(
    patient: AdtPatient,
    engine: Engine,  # noqa: F811
) -> None:
    patient.send("A01", "20261101090000", patient.fields(f44="20261101090000+0000"))
    admitted = patient.encounter()
    assert admitted["class"]["code"] == "IMP"
    control = patient.send("A07", "20261102090000", patient.fields(f2="O"))
    changed = patient.encounter()
    assert changed["id"] == admitted["id"]
    assert changed["status"] == "in-progress" and changed["class"]["code"] == "AMB"
    assert changed["period"] == {"start": "2026-11-01T09:00:00+00:00"}
    check_recorded(patient.client, engine, control, "A07", changed)


@pytest.mark.parametrize("cancelled_destination_sent", [True, False])
def test_a01_a02_a12_puts_the_patient_back_where_he_was(
    patient: AdtPatient,
    engine: Engine,  # noqa: F811
    cancelled_destination_sent: bool,
) -> None:
    ward, other = f"{unique_id('W')}^101^A", f"{unique_id('X')}^202^B"
    patient.send("A01", "20261101090000", patient.fields(f3=ward, f44="20261101090000+0000"))
    before = locations(patient.encounter())
    patient.send("A02", "20261101100000", patient.fields(f3=other, f6=ward))
    moved = patient.encounter()
    assert [s for _, s in locations(moved)] == ["active", "completed"]
    moved_to = moved["location"][0]["location"]["reference"]
    # v2.5 3.3.12: PV1-3 the location before the transfer, PV1-6 the cancelled destination
    cancel = patient.fields(f3=ward, **({"f6": other} if cancelled_destination_sent else {}))
    control = patient.send("A12", "20261101103000", cancel)
    back = patient.encounter()
    assert back["id"] == moved["id"]
    assert back["status"] == "in-progress" and back["class"]["code"] == "IMP"
    assert locations(back) == before
    assert moved_to not in [ref for ref, _ in locations(back)]
    assert back["period"] == {"start": "2026-11-01T09:00:00+00:00"}
    check_recorded(patient.client, engine, control, "A12", back)


def test_a14_then_a27_cancels_the_pending_admission(
    patient: AdtPatient,
    engine: Engine,  # noqa: F811
) -> None:
    planned = patient.fields(f2="P", f44="20261110080000+0000")
    control = patient.send("A14", "20261101090000", planned)
    pending = patient.encounter()
    assert pending["status"] == "planned" and pending["class"]["code"] == "PRENC"
    assert pending["period"] == {"start": "2026-11-10T08:00:00+00:00"}
    check_recorded(patient.client, engine, control, "A14", pending)
    control = patient.send("A27", "20261102090000", patient.fields(f2="P"))
    cancelled = patient.encounter()
    assert cancelled["id"] == pending["id"] and cancelled["status"] == "cancelled"
    assert cancelled["period"] == pending["period"]
    check_recorded(patient.client, engine, control, "A27", cancelled)


def test_a14_without_a_visit_number_plans_an_encounter_by_the_visit_key(
    patient: AdtPatient,
) -> None:
    patient.send("A14", "20261101090000", {1: "1", 2: "P", 44: "20261110080000+0000"})
    [found] = patient.encounters()
    assert found["status"] == "planned" and found["class"]["code"] == "PRENC"


def test_a05_then_a38_cancels_the_pre_admission(
    patient: AdtPatient,
    engine: Engine,  # noqa: F811
) -> None:
    patient.send("A05", "20261101090000", patient.fields(f2="P"))
    assert patient.encounter()["status"] == "planned"
    control = patient.send("A38", "20261101100000", patient.fields(f2="P"))
    cancelled = patient.encounter()
    assert cancelled["status"] == "cancelled" and cancelled["class"]["code"] == "PRENC"
    check_recorded(patient.client, engine, control, "A38", cancelled)


def test_a21_and_a22_leave_of_absence_and_return(
    patient: AdtPatient,
    engine: Engine,  # noqa: F811
) -> None:
    patient.send("A01", "20261101090000", patient.fields(f44="20261101090000+0000"))
    control = patient.send("A21", "20261103090000", patient.fields())
    away = patient.encounter()
    assert away["status"] == "onleave" and away["class"]["code"] == "IMP"
    assert away["period"] == {"start": "2026-11-01T09:00:00+00:00"}
    check_recorded(patient.client, engine, control, "A21", away)
    control = patient.send("A22", "20261104090000", patient.fields())
    returned = patient.encounter()
    assert returned["id"] == away["id"] and returned["status"] == "in-progress"
    check_recorded(patient.client, engine, control, "A22", returned)


@pytest.mark.parametrize("trigger", ["A06", "A07", "A12", "A21", "A22"])
def test_an_update_event_without_a_visit_number_is_accepted_with_a_warning(
    patient: AdtPatient, trigger: str
) -> None:
    """Without PV1-19 these events cannot find the visit: AA, the patient updated, no
    Encounter made, and the ACK says why (ERR 101 warning at PV1-19)."""
    answer = patient.post(trigger, "20261101090000", {1: "1", 2: "I"})
    assert msa(answer.content)[0] == "AA"
    assert b"PV1^1^19" in answer.content and b"|W" in answer.content
    assert patient.encounters() == []


def renumbering(patient: AdtPatient, trigger: str, before: str, after: str, klass: str) -> bytes:
    """An A06/A07 giving the visit `before` the new number `after` (MRG-5 the prior one)."""
    mrg = segment("MRG", {1: f"{patient.mrn}^^^HOSP^MR", 5: f"{before}^^^HOSP^VN"})
    return patient.post(trigger, "20261101120000", visit_fields(after, f2=klass), mrg).content


@pytest.mark.parametrize("trigger", ["A06", "A07"])
def test_a_renumbered_visit_is_found_by_its_prior_number(patient: AdtPatient, trigger: str) -> None:
    """v2.5 3.3.6/3.3.7: an A06/A07 may give the visit a new number (PV1-19), the prior one
    in MRG-5. The Encounter of the prior number is changed and takes the new number (not a
    second Encounter); a re-send finds it again, and later messages find it by the new one."""
    before, after = patient.visit, unique_id("V")
    first_class, new_class = ("O", "I") if trigger == "A06" else ("I", "O")
    patient.send("A01", "20261101090000", visit_fields(before, f2=first_class))
    registered = patient.encounter(before)
    for _ in range(2):  # the same change re-sent (a new control id): nothing more
        assert msa(renumbering(patient, trigger, before, after, new_class))[0] == "AA"
    [changed] = patient.encounters()
    assert changed["id"] == registered["id"]
    assert [i["value"] for i in changed["identifier"]] == [after]
    assert changed["class"]["code"] == ("IMP" if trigger == "A06" else "AMB")
    assert search(patient.client, "Encounter", identifier=before) == []
    patient.send("A08", "20261101130000", visit_fields(after, f2=new_class))
    assert [e["id"] for e in patient.encounters()] == [registered["id"]]


def test_a_renumbering_that_names_two_visits_is_refused(patient: AdtPatient) -> None:
    """MRG-5 names one stored visit and PV1-19 another: which one to change is a guess, so
    AE (ERR 205 at PV1-19) and nothing changes."""
    before, after = unique_id("V"), unique_id("V")
    patient.send("A04", "20261101090000", visit_fields(before, f2="O"))
    patient.send("A04", "20261101091000", visit_fields(after, f2="O"))
    ack = renumbering(patient, "A06", before, after, "I")
    assert msa(ack)[0] == "AE"
    assert ("PV1^1^19", "205", "E") in err_fields(ack)
    assert {e["class"]["code"] for e in patient.encounters()} == {"AMB"}


def test_a_leave_of_absence_keeps_its_times_in_the_status_history(patient: AdtPatient) -> None:
    """A21 opens a leave in Encounter.statusHistory at EVN-6 (event occurred, else EVN-2),
    A22 closes it; a re-sent A22 and an A08 change nothing of it, a second leave is added,
    and a status another client recorded stays."""
    pv1 = patient.fields()
    patient.send("A01", "20261101090000", pv1)
    admitted = patient.encounter()
    theirs = {"status": "arrived", "period": {"start": "2026-11-01T08:30:00+00:00"}}
    body = {**{k: v for k, v in admitted.items() if k != "meta"}, "statusHistory": [theirs]}
    put = patient.client.put(f"/Encounter/{admitted['id']}", json=body)
    assert put.status_code == 200, put.text
    patient.send("A21", "20261103100000", pv1, occurred="20261103090000+0000")
    away = patient.encounter()
    assert away["status"] == "onleave"
    assert away["statusHistory"] == [
        theirs, {"status": "onleave", "period": {"start": "2026-11-03T09:00:00+00:00"}}
    ]  # fmt: skip
    first_leave = {"start": "2026-11-03T09:00:00+00:00", "end": "2026-11-04T09:00:00+00:00"}
    for _ in range(2):  # a re-sent return (new control id) changes nothing
        patient.send("A22", "20261104090000", pv1)
        back = patient.encounter()
        assert back["status"] == "in-progress"
        assert back["statusHistory"] == [theirs, {"status": "onleave", "period": first_leave}]
    patient.send("A08", "20261104100000", pv1)
    assert patient.encounter()["statusHistory"] == back["statusHistory"]
    patient.send("A21", "20261105090000", pv1)
    assert [e["period"] for e in patient.encounter()["statusHistory"][1:]] == [
        first_leave, {"start": "2026-11-05T09:00:00+00:00"}
    ]  # fmt: skip


# (cancel, the event it cancels, patient class): v2.5 ch. 3
CANCELLED = [("A11", "A01", "I"), ("A13", "A01", "I"), ("A27", "A14", "P"), ("A38", "A05", "P")]


@pytest.mark.parametrize(("trigger", "cancelled", "klass"), CANCELLED)
def test_a_cancel_without_a_visit_number_is_refused(
    patient: AdtPatient, trigger: str, cancelled: str, klass: str
) -> None:
    """A cancel naming no visit (PV1-19 and PV1-44 empty) cannot say which one it takes
    back: AE, ERR 101 at PV1-19, and nothing of the message is written (not even the
    Patient), rather than an AA that cancels nothing."""
    patient.send(cancelled, "20261101090000", patient.fields(f2=klass))
    answer = patient.post(trigger, "20261101100000", {1: "1", 2: klass})
    assert msa(answer.content)[0] == "AE"
    assert err_fields(answer.content) == [("PV1^1^19", "101", "E")]
    assert patient.encounter()["meta"]["versionId"] == "1"
    stranger = AdtPatient(patient.hl7, patient.client)
    assert msa(stranger.post(trigger, "20261101100000", {1: "1", 2: klass}).content)[0] == "AE"
    assert search(patient.client, "Patient", identifier=stranger.mrn) == []


@pytest.mark.parametrize(("trigger", "cancelled", "klass"), CANCELLED)
def test_a_cancel_finds_a_visit_admitted_without_a_number_by_its_admit_time(
    patient: AdtPatient, trigger: str, cancelled: str, klass: str
) -> None:
    """A visit admitted without PV1-19 is known by patient, class and admit time (PV1-44):
    a cancel without PV1-19 sending that PV1-44 changes that Encounter; another admit time
    finds none, and the cancel is refused (AE 204 at PV1-19) instead of making one."""
    admitted = {1: "1", 2: klass, 44: "20261101083000+0000"}
    patient.send(cancelled, "20261101090000", admitted)
    [before] = patient.encounters()
    patient.send(trigger, "20261101100000", admitted)
    [after] = patient.encounters()
    assert after["id"] == before["id"]
    assert after["status"] == ("in-progress" if trigger == "A13" else "cancelled")
    answer = patient.post(trigger, "20261101110000", {**admitted, 44: "20261101070000+0000"})
    assert msa(answer.content)[0] == "AE"
    assert err_fields(answer.content) == [("PV1^1^19", "204", "E")]
    assert [e["id"] for e in patient.encounters()] == [before["id"]]
