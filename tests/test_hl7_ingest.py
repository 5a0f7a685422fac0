"""The ingest pipeline and the applier against the mapping contract (mapping/plan.py).

Each test hands `Hl7Ingest` the MappingResult it wants applied (a mapper that looks the
result up by the message's control id), so what is tested here is everything between a mapped
message and the ACK -- upsert/ensure/create, references, merges, ordering, duplicates,
failures, reprocess, the store, Provenance and audit -- on the live server's real door and
database, independently of the mapping's own field-by-field tables (tests/test_hl7_mapping_*).
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, select, text

from app.auth.grant import Grant
from app.context import RequestContext
from app.db import run_migrations, write_transaction
from app.main import create_app
from app.settings import Settings
from audit.events import HL7V2_EVENT
from audit.tables import audit_event
from hl7_adapters.ack import AckError
from hl7_adapters.er7 import Message, parse_message, parse_messages
from hl7_adapters.feeds import feed_identity
from hl7_adapters.ingest import ContextFor, Hl7Ingest
from hl7_adapters.mapping.plan import (
    MappingError,
    MappingResult,
    Merge,
    Planned,
    UnsupportedMessage,
)
from hl7_adapters.provenance import MESSAGE_SYSTEM
from hl7_adapters.tables import hl7_message
from tests.conftest import TEST_MASTER_KEY, LiveServer
from tests.helpers import server_env

SYSTEM = "urn:test:mrn"


# ---------------------------------------------------------------- helpers (used by the
# other HL7 test modules too)


def unique_id(prefix: str = "M") -> str:
    return f"{prefix}{uuid.uuid4().hex[:12].upper()}"


def adt(
    control_id: str,
    mrn: str,
    *,
    trigger: str = "A01",
    when: str = "20240101120000",
    family: str = "Doe",
    sender: str = "SND",
    msh15: str = "",
    msh16: str = "",
    version: str = "2.5.1",
) -> bytes:
    return (
        f"MSH|^~\\&|{sender}|SFAC|RCV|RFAC|{when}||ADT^{trigger}^ADT_A01|{control_id}|P|{version}"
        f"|||{msh15}|{msh16}\rEVN|{trigger}|{when}\r"
        f"PID|1||{mrn}^^^SFAC^MR||{family}^Jo||19700101|F\rPV1|1|I\r"
    ).encode()


def msa(ack: bytes) -> tuple[str, str]:
    parsed = parse_message(ack)
    return parsed.get("MSA-1"), parsed.get("MSA-2")


def err_fields(ack: bytes) -> list[tuple[str, str, str]]:
    """(location, HL7 error code, severity) of each ERR segment: ERR-2/3/4 from v2.5 on,
    before that the one field ERR-1 (segment^sequence^field^code&text), severity E."""
    parsed = parse_message(ack)
    found = []
    for s in parsed.segments("ERR"):
        if s.raw(2) or s.raw(3):
            found.append((s.raw(2), s.get("3.1"), s.get("4")))
        else:
            location = "^".join(v for v in (s.get("1.1"), s.get("1.2"), s.get("1.3")) if v)
            found.append((location, s.get("1.4.1"), "E"))
    return found


def rows_for(engine: Engine, control_id: str) -> list[Any]:
    with engine.connect() as conn:
        return list(
            conn.execute(
                select(hl7_message)
                .where(hl7_message.c.control_id == control_id)
                .order_by(hl7_message.c.received)
            )
        )


def search(client: httpx.Client, rtype: str, **params: str) -> list[dict[str, Any]]:
    found = client.get(f"/{rtype}", params=params)
    assert found.status_code == 200, found.text
    return [e["resource"] for e in found.json().get("entry", [])]


def hl7_audit_events(engine: Engine, message_id: str) -> list[dict[str, Any]]:
    """The message-level AuditEvents that name a message store id, oldest first."""
    with engine.connect() as conn:
        query = select(audit_event.c.content).order_by(audit_event.c.recorded)
        contents = conn.execute(query).scalars().all()
    events = [json.loads(bytes(c)) for c in contents if message_id.encode() in bytes(c)]
    return [e for e in events if e["subtype"][0]["system"] == HL7V2_EVENT]


def provenances_of(client: httpx.Client, message_id: str) -> list[dict[str, Any]]:
    return search(client, "Provenance", **{"entity:identifier": f"{MESSAGE_SYSTEM}|{message_id}"})


class PlannedMapper:
    """The mapping, as far as these tests are concerned: the result registered for the
    message's control id (a fresh copy: the pipeline may retry and must not mutate it)."""

    def __init__(self) -> None:
        self.results: dict[str, MappingResult | Exception] = {}

    def __call__(self, msg: Message) -> MappingResult:
        result = self.results[msg.control_id]
        if isinstance(result, Exception):
            raise result
        return copy.deepcopy(result)


def patient(mrn: str, mode: str = "upsert", **elements: Any) -> Planned:
    body = {"resourceType": "Patient", "identifier": [{"system": SYSTEM, "value": mrn}]}
    body.update(elements)
    return Planned(f"urn:uuid:{uuid.uuid4()}", body, mode, f"identifier={SYSTEM}|{mrn}")  # type: ignore[arg-type]


def named(mrn: str, family: str) -> Planned:
    return patient(mrn, name=[{"family": family}])


def observation(subject: Planned, code: str = "8867-4") -> Planned:
    body = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
        "subject": {"reference": subject.full_url},
        "valueQuantity": {"value": 72, "unit": "/min"},
    }
    return Planned(f"urn:uuid:{uuid.uuid4()}", body, "create")


def result(
    *planned: Planned, when: str | None = "2024-01-01T12:00:00Z", **extra: Any
) -> MappingResult:
    match = next((p.match for p in planned if p.resource_type == "Patient"), None)
    return MappingResult(list(planned), event_time=when, patient_match=match, **extra)


# ---------------------------------------------------------------- fixtures


@pytest.fixture
def mapper() -> PlannedMapper:
    return PlannedMapper()


@pytest.fixture
def ingest(live_server: LiveServer, mapper: PlannedMapper) -> Hl7Ingest:
    app = live_server.app
    return Hl7Ingest(app.state.service, app.state.audit, mapper=mapper)


@pytest.fixture
def identity(live_server: LiveServer) -> ContextFor:
    return feed_identity("hl7-test", address="127.0.0.1", base_url=live_server.base_url)


@pytest.fixture
def engine(live_server: LiveServer) -> Engine:
    return live_server.app.state.engine  # type: ignore[no-any-return]


@pytest.fixture
def send(ingest: Hl7Ingest, mapper: PlannedMapper, identity: ContextFor) -> Callable[..., bytes]:
    def send(raw: bytes, mapped: MappingResult | Exception | None = None, **options: Any) -> bytes:
        if mapped is not None:
            for msg in parse_messages(raw):
                mapper.results[msg.control_id] = mapped
        return ingest.handle(raw, channel="mllp", peer="127.0.0.1:1", ctx=identity, **options)

    return send


# ---------------------------------------------------------------- applying


def test_upsert_replaces_mapped_elements_removes_nulls_and_keeps_the_rest(
    send: Callable[..., bytes], client: httpx.Client, engine: Engine
) -> None:
    mrn, first, second = unique_id("P"), unique_id(), unique_id()
    created = patient(
        mrn, name=[{"family": "Doe"}], gender="female", birthDate="1970-01-01",
        telecom=[{"system": "phone", "value": "555"}],
    )  # fmt: skip
    assert msa(send(adt(first, mrn), result(created))) == ("AA", first)
    update = patient(mrn, name=[{"family": "Roe"}])
    update.nulls = frozenset({"telecom"})
    ack = send(adt(second, mrn, trigger="A08"), result(update, when="2024-02-01T00:00:00Z"))
    assert msa(ack) == ("AA", second)
    [stored] = search(client, "Patient", identifier=f"{SYSTEM}|{mrn}")
    assert stored["name"] == [{"family": "Roe"}]
    assert "telecom" not in stored
    assert stored["gender"] == "female" and stored["birthDate"] == "1970-01-01"
    assert stored["meta"]["versionId"] == "2"
    [row] = rows_for(engine, second)
    assert row.status == "accepted" and row.ack == ack
    assert json.loads(row.produced) == [f"Patient/{stored['id']}/_history/2"]
    [provenance] = provenances_of(client, row.id)
    assert provenance["id"] == row.provenance_id
    assert provenance["target"] == [{"reference": f"Patient/{stored['id']}/_history/2"}]
    assert provenance["activity"]["coding"][0]["code"] == "A08"
    assert provenance["agent"][0]["who"]["identifier"]["value"] == "SND"


def test_an_unchanged_upsert_writes_no_version_and_no_provenance(
    send: Callable[..., bytes], client: httpx.Client, engine: Engine
) -> None:
    mrn, first, second = unique_id("P"), unique_id(), unique_id()
    send(adt(first, mrn), result(patient(mrn, name=[{"family": "Same"}])))
    assert msa(send(adt(second, mrn), result(patient(mrn, name=[{"family": "Same"}]))))[0] == "AA"
    [stored] = search(client, "Patient", identifier=f"{SYSTEM}|{mrn}")
    assert stored["meta"]["versionId"] == "1"
    [row] = rows_for(engine, second)
    assert row.produced is None and row.provenance_id is None


def test_a_result_before_its_patient_lands_and_links_up_when_the_patient_arrives(
    send: Callable[..., bytes], client: httpx.Client
) -> None:
    mrn = unique_id("P")
    subject = patient(mrn, mode="ensure")
    assert msa(send(adt(unique_id(), mrn), result(subject, observation(subject))))[0] == "AA"
    [placeholder] = search(client, "Patient", identifier=f"{SYSTEM}|{mrn}")
    assert "name" not in placeholder  # ensure creates what the message identifies, no more
    [obs] = search(client, "Observation", subject=f"Patient/{placeholder['id']}")
    admitted = patient(mrn, name=[{"family": "Late"}], gender="male")
    assert msa(send(adt(unique_id(), mrn), result(admitted)))[0] == "AA"
    [stored] = search(client, "Patient", identifier=f"{SYSTEM}|{mrn}")
    assert stored["id"] == placeholder["id"] and stored["name"] == [{"family": "Late"}]
    assert obs["subject"] == {"reference": f"Patient/{stored['id']}"}
    # ensure on a known patient uses it unchanged
    again = patient(mrn, mode="ensure", name=[{"family": "Ignored"}])
    send(adt(unique_id(), mrn), result(again, observation(again)))
    [same] = search(client, "Patient", identifier=f"{SYSTEM}|{mrn}")
    assert same["name"] == [{"family": "Late"}] and same["meta"]["versionId"] == "2"


def test_an_older_message_does_not_overwrite_newer_data(
    send: Callable[..., bytes], client: httpx.Client, engine: Engine
) -> None:
    mrn, old = unique_id("P"), unique_id()
    send(adt(unique_id(), mrn), result(named(mrn, "March"), when="2024-03-01T00:00:00Z"))
    ack = send(adt(old, mrn, trigger="A08"), result(named(mrn, "February"), when="2024-02-01"))
    assert msa(ack)[0] == "AA"
    assert [(code, severity) for _, code, severity in err_fields(ack)] == [("0", "W")]
    [stored] = search(client, "Patient", identifier=f"{SYSTEM}|{mrn}")
    assert stored["name"] == [{"family": "March"}] and stored["meta"]["versionId"] == "1"
    [row] = rows_for(engine, old)
    assert row.status == "accepted" and row.produced is None
    send(adt(unique_id(), mrn, trigger="A08"), result(named(mrn, "April"), when="2024-04-01"))
    [stored] = search(client, "Patient", identifier=f"{SYSTEM}|{mrn}")
    assert stored["name"] == [{"family": "April"}]


def test_each_resource_of_a_message_keeps_its_own_clock(
    send: Callable[..., bytes], client: httpx.Client
) -> None:
    """A message's resources are checked against their own event times (read together):
    here the patient was written by a newer message and the visit by an older one."""
    mrn, visit = unique_id("P"), unique_id("V")

    def encounter(subject: Planned, status: str) -> Planned:
        body = {
            "resourceType": "Encounter",
            "status": status,
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "IMP"},
            "identifier": [{"system": SYSTEM, "value": visit}],
            "subject": {"reference": subject.full_url},
        }
        return Planned(f"urn:uuid:{uuid.uuid4()}", body, "upsert", f"identifier={SYSTEM}|{visit}")  # type: ignore[arg-type]

    first = named(mrn, "January")
    send(adt(unique_id(), mrn), result(first, encounter(first, "planned"), when="2024-01-01"))
    send(adt(unique_id(), mrn, trigger="A08"), result(named(mrn, "March"), when="2024-03-01"))
    middle = named(mrn, "February")
    ack = send(
        adt(unique_id(), mrn, trigger="A08"),
        result(middle, encounter(middle, "in-progress"), when="2024-02-01"),
    )
    assert msa(ack)[0] == "AA"
    assert [(code, severity) for _, code, severity in err_fields(ack)] == [("0", "W")]
    [stored] = search(client, "Patient", identifier=f"{SYSTEM}|{mrn}")
    assert stored["name"] == [{"family": "March"}]  # newer than this message: kept
    [visit_stored] = search(client, "Encounter", identifier=f"{SYSTEM}|{visit}")
    assert visit_stored["status"] == "in-progress"  # older than this message: updated


def test_an_upsert_whose_resource_changes_meanwhile_is_retried_and_loses_nothing(
    send: Callable[..., bytes],
    client: httpx.Client,
    live_server: LiveServer,
    monkeypatch: pytest.MonkeyPatch,
    is_postgres: bool,
) -> None:
    """The applier updates the version it read without reading it again: a REST update
    landing between that read and the write makes the write a 409, and the message is
    applied again on the new version (neither change is lost)."""
    if not is_postgres:
        pytest.skip("SQLite's write transaction excludes the concurrent update")
    mrn = unique_id("P")
    send(adt(unique_id(), mrn), result(patient(mrn, name=[{"family": "Before"}])))
    [stored] = search(client, "Patient", identifier=f"{SYSTEM}|{mrn}")
    service = live_server.app.state.service
    real_update, calls = service.update, []

    def update_after_a_concurrent_one(uow: Any, *args: Any, **kwargs: Any) -> Any:
        if uow.ctx.channel == "hl7":  # (the REST update below comes through here too)
            calls.append(args[0])
            if len(calls) == 1:  # another client changes the patient after the message read it
                changed = {**stored, "telecom": [{"system": "phone", "value": "555-0100"}]}
                assert client.put(f"/Patient/{stored['id']}", json=changed).status_code == 200
        return real_update(uow, *args, **kwargs)

    monkeypatch.setattr(service, "update", update_after_a_concurrent_one)
    ack = send(adt(unique_id(), mrn, trigger="A08"), result(named(mrn, "After")))
    assert msa(ack)[0] == "AA"
    assert calls == ["Patient", "Patient"]  # the first try failed on the stale version
    [final] = search(client, "Patient", identifier=f"{SYSTEM}|{mrn}")
    assert final["name"] == [{"family": "After"}] and final["meta"]["versionId"] == "3"
    assert final["telecom"] == [{"system": "phone", "value": "555-0100"}]


def test_a_message_matching_hundreds_of_resources_is_applied_and_resent_cleanly(
    send: Callable[..., bytes], client: httpx.Client
) -> None:
    """A device's ORU can carry hundreds of OBX, each matched by its identifier before the
    first write (more than one lookup statement takes: SQLite refuses a UNION of 500+)."""
    mrn, tag = unique_id("P"), unique_id("R")
    subject = patient(mrn, mode="ensure")

    def readings(value: int) -> MappingResult:
        planned = [subject]
        for i in range(520):
            body = {
                "resourceType": "Observation",
                "status": "final",
                "identifier": [{"system": SYSTEM, "value": f"{tag}-{i}"}],
                "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
                "subject": {"reference": subject.full_url},
                "valueQuantity": {"value": value, "unit": "/min"},
            }
            match = f"identifier={SYSTEM}|{tag}-{i}"
            planned.append(Planned(f"urn:uuid:{uuid.uuid4()}", body, "upsert", match))  # type: ignore[arg-type]
        return result(*planned)

    assert msa(send(adt(unique_id(), mrn, trigger="A01"), readings(70)))[0] == "AA"
    assert msa(send(adt(unique_id(), mrn, trigger="A01"), readings(71)))[0] == "AA"
    found = client.get("/Observation", params={"identifier": f"{SYSTEM}|{tag}-519"}).json()
    assert [e["resource"]["valueQuantity"]["value"] for e in found["entry"]] == [71]
    assert [e["resource"]["meta"]["versionId"] for e in found["entry"]] == ["2"]
    [subject_found] = search(client, "Patient", identifier=f"{SYSTEM}|{mrn}")
    total = client.get(
        "/Observation", params={"subject": f"Patient/{subject_found['id']}", "_summary": "count"}
    ).json()["total"]
    assert total == 520  # updated in place, none created twice


def test_merge_retires_links_and_later_messages_land_on_the_survivor(
    send: Callable[..., bytes], client: httpx.Client
) -> None:
    old, new = unique_id("OLD"), unique_id("NEW")
    send(adt(unique_id(), old), result(patient(old, name=[{"family": "Old"}])))
    send(adt(unique_id(), new), result(patient(new, name=[{"family": "New"}])))
    survivor = patient(new)
    merge = Merge(f"identifier={SYSTEM}|{new}", f"identifier={SYSTEM}|{old}", survivor.full_url)
    assert (
        msa(send(adt(unique_id(), new, trigger="A40"), result(survivor, merges=[merge])))[0] == "AA"
    )
    [retired] = search(client, "Patient", identifier=f"{SYSTEM}|{old}")
    [kept] = search(client, "Patient", identifier=f"{SYSTEM}|{new}")
    assert retired["active"] is False
    assert retired["link"] == [
        {"other": {"reference": f"Patient/{kept['id']}"}, "type": "replaced-by"}
    ]
    assert kept["link"] == [
        {"other": {"reference": f"Patient/{retired['id']}"}, "type": "replaces"}
    ]
    # a result naming the old identifier lands on the survivor
    named_old = patient(old, mode="ensure")
    send(adt(unique_id(), old), result(named_old, observation(named_old, "2345-7")))
    [obs] = search(
        client, "Observation", code="http://loinc.org|2345-7", subject=f"Patient/{kept['id']}"
    )
    assert obs["subject"]["reference"] == f"Patient/{kept['id']}"
    # an update naming the old identifier updates the survivor, keeping its identifiers
    send(adt(unique_id(), old, trigger="A08"), result(named(old, "Renamed"), when="2024-05-01"))
    [kept] = search(client, "Patient", identifier=f"{SYSTEM}|{new}")
    assert kept["name"] == [{"family": "Renamed"}]
    assert kept["identifier"] == [{"system": SYSTEM, "value": new}]
    [retired_again] = search(client, "Patient", identifier=f"{SYSTEM}|{old}")
    assert retired_again["meta"]["versionId"] == retired["meta"]["versionId"]


def test_merging_an_unknown_patient_keeps_its_identifier_pointing_at_the_survivor(
    send: Callable[..., bytes], client: httpx.Client
) -> None:
    old, new = unique_id("GONE"), unique_id("NEW")
    survivor = patient(new, name=[{"family": "Kept"}])
    merge = Merge(f"identifier={SYSTEM}|{new}", f"identifier={SYSTEM}|{old}", survivor.full_url)
    assert (
        msa(send(adt(unique_id(), new, trigger="A40"), result(survivor, merges=[merge])))[0] == "AA"
    )
    [placeholder] = search(client, "Patient", identifier=f"{SYSTEM}|{old}")
    [kept] = search(client, "Patient", identifier=f"{SYSTEM}|{new}")
    assert placeholder["active"] is False
    assert placeholder["link"][0]["other"]["reference"] == f"Patient/{kept['id']}"


def test_an_ambiguous_match_is_an_error_and_writes_nothing(
    send: Callable[..., bytes], client: httpx.Client, engine: Engine
) -> None:
    mrn, control = unique_id("TWIN"), unique_id()
    for _ in range(2):  # two patients with one identifier, made through the FHIR API
        body = {"resourceType": "Patient", "identifier": [{"system": SYSTEM, "value": mrn}]}
        assert client.post("/Patient", json=body).status_code == 201
    subject = patient(mrn, name=[{"family": "Which"}])
    ack = send(adt(control, mrn), result(subject, observation(subject, "1111-1")))
    assert msa(ack)[0] == "AE"
    assert [code for _, code, _ in err_fields(ack)] == ["205"]
    assert search(client, "Observation", code="http://loinc.org|1111-1") == []
    assert all("name" not in p for p in search(client, "Patient", identifier=f"{SYSTEM}|{mrn}"))
    [row] = rows_for(engine, control)
    assert row.status == "error" and "match" in row.error


def test_content_errors_give_AE_with_their_location_and_unsupported_messages_AR(
    send: Callable[..., bytes], engine: Engine
) -> None:
    bad, odd = unique_id(), unique_id()
    missing = AckError(101, "PID-3 patient identifier list is required", "E", "PID", 1, 3)
    ack = send(adt(bad, ""), MappingError([missing]))
    assert msa(ack) == ("AE", bad)
    assert err_fields(ack) == [("PID^1^3", "101", "E")]
    [row] = rows_for(engine, bad)
    assert row.status == "error" and "PID-3" in row.error
    ack = send(
        adt(odd, "1", trigger="Z99"), UnsupportedMessage(AckError(201, "ADT^Z99 is not mapped"))
    )
    assert msa(ack) == ("AR", odd)
    assert [code for _, code, _ in err_fields(ack)] == ["201"]
    assert rows_for(engine, odd)[0].status == "rejected"


def test_a_database_failure_answers_AE_207_and_keeps_the_raw_message(
    send: Callable[..., bytes], client: httpx.Client, engine: Engine, is_postgres: bool
) -> None:
    mrn, control = unique_id("P"), unique_id()
    raw = adt(control, mrn, family="FAILME")
    with failing_inserts(engine, is_postgres, "FAILME"):
        ack = send(raw, result(patient(mrn, name=[{"family": "FAILME"}])))
    assert msa(ack) == ("AE", control)
    assert [code for _, code, _ in err_fields(ack)] == ["207"]
    assert search(client, "Patient", identifier=f"{SYSTEM}|{mrn}") == []
    [row] = rows_for(engine, control)
    assert row.status == "error" and row.raw == raw and row.ack == ack and row.produced is None
    [event] = hl7_audit_events(engine, row.id)
    assert event["outcome"] == "8"


class failing_inserts:
    """A real database failure: a trigger that makes inserting a resource whose JSON holds
    `marker` fail with a runtime error (not a constraint: that would be a 409)."""

    def __init__(self, engine: Engine, is_postgres: bool, marker: str) -> None:
        self.engine, self.pg, self.marker = engine, is_postgres, marker

    def __enter__(self) -> None:
        with write_transaction(self.engine) as conn:
            if self.pg:
                conn.execute(text(
                    "CREATE FUNCTION hl7_test_fail() RETURNS trigger LANGUAGE plpgsql AS $$ "
                    f"BEGIN IF position('{self.marker}'::bytea in NEW.content) > 0 THEN "
                    "RAISE EXCEPTION 'test failure' USING ERRCODE = 'XX000'; END IF; "
                    "RETURN NEW; END $$"
                ))  # fmt: skip
                conn.execute(text(
                    "CREATE TRIGGER hl7_test_fail BEFORE INSERT ON resource "
                    "FOR EACH ROW EXECUTE FUNCTION hl7_test_fail()"
                ))  # fmt: skip
            else:
                conn.execute(text(
                    "CREATE TRIGGER hl7_test_fail BEFORE INSERT ON resource "
                    f"WHEN CAST(NEW.content AS TEXT) LIKE '%{self.marker}%' "
                    "BEGIN SELECT abs(-9223372036854775807 - 1); END"
                ))  # fmt: skip

    def __exit__(self, *exc: object) -> None:
        with write_transaction(self.engine) as conn:
            if self.pg:
                conn.execute(text("DROP TRIGGER hl7_test_fail ON resource"))
                conn.execute(text("DROP FUNCTION hl7_test_fail()"))
            else:
                conn.execute(text("DROP TRIGGER hl7_test_fail"))


def test_a_grant_without_the_scopes_gets_AR_and_nothing_is_written(
    ingest: Hl7Ingest, mapper: PlannedMapper, client: httpx.Client, live_server: LiveServer
) -> None:
    mrn, control = unique_id("P"), unique_id()
    subject = patient(mrn, name=[{"family": "Nope"}])
    mapper.results[control] = result(subject, observation(subject))
    grant = Grant.system("hl7-narrow", "system/Patient.cru")  # no Observation, no Provenance
    ctx = RequestContext(channel="hl7", client_id="hl7-narrow", grant=grant,
                         base_url=live_server.base_url)  # fmt: skip
    ack = ingest.handle(adt(control, mrn), channel="http", peer=None, ctx=ctx)
    assert msa(ack)[0] == "AR"
    assert search(client, "Patient", identifier=f"{SYSTEM}|{mrn}") == []
    assert rows_for(live_server.app.state.engine, control)[0].status == "rejected"


# ---------------------------------------------------------------- duplicates, retries, reprocess


def test_a_resent_message_gets_the_original_ack_and_writes_nothing(
    send: Callable[..., bytes], client: httpx.Client, engine: Engine
) -> None:
    mrn, control = unique_id("P"), unique_id()
    subject = patient(mrn, name=[{"family": "Once"}])
    raw = adt(control, mrn)
    first = send(raw, result(subject, observation(subject, "3333-3")))
    again = send(raw)
    assert again == first
    [stored] = search(client, "Patient", identifier=f"{SYSTEM}|{mrn}")
    assert stored["meta"]["versionId"] == "1"
    assert len(search(client, "Observation", subject=f"Patient/{stored['id']}")) == 1
    original, duplicate = rows_for(engine, control)
    assert (original.status, duplicate.status) == ("accepted", "duplicate")
    assert duplicate.duplicate_of == original.id and duplicate.produced is None
    assert (
        len(provenances_of(client, original.id)) == 1 and provenances_of(client, duplicate.id) == []
    )
    assert hl7_audit_events(engine, duplicate.id)[0]["outcome"] == "0"


def test_a_reused_control_id_with_other_content_is_processed_and_flagged(
    send: Callable[..., bytes], client: httpx.Client, engine: Engine
) -> None:
    control, first, second = unique_id(), unique_id("P"), unique_id("P")
    send(adt(control, first), result(patient(first)))
    ack = send(adt(control, second), result(patient(second)))
    assert msa(ack)[0] == "AA"
    assert err_fields(ack) == [("MSH^1^10", "205", "W")]
    assert len(search(client, "Patient", identifier=f"{SYSTEM}|{second}")) == 1
    earlier, later = rows_for(engine, control)
    assert later.status == "accepted" and later.control_id_reuse_of == earlier.id


def test_a_resent_failed_message_is_processed_again_and_supersedes_the_failure(
    send: Callable[..., bytes], client: httpx.Client, engine: Engine
) -> None:
    mrn, control = unique_id("P"), unique_id()
    raw = adt(control, mrn)
    assert msa(send(raw, RuntimeError("mapping bug")))[0] == "AE"
    assert msa(send(raw, result(patient(mrn))))[0] == "AA"
    failed, accepted = rows_for(engine, control)
    assert (failed.status, failed.superseded_by) == ("superseded", accepted.id)
    assert accepted.status == "accepted"
    assert len(search(client, "Patient", identifier=f"{SYSTEM}|{mrn}")) == 1


def test_reprocess_runs_a_stored_error_again_after_a_fix(
    ingest: Hl7Ingest, send: Callable[..., bytes], mapper: PlannedMapper,
    identity: ContextFor, client: httpx.Client, engine: Engine,
) -> None:  # fmt: skip
    mrn, control = unique_id("P"), unique_id()
    raw = adt(control, mrn)
    assert msa(send(raw, KeyError("PID")))[0] == "AE"
    [row] = rows_for(engine, control)
    assert row.status == "error" and "KeyError" in row.error
    mapper.results[control] = result(patient(mrn, name=[{"family": "Fixed"}]))  # the fix
    done = ingest.reprocess(row.id, identity)
    assert done["status"] == "accepted" and done["reprocess_count"] == 1 and done["error"] is None
    [stored] = search(client, "Patient", identifier=f"{SYSTEM}|{mrn}")
    assert done["produced"] == [f"Patient/{stored['id']}/_history/1"]
    assert provenances_of(client, row.id)[0]["id"] == done["provenance_id"]
    with pytest.raises(ValueError):
        ingest.reprocess(row.id, identity)  # accepted now: not in the queue
    with pytest.raises(LookupError):
        ingest.reprocess(uuid.uuid4().hex, identity)
    # the sender re-sends it: the answer is what is true now (accepted), not the old AE
    assert msa(send(raw))[0] == "AA"
    assert rows_for(engine, control)[-1].status == "duplicate"
    assert [e["outcome"] for e in hl7_audit_events(engine, row.id)][:2] == ["8", "0"]


def test_unreadable_input_is_rejected_and_kept(send: Callable[..., bytes], engine: Engine) -> None:
    junk = b"this is not HL7 " + uuid.uuid4().hex.encode()
    ack = send(junk)
    assert msa(ack)[0] == "AR"
    with engine.connect() as conn:
        [row] = conn.execute(select(hl7_message).where(hl7_message.c.raw == junk)).all()
    assert row.status == "rejected" and row.ack == ack
    assert hl7_audit_events(engine, row.id)[0]["subtype"][0]["code"] == "unreadable"


# ---------------------------------------------------------------- acknowledgment modes, batches


def test_enhanced_mode_answers_commit_acks_and_stays_silent_when_asked(
    send: Callable[..., bytes], engine: Engine
) -> None:
    always, never = unique_id(), unique_id()
    ack = send(adt(always, unique_id("P"), msh15="AL", msh16="NE"), result(patient(unique_id("P"))))
    assert msa(ack) == ("CA", always)
    silent = adt(never, unique_id("P"), msh15="NE", msh16="NE")
    assert send(silent, result(patient(unique_id("P")))) == b""
    [row] = rows_for(engine, never)
    assert row.status == "accepted" and row.ack is None
    assert msa(send(silent, always_ack=True)) == ("CA", never)  # HTTP always answers


def test_a_batch_gets_a_batch_of_acks_and_each_message_its_own_transaction(
    send: Callable[..., bytes], mapper: PlannedMapper, client: httpx.Client, engine: Engine
) -> None:
    good, bad, mrn = unique_id(), unique_id(), unique_id("P")
    mapper.results[good] = result(patient(mrn))
    mapper.results[bad] = MappingError([AckError(102, "bad date", "E", "PID", 1, 7)])
    batch = (
        b"FHS|^~\\&|SND|SFAC|RCV|RFAC|20240101||||F1\rBHS|^~\\&|SND|SFAC|RCV|RFAC|20240101||||B7\r"
        + adt(good, mrn) + adt(bad, "x") + b"BTS|2\rFTS|1\r"
    )  # fmt: skip
    reply = send(batch)
    lines = reply.split(b"\r")
    assert lines[0].startswith(b"FHS|^~\\&|RCV|RFAC|SND|SFAC|") and lines[0].endswith(b"|F1")
    assert lines[1].startswith(b"BHS|^~\\&|RCV|RFAC|SND|SFAC|") and lines[1].endswith(b"|B7")
    assert lines[-3:] == [b"BTS|2", b"FTS|1", b""]
    assert [msa(ack) for ack in _acks_in(reply)] == [("AA", good), ("AE", bad)]
    assert rows_for(engine, good)[0].status == "accepted"
    assert rows_for(engine, bad)[0].status == "error"
    assert len(search(client, "Patient", identifier=f"{SYSTEM}|{mrn}")) == 1


def _acks_in(reply: bytes) -> list[bytes]:
    text_ = reply.decode("latin-1")
    parts = text_.split("MSH|")[1:]
    return [("MSH|" + p.split("BTS|")[0]).encode("latin-1") for p in parts]


def test_every_message_leaves_a_message_level_audit_event(
    send: Callable[..., bytes], client: httpx.Client, engine: Engine
) -> None:
    mrn, control = unique_id("P"), unique_id()
    send(adt(control, mrn), result(patient(mrn)))
    [row] = rows_for(engine, control)
    [event] = hl7_audit_events(engine, row.id)
    [stored] = search(client, "Patient", identifier=f"{SYSTEM}|{mrn}")
    assert event["subtype"][0]["code"] == "ADT^A01" and event["outcome"] == "0"
    assert event["agent"][0]["who"]["identifier"]["value"] == "hl7-test:SND"
    assert event["agent"][0]["network"]["address"] == "127.0.0.1"
    what = [e["what"]["reference"] for e in event["entity"] if "what" in e]
    assert f"Patient/{stored['id']}/_history/1" in what and f"Patient/{stored['id']}" in what
    description = next(e["description"] for e in event["entity"] if "description" in e)
    assert row.id in description and control in description


@pytest.fixture(autouse=True)
def _no_leftover_trigger(engine: Engine, is_postgres: bool) -> Iterator[None]:
    yield
    with write_transaction(
        engine
    ) as conn:  # a failed test must not leave the failing trigger behind
        if is_postgres:
            conn.execute(text("DROP TRIGGER IF EXISTS hl7_test_fail ON resource"))
            conn.execute(text("DROP FUNCTION IF EXISTS hl7_test_fail()"))
        else:
            conn.execute(text("DROP TRIGGER IF EXISTS hl7_test_fail"))


def test_several_messages_in_one_frame_are_each_answered(
    send: Callable[..., bytes], mapper: PlannedMapper
) -> None:
    first, silent, last = unique_id(), unique_id(), unique_id()
    for control in (first, silent, last):
        mapper.results[control] = result(patient(unique_id("P")))
    frame_ = adt(first, "1") + adt(silent, "2", msh15="NE", msh16="NE") + adt(last, "3")
    reply = send(frame_)
    assert [msa(ack) for ack in _acks_in(reply)] == [("AA", first), ("AA", last)]


def test_control_characters_fhir_forbids_are_removed_with_a_warning(
    send: Callable[..., bytes], client: httpx.Client
) -> None:
    mrn = unique_id("P")
    dirty = patient(mrn + "\x00", name=[{"family": "Nul\x00l", "given": ["Bell\x07"]}])
    dirty.match = f"identifier={SYSTEM}%7C{mrn}%00"  # a NUL in the (URL-encoded) match too
    ack = send(adt(unique_id(), mrn), result(dirty))
    assert msa(ack)[0] == "AA"
    assert [(code, severity) for _, code, severity in err_fields(ack)] == [("102", "W")]
    [stored] = search(client, "Patient", identifier=f"{SYSTEM}|{mrn}")
    assert stored["name"] == [{"family": "Null", "given": ["Bell"]}]


def test_characters_xml_cannot_hold_are_removed_with_a_warning(
    send: Callable[..., bytes], client: httpx.Client
) -> None:
    """U+FFFE / U+FFFF: the door refuses them (a resource holding one could not be read as
    XML), so a feed's message is not refused whole for one stray character."""
    mrn = unique_id("P")
    dirty = patient(mrn, name=[{"family": "Non\uffffchar", "given": ["B\ufffe"]}])
    ack = send(adt(unique_id(), mrn), result(dirty))
    assert msa(ack)[0] == "AA"
    assert [(code, severity) for _, code, severity in err_fields(ack)] == [("102", "W")]
    [stored] = search(client, "Patient", identifier=f"{SYSTEM}|{mrn}")
    assert stored["name"] == [{"family": "Nonchar", "given": ["B"]}]


# ---------------------------------------------------------------- the operator's commands

CLI = [sys.executable, "-m", "app.cli"]


def cli(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = server_env(database_url, TEST_MASTER_KEY)
    return subprocess.run([*CLI, *args], env=env, capture_output=True, text=True, timeout=120)


def test_the_error_queue_and_reprocess_commands_after_a_mapping_fix(
    send: Callable[..., bytes], engine: Engine, database_url: str, client: httpx.Client
) -> None:
    """The deployed mapping had a bug (this test's mapper raises); the command runs the
    package's real mapping: the fix."""
    mrn, control = unique_id("P"), unique_id()
    assert msa(send(adt(control, mrn), RuntimeError("mapping bug")))[0] == "AE"
    [row] = rows_for(engine, control)
    listed = cli(database_url, "hl7", "errors", "--limit", "100000")
    assert listed.returncode == 0, listed.stderr
    [entry] = [e for e in json.loads(listed.stdout) if e["id"] == row.id]
    assert entry["status"] == "error" and "mapping bug" in entry["error"]
    assert entry["control_id"] == control and entry["sending_application"] == "SND"
    done = cli(database_url, "hl7", "reprocess", row.id)
    assert done.returncode == 0, done.stdout + done.stderr
    [outcome] = json.loads(done.stdout)
    assert outcome["status"] == "accepted" and outcome["reprocess_count"] == 1
    [found] = search(client, "Patient", identifier=mrn)
    assert f"Patient/{found['id']}/_history/1" in outcome["produced"]
    again = cli(database_url, "hl7", "reprocess", row.id)
    assert again.returncode == 2 and again.stderr.startswith("error:")
    assert row.id not in cli(database_url, "hl7", "errors", "--limit", "100000").stdout


def test_reprocess_errors_takes_the_whole_queue(tmp_path: Path) -> None:
    """On a database of its own, so that the queue is exactly what this test put in it."""
    url = f"sqlite:///{tmp_path / 'queue.db'}"
    run_migrations(url)
    app = create_app(Settings(database_url=url, master_key=TEST_MASTER_KEY, mllp_enabled=False))
    broken = Hl7Ingest(app.state.service, app.state.audit, mapper=PlannedMapper())  # no results
    identity = feed_identity("hl7-test", address=None, base_url="http://test/fhir")
    controls = [unique_id() for _ in range(3)]
    try:
        for control in controls:
            ack = broken.handle(
                adt(control, unique_id("P")), channel="mllp", peer=None, ctx=identity
            )
            assert msa(ack)[0] == "AE"
        broken.handle(b"no MSH here", channel="mllp", peer=None, ctx=identity)
    finally:
        app.state.engine.dispose()
    done = cli(url, "hl7", "reprocess", "--errors")
    assert done.returncode == 1, done.stderr  # the unreadable one is still not accepted
    outcomes = json.loads(done.stdout)
    assert sorted(o["status"] for o in outcomes) == ["accepted"] * 3 + ["rejected"]
    assert all(o["reprocess_count"] == 1 for o in outcomes)
    [left] = json.loads(cli(url, "hl7", "errors").stdout)
    assert left["status"] == "rejected" and left["error"].startswith("still unreadable")


# ---------------------------------------------------------------- re-applying accepted messages


def without_conditions(msg: Message) -> MappingResult:
    """The mapping as it was before DG1 was mapped: no Condition (references dropped)."""
    from hl7_adapters.ingest import default_mapper
    from hl7_adapters.optional import within_grant

    return within_grant(default_mapper(msg), None)  # no grant: supplementary types left out


def admission_with_diagnosis(control: str, mrn: str, visit: str, when: str) -> bytes:
    return (
        f"MSH|^~\\&|SND|SFAC|RCV|RFAC|{when}+0000||ADT^A01^ADT_A01|{control}|P|2.5.1\r"
        f"EVN|A01|{when}+0000\rPID|1||{mrn}^^^SFAC^MR||Doe^Jo||19700101|F\r"
        f"PV1|1|I|||||||||||||||||{visit}^^^SFAC^VN\r"
        "DG1|1||I10.9^Essential hypertension^I10|||A\r"
    ).encode()


def test_reprocess_accepted_reapplies_with_todays_mapping_without_duplicates(
    live_server: LiveServer, engine: Engine, database_url: str, client: httpx.Client
) -> None:
    """A message accepted before DG1 was mapped gets its Condition by `hl7 reprocess
    --accepted ID`; a second run changes nothing (no duplicate, no new version); both runs
    are audited. Only error/rejected messages could be rerun before."""
    app = live_server.app
    old = Hl7Ingest(app.state.service, app.state.audit, mapper=without_conditions)
    identity = feed_identity("hl7-test", address=None, base_url=live_server.base_url)
    mrn, control, visit = unique_id("P"), unique_id(), unique_id("V")
    raw = admission_with_diagnosis(control, mrn, visit, "20240301100000")
    assert msa(old.handle(raw, channel="mllp", peer=None, ctx=identity))[0] == "AA"
    [row] = rows_for(engine, control)
    [found] = search(client, "Patient", identifier=mrn)
    subject = f"Patient/{found['id']}"
    assert search(client, "Condition", subject=subject) == []
    refused = cli(database_url, "hl7", "reprocess", row.id)  # without --accepted: as before
    assert refused.returncode == 2 and "--accepted" in refused.stderr
    for run_number in (1, 2):
        done = cli(database_url, "hl7", "reprocess", "--accepted", row.id)
        assert done.returncode == 0, done.stdout + done.stderr
        [outcome] = json.loads(done.stdout)
        assert outcome["status"] == "accepted" and outcome["reapplied"] is True
        assert outcome["reprocess_count"] == run_number
        [condition] = search(client, "Condition", subject=subject)
        assert condition["code"]["coding"][0]["code"] == "I10.9"
        assert condition["meta"]["versionId"] == "1"  # the second run wrote nothing new
        assert len(search(client, "Patient", identifier=mrn)) == 1
        assert len(search(client, "Encounter", identifier=visit)) == 1
    assert f"Condition/{condition['id']}/_history/1" in outcome["produced"]
    assert outcome["produced"][0].startswith("Patient/")  # the first run's list is kept
    events = hl7_audit_events(engine, row.id)
    assert len(events) == 3  # received, then each re-application


def test_reprocess_accepted_by_date_range_leaves_what_would_be_created_again(
    tmp_path: Path,
) -> None:
    """`--accepted --since/--until` takes the accepted messages received in the window; one
    whose mapping would create a resource again (a visit with neither number nor time) is
    left alone and reported (exit 1); the others are re-applied once each."""
    url = f"sqlite:///{tmp_path / 'reapply.db'}"
    run_migrations(url)
    app = create_app(Settings(database_url=url, master_key=TEST_MASTER_KEY, mllp_enabled=False))
    old = Hl7Ingest(app.state.service, app.state.audit, mapper=without_conditions)
    identity = feed_identity("hl7-test", address=None, base_url="http://test/fhir")
    try:
        for n in range(2):
            raw = admission_with_diagnosis(unique_id(), f"M{n}", f"V{n}", "20240301100000")
            assert msa(old.handle(raw, channel="mllp", peer=None, ctx=identity))[0] == "AA"
        timeless = (  # no PV1-19, no EVN, no MSH-7: the Encounter is created every time
            f"MSH|^~\\&|SND|SFAC|RCV|RFAC|||ADT^A01^ADT_A01|{unique_id()}|P|2.5.1\r"
            "PID|1||M9^^^SFAC^MR||Doe^Jo\rPV1|1|I\r"
        ).encode()
        assert msa(old.handle(timeless, channel="mllp", peer=None, ctx=identity))[0] == "AA"
    finally:
        app.state.engine.dispose()
    assert cli(url, "hl7", "reprocess", "--since", "2000-01-01").returncode == 2  # no --accepted
    assert cli(url, "hl7", "reprocess", "--accepted", "--since", "next week").returncode == 2
    empty = cli(url, "hl7", "reprocess", "--accepted", "--since", "2000", "--until", "2001")
    assert empty.returncode == 0 and json.loads(empty.stdout) == []
    for _ in range(2):
        done = cli(url, "hl7", "reprocess", "--accepted", "--since", "2000-01-01")
        assert done.returncode == 1, done.stderr  # the timeless one is not re-applied
        outcomes = json.loads(done.stdout)
        assert [o["reapplied"] for o in outcomes] == [True, True, False]
        assert "Encounter again" in outcomes[2]["reason"]
    app = create_app(Settings(database_url=url, master_key=TEST_MASTER_KEY, mllp_enabled=False))
    try:
        with app.state.engine.connect() as conn:
            counts = dict(
                conn.execute(
                    text(
                        "SELECT resource_type, count(*) FROM resource "
                        "WHERE resource_type IN ('Condition', 'Encounter', 'Patient') "
                        "GROUP BY resource_type"
                    )
                ).all()
            )
    finally:
        app.state.engine.dispose()
    assert counts == {"Condition": 2, "Encounter": 3, "Patient": 3}
