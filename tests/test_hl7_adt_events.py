"""The ADT events beyond admit/transfer/discharge, each after a realistic sequence on the
running server (POST /hl7/v2): ACK AA and the stored Encounter field by field, its
Provenance (activity = the trigger) and the message-level AuditEvent.

A06/A07 change the class of the same visit; A12 cancels a transfer (PV1-3 back, the
transfer's PV1-6 entry gone); A14/A27 pending admit and its cancel; A38 cancels a
pre-admit (A05); A21/A22 leave of absence and return (R4 Encounter.status onleave).
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sqlalchemy.engine import Engine

from tests.hl7_messages import accepted, adt_message, segment
from tests.test_hl7_http import engine, hl7, post, server_root  # noqa: F401  (fixtures)
from tests.test_hl7_ingest import (
    err_fields,
    hl7_audit_events,
    msa,
    provenances_of,
    rows_for,
    search,
    unique_id,
)
from tests.test_hl7_live_mapping import adt, encounter, visit_fields

__all__ = ["engine", "hl7", "server_root"]

V3_ACT = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
V2_0003 = "http://terminology.hl7.org/CodeSystem/v2-0003"


def send(http: httpx.Client, trigger: str, mrn: str, when: str, pv1: dict[int, str]) -> str:
    """Post one ADT, assert AA; returns its control id."""
    control = unique_id()
    answer = post(http, adt(trigger, control, mrn, when, pv1))
    assert answer.status_code == 200, answer.text
    assert msa(answer.content) == ("AA", control), answer.content
    return control


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


def encounters_of(client: httpx.Client, mrn: str) -> list[dict[str, Any]]:
    [patient] = search(client, "Patient", identifier=mrn)
    return search(client, "Encounter", subject=f"Patient/{patient['id']}")


def test_a04_then_a06_makes_the_outpatient_visit_an_inpatient_one(
    hl7: httpx.Client,  # noqa: F811
    client: httpx.Client,
    engine: Engine,  # noqa: F811
) -> None:
    mrn, visit = unique_id("P"), unique_id("V")
    start = "20261101090000+0000"
    send(
        hl7, "A04", mrn, "20261101090000", visit_fields(visit, f2="O", f3="CLIN^^^HOSP", f44=start)
    )
    registered = encounter(client, visit)
    assert registered["status"] == "planned" and klass(registered) == (V3_ACT, "AMB")
    control = send(
        hl7, "A06", mrn, "20261101120000", visit_fields(visit, f3="W1^101^A^HOSP", f2="I")
    )
    changed = encounter(client, visit)
    assert changed["id"] == registered["id"]  # the same visit, not a new Encounter
    assert changed["status"] == "in-progress"
    assert klass(changed) == (V3_ACT, "IMP")
    assert changed["class"]["display"] == "inpatient encounter"
    assert changed["period"] == {"start": "2026-11-01T09:00:00+00:00"}
    assert [status for _, status in locations(changed)] == ["active"]
    assert len(encounters_of(client, mrn)) == 1
    check_recorded(client, engine, control, "A06", changed)


def test_a01_then_a07_makes_the_inpatient_visit_an_outpatient_one(
    hl7: httpx.Client,  # noqa: F811
    client: httpx.Client,
    engine: Engine,  # noqa: F811
) -> None:
    mrn, visit = unique_id("P"), unique_id("V")
    send(hl7, "A01", mrn, "20261101090000", visit_fields(visit, f44="20261101090000+0000"))
    admitted = encounter(client, visit)
    assert admitted["class"]["code"] == "IMP"
    control = send(hl7, "A07", mrn, "20261102090000", visit_fields(visit, f2="O"))
    changed = encounter(client, visit)
    assert changed["id"] == admitted["id"]
    assert changed["status"] == "in-progress" and changed["class"]["code"] == "AMB"
    assert changed["period"] == {"start": "2026-11-01T09:00:00+00:00"}
    check_recorded(client, engine, control, "A07", changed)


@pytest.mark.parametrize("cancelled_destination_sent", [True, False])
def test_a01_a02_a12_puts_the_patient_back_where_he_was(
    hl7: httpx.Client,  # noqa: F811
    client: httpx.Client,
    engine: Engine,  # noqa: F811
    cancelled_destination_sent: bool,
) -> None:
    mrn, visit = unique_id("P"), unique_id("V")
    ward, other = f"{unique_id('W')}^101^A", f"{unique_id('X')}^202^B"
    admit = visit_fields(visit, f3=ward, f44="20261101090000+0000")
    send(hl7, "A01", mrn, "20261101090000", admit)
    before = locations(encounter(client, visit))
    send(hl7, "A02", mrn, "20261101100000", visit_fields(visit, f3=other, f6=ward))
    moved = encounter(client, visit)
    assert [s for _, s in locations(moved)] == ["active", "completed"]
    moved_to = moved["location"][0]["location"]["reference"]
    # v2.5 3.3.12: PV1-3 the location before the transfer, PV1-6 the cancelled destination
    cancel = visit_fields(visit, f3=ward, **({"f6": other} if cancelled_destination_sent else {}))
    control = send(hl7, "A12", mrn, "20261101103000", cancel)
    back = encounter(client, visit)
    assert back["id"] == moved["id"]
    assert back["status"] == "in-progress" and back["class"]["code"] == "IMP"
    assert locations(back) == before
    assert moved_to not in [ref for ref, _ in locations(back)]
    assert back["period"] == {"start": "2026-11-01T09:00:00+00:00"}
    check_recorded(client, engine, control, "A12", back)


def test_a14_then_a27_cancels_the_pending_admission(
    hl7: httpx.Client,  # noqa: F811
    client: httpx.Client,
    engine: Engine,  # noqa: F811
) -> None:
    mrn, visit = unique_id("P"), unique_id("V")
    planned = visit_fields(visit, f2="P", f44="20261110080000+0000")
    control = send(hl7, "A14", mrn, "20261101090000", planned)
    pending = encounter(client, visit)
    assert pending["status"] == "planned" and pending["class"]["code"] == "PRENC"
    assert pending["period"] == {"start": "2026-11-10T08:00:00+00:00"}
    check_recorded(client, engine, control, "A14", pending)
    control = send(hl7, "A27", mrn, "20261102090000", visit_fields(visit, f2="P"))
    cancelled = encounter(client, visit)
    assert cancelled["id"] == pending["id"] and cancelled["status"] == "cancelled"
    assert cancelled["period"] == pending["period"]
    check_recorded(client, engine, control, "A27", cancelled)


def test_a14_without_a_visit_number_plans_an_encounter_by_the_visit_key(
    hl7: httpx.Client,  # noqa: F811
    client: httpx.Client,
) -> None:
    mrn = unique_id("P")
    fields = {1: "1", 2: "P", 44: "20261110080000+0000"}
    send(hl7, "A14", mrn, "20261101090000", fields)
    [found] = encounters_of(client, mrn)
    assert found["status"] == "planned" and found["class"]["code"] == "PRENC"


def test_a05_then_a38_cancels_the_pre_admission(
    hl7: httpx.Client,  # noqa: F811
    client: httpx.Client,
    engine: Engine,  # noqa: F811
) -> None:
    mrn, visit = unique_id("P"), unique_id("V")
    send(hl7, "A05", mrn, "20261101090000", visit_fields(visit, f2="P"))
    assert encounter(client, visit)["status"] == "planned"
    control = send(hl7, "A38", mrn, "20261101100000", visit_fields(visit, f2="P"))
    cancelled = encounter(client, visit)
    assert cancelled["status"] == "cancelled" and cancelled["class"]["code"] == "PRENC"
    check_recorded(client, engine, control, "A38", cancelled)


def test_a21_and_a22_leave_of_absence_and_return(
    hl7: httpx.Client,  # noqa: F811
    client: httpx.Client,
    engine: Engine,  # noqa: F811
) -> None:
    mrn, visit = unique_id("P"), unique_id("V")
    send(hl7, "A01", mrn, "20261101090000", visit_fields(visit, f44="20261101090000+0000"))
    control = send(hl7, "A21", mrn, "20261103090000", visit_fields(visit))
    away = encounter(client, visit)
    assert away["status"] == "onleave" and away["class"]["code"] == "IMP"
    assert away["period"] == {"start": "2026-11-01T09:00:00+00:00"}
    check_recorded(client, engine, control, "A21", away)
    control = send(hl7, "A22", mrn, "20261104090000", visit_fields(visit))
    returned = encounter(client, visit)
    assert returned["id"] == away["id"] and returned["status"] == "in-progress"
    check_recorded(client, engine, control, "A22", returned)


@pytest.mark.parametrize("trigger", ["A06", "A07", "A12", "A21", "A22"])
def test_an_update_event_without_a_visit_number_is_accepted_with_a_warning(
    hl7: httpx.Client,  # noqa: F811
    client: httpx.Client,
    trigger: str,
) -> None:
    """Without PV1-19 these events cannot find the visit: AA, the patient updated, no
    Encounter made, and the ACK says why (ERR 101 warning at PV1-19)."""
    mrn, control = unique_id("P"), unique_id()
    answer = post(hl7, adt(trigger, control, mrn, "20261101090000", {1: "1", 2: "I"}))
    assert msa(answer.content)[0] == "AA"
    assert b"PV1^1^19" in answer.content and b"|W" in answer.content
    assert encounters_of(client, mrn) == []


@pytest.mark.parametrize("trigger", ["A06", "A07"])
def test_a_renumbered_visit_is_found_by_its_prior_number(
    hl7: httpx.Client,  # noqa: F811
    client: httpx.Client,
    engine: Engine,  # noqa: F811
    trigger: str,
) -> None:
    """v2.5 3.3.6/3.3.7: an A06/A07 may give the visit a new number (PV1-19), the prior one
    in MRG-5. The Encounter of the prior number is changed and takes the new number (not a
    second Encounter); a re-send finds it again, and later messages find it by the new one."""
    mrn, before, after = unique_id("P"), unique_id("V"), unique_id("V")
    first_class, new_class = ("O", "I") if trigger == "A06" else ("I", "O")
    send(hl7, "A01", mrn, "20261101090000", visit_fields(before, f2=first_class))
    registered = encounter(client, before)
    mrg = segment("MRG", {1: f"{mrn}^^^HOSP^MR", 5: f"{before}^^^HOSP^VN"})
    pv1 = segment("PV1", visit_fields(after, f2=new_class))
    change = adt_message(trigger, "20261101120000", mrn, mrg, pv1)
    for _ in range(2):  # the same change re-sent (a new control id): nothing more
        accepted(hl7, change.replace(b"|P|2.5", b"X|P|2.5", 1))
    [changed] = encounters_of(client, mrn)
    assert changed["id"] == registered["id"]
    assert [i["value"] for i in changed["identifier"]] == [after]
    assert changed["class"]["code"] == ("IMP" if trigger == "A06" else "AMB")
    assert search(client, "Encounter", identifier=before) == []
    send(hl7, "A08", mrn, "20261101130000", visit_fields(after, f2=new_class))
    assert [e["id"] for e in encounters_of(client, mrn)] == [registered["id"]]


def test_a_renumbering_that_names_two_visits_is_refused(
    hl7: httpx.Client,  # noqa: F811
    client: httpx.Client,
) -> None:
    """MRG-5 names one stored visit and PV1-19 another: which one to change is a guess, so
    AE (ERR 205 at PV1-19) and nothing changes."""
    mrn, before, after = unique_id("P"), unique_id("V"), unique_id("V")
    send(hl7, "A04", mrn, "20261101090000", visit_fields(before, f2="O"))
    send(hl7, "A04", mrn, "20261101091000", visit_fields(after, f2="O"))
    change = adt_message(
        "A06", "20261101120000", mrn, segment("MRG", {5: f"{before}^^^HOSP^VN"}),
        segment("PV1", visit_fields(after, f2="I")),
    )  # fmt: skip
    answer = post(hl7, change)
    assert msa(answer.content)[0] == "AE"
    assert ("PV1^1^19", "205", "E") in err_fields(answer.content)
    assert {e["class"]["code"] for e in encounters_of(client, mrn)} == {"AMB"}


def test_a_leave_of_absence_keeps_its_times_in_the_status_history(
    hl7: httpx.Client,  # noqa: F811
    client: httpx.Client,
) -> None:
    """A21 opens a leave in Encounter.statusHistory at EVN-6 (event occurred, else EVN-2),
    A22 closes it; a re-sent A22 and an A08 change nothing of it, a second leave is added,
    and a status another client recorded stays."""
    mrn, visit = unique_id("P"), unique_id("V")
    pv1 = segment("PV1", visit_fields(visit))

    def event(trigger: str, recorded: str, occurred: str = "") -> None:
        evn = f"EVN|{trigger}|{recorded}+0000||||{occurred}"
        body = adt_message(trigger, recorded, mrn, pv1).replace(
            f"EVN|{trigger}|{recorded}+0000".encode(), evn.encode()
        )
        accepted(hl7, body)

    event("A01", "20261101090000")
    admitted = encounter(client, visit)
    theirs = {"status": "arrived", "period": {"start": "2026-11-01T08:30:00+00:00"}}
    body = {**{k: v for k, v in admitted.items() if k != "meta"}, "statusHistory": [theirs]}
    put = client.put(f"/Encounter/{admitted['id']}", json=body)
    assert put.status_code == 200, put.text
    event("A21", "20261103100000", occurred="20261103090000+0000")
    away = encounter(client, visit)
    assert away["status"] == "onleave"
    assert away["statusHistory"] == [
        theirs, {"status": "onleave", "period": {"start": "2026-11-03T09:00:00+00:00"}}
    ]  # fmt: skip
    first_leave = {"start": "2026-11-03T09:00:00+00:00", "end": "2026-11-04T09:00:00+00:00"}
    for _ in range(2):  # a re-sent return (new control id) changes nothing
        event("A22", "20261104090000")
        back = encounter(client, visit)
        assert back["status"] == "in-progress"
        assert back["statusHistory"] == [theirs, {"status": "onleave", "period": first_leave}]
    event("A08", "20261104100000")
    assert encounter(client, visit)["statusHistory"] == back["statusHistory"]
    event("A21", "20261105090000")
    assert [e["period"] for e in encounter(client, visit)["statusHistory"][1:]] == [
        first_leave, {"start": "2026-11-05T09:00:00+00:00"}
    ]  # fmt: skip


# (cancel, the event it cancels, patient class): v2.5 ch. 3
CANCELLED = [("A11", "A01", "I"), ("A13", "A01", "I"), ("A27", "A14", "P"), ("A38", "A05", "P")]


@pytest.mark.parametrize(("trigger", "cancelled", "klass"), CANCELLED)
def test_a_cancel_without_a_visit_number_is_refused(
    hl7: httpx.Client,  # noqa: F811
    client: httpx.Client,
    trigger: str,
    cancelled: str,
    klass: str,
) -> None:
    """A cancel naming no visit (PV1-19 and PV1-44 empty) cannot say which one it takes
    back: AE, ERR 101 at PV1-19, and nothing of the message is written (not even the
    Patient), rather than an AA that cancels nothing."""
    mrn, visit = unique_id("P"), unique_id("V")
    send(hl7, cancelled, mrn, "20261101090000", visit_fields(visit, f2=klass))
    answer = post(hl7, adt(trigger, unique_id(), mrn, "20261101100000", {1: "1", 2: klass}))
    assert msa(answer.content)[0] == "AE"
    assert err_fields(answer.content) == [("PV1^1^19", "101", "E")]
    assert encounter(client, visit)["meta"]["versionId"] == "1"
    other = unique_id("P")
    answer = post(hl7, adt(trigger, unique_id(), other, "20261101100000", {1: "1", 2: klass}))
    assert msa(answer.content)[0] == "AE"
    assert search(client, "Patient", identifier=other) == []


@pytest.mark.parametrize(("trigger", "cancelled", "klass"), CANCELLED)
def test_a_cancel_finds_a_visit_admitted_without_a_number_by_its_admit_time(
    hl7: httpx.Client,  # noqa: F811
    client: httpx.Client,
    trigger: str,
    cancelled: str,
    klass: str,
) -> None:
    """A visit admitted without PV1-19 is known by patient, class and admit time (PV1-44):
    a cancel without PV1-19 sending that PV1-44 changes that Encounter; another admit time
    finds none, and the cancel is refused (AE 204 at PV1-19) instead of making one."""
    mrn = unique_id("P")
    admitted = {1: "1", 2: klass, 44: "20261101083000+0000"}
    send(hl7, cancelled, mrn, "20261101090000", admitted)
    [before] = encounters_of(client, mrn)
    send(hl7, trigger, mrn, "20261101100000", admitted)
    [after] = encounters_of(client, mrn)
    assert after["id"] == before["id"]
    assert after["status"] == ("in-progress" if trigger == "A13" else "cancelled")
    elsewhen = {**admitted, 44: "20261101070000+0000"}
    answer = post(hl7, adt(trigger, unique_id(), mrn, "20261101110000", elsewhen))
    assert msa(answer.content)[0] == "AE"
    assert err_fields(answer.content) == [("PV1^1^19", "204", "E")]
    assert [e["id"] for e in encounters_of(client, mrn)] == [before["id"]]
