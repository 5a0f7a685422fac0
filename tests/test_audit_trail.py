"""Each kind of access leaves exactly the expected AuditEvent: who, what, which patient, how it
ended. Each test acts as its own freshly registered client, then reads the trail through the
FHIR API (as the test suite's backend client, which holds system/AuditEvent.rs)."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

import httpx
import pytest
from sqlalchemy import text

from app.db import write_transaction
from tests.conftest import LiveServer
from tests.smart_helpers import create_resource, register_client

CLIENT = "urn:medisentinel:client"
BALP = "https://profiles.ihe.net/ITI/BALP/StructureDefinition/"


@dataclass
class Caller:
    client_id: str
    http: httpx.Client


@pytest.fixture
def caller(live_server: LiveServer, base_url: str) -> Iterator[Any]:
    made: list[httpx.Client] = []

    def make(scope: str) -> Caller:
        auth = live_server.app.state.auth
        registered = register_client(auth, "backend", scope, jwks={"keys": []})
        token = auth.local_token(registered.name, scope)["access_token"]
        http = httpx.Client(
            base_url=base_url,
            headers={"Authorization": f"Bearer {token}", "Accept": "application/fhir+json"},
            timeout=30,
        )
        made.append(http)
        return Caller(registered.client_id, http)

    yield make
    for http in made:
        http.close()


def events_of(client: httpx.Client, client_id: str) -> list[dict[str, Any]]:
    """The caller's AuditEvents, oldest first."""
    found = client.get(
        "AuditEvent",
        params={"agent": f"{CLIENT}|{client_id}", "_sort": "date", "_count": "200"},
    )
    # `agent` is a reference parameter: `:identifier` finds agents named by identifier.
    if found.status_code != 200 or not found.json().get("entry"):
        found = client.get(
            "AuditEvent",
            params={"agent:identifier": f"{CLIENT}|{client_id}", "_sort": "date", "_count": "200"},
        )
    assert found.status_code == 200, found.text
    return [e["resource"] for e in found.json().get("entry", [])]


def subtype(event: dict[str, Any]) -> str:
    return str(event["subtype"][0]["code"])


def entity_refs(event: dict[str, Any], role: str) -> list[str]:
    return [
        e["what"]["reference"]
        for e in event.get("entity", [])
        if e["role"]["code"] == role and "what" in e
    ]


def query_of(event: dict[str, Any]) -> str | None:
    for entity in event.get("entity", []):
        if entity["role"]["code"] == "24" and "query" in entity:
            return base64.b64decode(entity["query"]).decode()
    return None


def client_agent(event: dict[str, Any]) -> dict[str, Any]:
    return next(a for a in event["agent"] if a["type"]["coding"][0]["code"] == "110153")


@pytest.fixture
def patient_with_observation(client: httpx.Client) -> tuple[str, str]:
    patient = create_resource(client, {"resourceType": "Patient", "name": [{"family": "Audit"}]})
    observation = create_resource(
        client,
        {
            "resourceType": "Observation",
            "status": "final",
            "code": {"text": "heart rate"},
            "subject": {"reference": f"Patient/{patient}"},
        },
    )
    return patient, observation


def test_a_read_is_recorded_with_the_resource_the_patient_and_the_client(
    caller: Any, client: httpx.Client, patient_with_observation: tuple[str, str]
) -> None:
    patient, observation = patient_with_observation
    me = caller("system/Observation.rs")
    assert me.http.get(f"Observation/{observation}").status_code == 200
    [event] = events_of(client, me.client_id)
    assert (subtype(event), event["action"], event["outcome"]) == ("read", "R", "0")
    assert event["type"]["code"] == "rest"
    assert entity_refs(event, "4") == [f"Observation/{observation}/_history/1"]
    assert entity_refs(event, "1") == [f"Patient/{patient}"]
    agent = client_agent(event)
    assert agent["who"]["identifier"]["value"] == me.client_id
    assert agent["requestor"] is True
    assert agent["network"]["address"] == "127.0.0.1"
    assert event["source"]["observer"]["display"] == "MediSentinel"
    observer = event["source"]["observer"]["identifier"]
    assert observer == {"system": "urn:medisentinel:server", "value": event["source"]["site"]}
    # `source` finds the events a server recorded (BALP: source.observer names the server)
    by_source = client.get(
        "AuditEvent",
        params={"source:identifier": f"urn:medisentinel:server|{observer['value']}",
                "_id": event["id"]},
    ).json()  # fmt: skip
    assert [e["resource"]["id"] for e in by_source.get("entry", [])] == [event["id"]]
    elsewhere = client.get(
        "AuditEvent",
        params={"source:identifier": "urn:medisentinel:server|https://other.example/fhir",
                "_id": event["id"]},
    ).json()  # fmt: skip
    assert not elsewhere.get("entry")
    # A reference value matches nothing (the observer has none), and the statement says so.
    as_reference = client.get("AuditEvent", params={"source": observer["value"],
                                                    "_id": event["id"]}).json()  # fmt: skip
    assert not as_reference.get("entry")
    rest = client.get("metadata").json()["rest"][0]
    audit = next(r for r in rest["resource"] if r["type"] == "AuditEvent")
    note = next(p for p in audit["searchParam"] if p["name"] == "source")["documentation"]
    assert f"source:identifier={observer['system']}|" in note
    # one patient concerned: BALP's PatientRead (a Read whose patient entity is 1..1)
    assert event["meta"]["profile"] == [BALP + "IHE.BasicAudit.PatientRead"]


def test_a_search_records_the_query_and_every_patient_concerned(
    caller: Any, client: httpx.Client
) -> None:
    code = uuid.uuid4().hex
    patients = [
        create_resource(client, {"resourceType": "Patient", "name": [{"family": f"P{i}"}]})
        for i in range(3)
    ]
    for pid in patients:
        create_resource(
            client,
            {
                "resourceType": "Observation",
                "status": "final",
                "code": {"coding": [{"system": "urn:t", "code": code}]},
                "subject": {"reference": f"Patient/{pid}"},
            },
        )
    me = caller("system/Observation.rs")
    found = me.http.get("Observation", params={"code": f"urn:t|{code}"})
    assert found.status_code == 200 and found.json()["total"] == 3
    [event] = events_of(client, me.client_id)
    # a query executes (BALP Query, action E); several patients: not PatientQuery (1..1)
    assert (subtype(event), event["action"], event["outcome"]) == ("search-type", "E", "0")
    assert event["meta"]["profile"] == [BALP + "IHE.BasicAudit.Query"]
    assert sorted(entity_refs(event, "1")) == sorted(f"Patient/{p}" for p in patients)
    assert unquote(query_of(event) or "") == f"code=urn:t|{code}"
    assert entity_refs(event, "4") == []  # a query lists patients, not every resource


def test_a_one_patient_search_and_a_history_are_patient_queries_executed(
    caller: Any, client: httpx.Client, patient_with_observation: tuple[str, str]
) -> None:
    """BALP: a query of one patient's data is a PatientQuery with action E; history listings
    are queries too; a refused query claims no profile (BALP's are for successes)."""
    patient, observation = patient_with_observation
    me = caller("system/Observation.rs")
    assert me.http.get("Observation", params={"subject": f"Patient/{patient}"}).status_code == 200
    assert me.http.get(f"Observation/{observation}/_history").status_code == 200
    assert me.http.get("Patient", params={"_id": patient}).status_code == 403
    found = events_of(client, me.client_id)
    assert [(subtype(e), e["action"], e["outcome"]) for e in found] == [
        ("search-type", "E", "0"),
        ("history-instance", "E", "0"),
        ("search-type", "E", "4"),
    ]
    assert [e["meta"].get("profile") for e in found] == [
        [BALP + "IHE.BasicAudit.PatientQuery"],
        [BALP + "IHE.BasicAudit.PatientQuery"],
        None,
    ]
    searches = client.get("AuditEvent", params={"action": "E", "subtype": "search-type",
                                                "agent-name": me.client_id})  # fmt: skip
    assert searches.status_code == 200 and searches.json()["total"] == 2


def test_history_listings_record_their_criteria_and_no_empty_query(
    caller: Any, client: httpx.Client, patient_with_observation: tuple[str, str]
) -> None:
    """BALP: the query entity holds what was asked for; a listing with no criteria has no
    `query` element (a FHIR string or base64Binary is never empty)."""
    _, observation = patient_with_observation
    me = caller("system/Observation.rs")
    since = "2020-01-01T00:00:00Z"
    assert me.http.get("Observation/_history", params={"_since": since}).status_code == 200
    assert me.http.get(f"Observation/{observation}/_history").status_code == 200
    assert me.http.get("Observation").status_code == 200
    typed, instance, everything = events_of(client, me.client_id)
    assert subtype(typed) == "history-type"
    assert unquote(query_of(typed) or "").startswith("_since=2020-01-01T00:00:00")
    for event in (instance, everything):
        [entity] = [e for e in event["entity"] if e["role"]["code"] == "24"]
        assert entity.get("query", "missing") == "missing", entity


def test_writes_are_recorded_with_their_actions(caller: Any, client: httpx.Client) -> None:
    me = caller("system/Patient.cruds")
    created = me.http.post("Patient", json={"resourceType": "Patient", "active": True})
    assert created.status_code == 201
    pid = created.json()["id"]
    body = {"resourceType": "Patient", "id": pid, "active": False}
    assert me.http.put(f"Patient/{pid}", json=body).status_code == 200
    patch = [{"op": "replace", "path": "/active", "value": True}]
    headers = {"Content-Type": "application/json-patch+json"}
    assert (
        me.http.patch(
            f"Patient/{pid}",
            content=str(patch).replace("'", '"').replace("True", "true"),
            headers=headers,
        ).status_code
        == 200
    )
    assert me.http.delete(f"Patient/{pid}").status_code in (200, 204)
    events = events_of(client, me.client_id)
    assert [(subtype(e), e["action"], e["outcome"]) for e in events] == [
        ("create", "C", "0"),
        ("update", "U", "0"),
        ("patch", "U", "0"),
        ("delete", "D", "0"),
    ]
    # each version written; for the delete, the version deleted (whose data it was)
    assert [entity_refs(e, "4") for e in events] == [
        [f"Patient/{pid}/_history/{n}"] for n in (1, 2, 3, 3)
    ]
    assert all(entity_refs(e, "1") == [pid and f"Patient/{pid}"] for e in events)


def test_deleting_a_patients_observation_records_the_patient(
    caller: Any, client: httpx.Client, patient_with_observation: tuple[str, str]
) -> None:
    patient, observation = patient_with_observation
    me = caller("system/Observation.cruds")
    assert me.http.delete(f"Observation/{observation}").status_code in (200, 204)
    [event] = events_of(client, me.client_id)
    assert (subtype(event), event["action"]) == ("delete", "D")
    assert entity_refs(event, "4") == [f"Observation/{observation}/_history/1"]
    assert entity_refs(event, "1") == [f"Patient/{patient}"]


def test_each_entry_of_a_transaction_is_recorded(caller: Any, client: httpx.Client) -> None:
    me = caller("system/Patient.cruds system/Observation.cruds")
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": "urn:uuid:11111111-1111-1111-1111-111111111111",
                "resource": {"resourceType": "Patient", "active": True},
                "request": {"method": "POST", "url": "Patient"},
            },
            {
                "resource": {
                    "resourceType": "Observation",
                    "status": "final",
                    "code": {"text": "t"},
                    "subject": {"reference": "urn:uuid:11111111-1111-1111-1111-111111111111"},
                },
                "request": {"method": "POST", "url": "Observation"},
            },
        ],
    }
    answer = me.http.post("", json=bundle)
    assert answer.status_code == 200, answer.text
    pid = answer.json()["entry"][0]["response"]["location"].split("/")[1]
    events = events_of(client, me.client_id)
    assert sorted((subtype(e), e["action"]) for e in events) == [
        ("create", "C"),
        ("create", "C"),
        ("transaction", "E"),
    ]
    creates = [e for e in events if subtype(e) == "create"]
    assert all(entity_refs(e, "1") == [f"Patient/{pid}"] for e in creates)


def test_a_failed_transaction_records_its_entries_as_failed(
    caller: Any, client: httpx.Client
) -> None:
    me = caller("system/Patient.cruds")
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"resource": {"resourceType": "Patient"},
             "request": {"method": "POST", "url": "Patient"}},
            {"resource": {"resourceType": "Patient", "gender": "nope"},
             "request": {"method": "POST", "url": "Patient"}},
        ],
    }  # fmt: skip
    assert me.http.post("", json=bundle).status_code == 400
    events = events_of(client, me.client_id)
    assert {e["outcome"] for e in events} == {"4"}
    assert sorted(subtype(e) for e in events) == ["create", "create", "transaction"]
    assert all("Bundle.entry[1]" in e["outcomeDesc"] for e in events)


def test_refusals_are_recorded(caller: Any, client: httpx.Client, base_url: str) -> None:
    me = caller("system/Patient.rs")
    pid = create_resource(client, {"resourceType": "Patient"})
    assert me.http.get("Observation", params={"_id": "x"}).status_code == 403
    assert me.http.post("Patient", json={"resourceType": "Patient"}).status_code == 403
    assert (
        me.http.post(
            "Patient", content=b"{not json", headers={"Content-Type": "application/fhir+json"}
        ).status_code
        == 400
    )
    assert me.http.get(f"Patient/{pid}").status_code == 200
    events = events_of(client, me.client_id)
    assert [(subtype(e), e["outcome"]) for e in events] == [
        ("search-type", "4"),
        ("create", "4"),
        ("create", "4"),
        ("read", "0"),
    ]
    assert "403" in events[0]["outcomeDesc"] and "400" in events[2]["outcomeDesc"]


def test_a_request_without_a_token_is_recorded(client: httpx.Client, base_url: str) -> None:
    marker = uuid.uuid4().hex
    answer = httpx.get(f"{base_url}/Patient", params={"name": marker})
    assert answer.status_code == 401
    found = client.get("AuditEvent", params={"agent-name:exact": "anonymous", "_sort": "-date"})
    events = [e["resource"] for e in found.json().get("entry", [])]
    mine = [e for e in events if marker in str(e)]
    assert len(mine) == 1
    assert mine[0]["outcome"] == "4" and "401" in mine[0]["outcomeDesc"]


def test_audit_events_cannot_be_written_through_the_api(client: httpx.Client) -> None:
    event = {"resourceType": "AuditEvent", "type": {"code": "rest"},
             "recorded": "2026-01-01T00:00:00Z", "agent": [{"requestor": True}],
             "source": {"observer": {"display": "x"}}}  # fmt: skip
    assert client.post("AuditEvent", json=event).status_code == 405
    some = client.get("AuditEvent", params={"_count": "1"}).json()["entry"][0]["resource"]
    assert client.put(f"AuditEvent/{some['id']}", json=some).status_code == 405
    assert client.delete(f"AuditEvent/{some['id']}").status_code == 405
    assert client.get(f"AuditEvent/{some['id']}").status_code == 200


def test_a_wildcard_scope_does_not_reach_the_audit_trail(caller: Any) -> None:
    me = caller("system/*.rs")
    assert me.http.get("AuditEvent").status_code == 403


def test_when_the_audit_record_cannot_be_written_the_request_fails_closed(
    live_server: LiveServer, client: httpx.Client, is_postgres: bool
) -> None:
    pid = create_resource(client, {"resourceType": "Patient", "name": [{"family": "Closed"}]})
    engine = live_server.app.state.engine
    with write_transaction(engine) as conn:
        if is_postgres:
            conn.execute(text(
                "CREATE FUNCTION audit_down() RETURNS trigger LANGUAGE plpgsql AS "
                "$$ BEGIN RAISE EXCEPTION 'audit store down'; END $$"
            ))  # fmt: skip
            conn.execute(text(
                "CREATE TRIGGER audit_down BEFORE INSERT ON audit_event "
                "FOR EACH ROW EXECUTE FUNCTION audit_down()"
            ))  # fmt: skip
        else:
            conn.execute(text(
                "CREATE TRIGGER audit_down BEFORE INSERT ON audit_event "
                "BEGIN SELECT RAISE(ABORT, 'audit store down'); END"
            ))  # fmt: skip
    try:
        read = client.get(f"Patient/{pid}")
        created = client.post(
            "Patient", json={"resourceType": "Patient", "name": [{"family": "Lost"}]}
        )
    finally:
        with write_transaction(engine) as conn:
            conn.execute(
                text("DROP TRIGGER audit_down" + (" ON audit_event" if is_postgres else ""))
            )
            if is_postgres:
                conn.execute(text("DROP FUNCTION audit_down()"))
    assert read.status_code == 500
    assert read.json()["resourceType"] == "OperationOutcome"
    assert "Closed" not in read.text
    assert created.status_code == 500
    assert client.get("Patient", params={"family": "Lost"}).json()["total"] == 0


def test_sign_in_consent_and_token_events_are_recorded(
    live_server: LiveServer, client: httpx.Client
) -> None:
    from app.auth.pkce import s256
    from tests.smart_helpers import CALLBACK, PASSWORD, Browser, query_of, register_user

    auth = live_server.app.state.auth
    root = live_server.settings.server_root
    app = register_client(auth, "public", "openid fhirUser user/Patient.rs")
    username = register_user(auth, "practitioner", "Practitioner/audit-doc")
    verifier = "v" * 64
    authorize = f"{root}/auth/authorize?" + httpx.QueryParams({
        "response_type": "code", "client_id": app.client_id, "redirect_uri": CALLBACK,
        "scope": "openid fhirUser user/Patient.rs", "state": "s", "aud": live_server.base_url,
        "code_challenge": s256(verifier), "code_challenge_method": "S256",
    }).__str__()  # fmt: skip
    browser = Browser(root)
    page = browser.open(authorize)
    wrong = browser.submit("/auth/login", {"request": browser.request_id(),
                                           "username": username, "password": "nope"})  # fmt: skip
    assert wrong.status_code == 401
    code = query_of(browser.sign_in(authorize, username))["code"]
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": CALLBACK,
            "client_id": app.client_id, "code_verifier": verifier}  # fmt: skip
    issued = httpx.post(f"{root}/auth/token", data=form)
    assert issued.status_code == 200
    again = httpx.post(f"{root}/auth/token", data=form)  # a spent code
    assert again.status_code == 400
    assert page.status_code == 200

    found = client.get("AuditEvent", params={"agent:identifier": f"{CLIENT}|{app.client_id}",
                                             "type": "110114", "_sort": "date"})  # fmt: skip
    events = [e["resource"] for e in found.json()["entry"]]
    assert [(subtype(e), e["outcome"]) for e in events] == [
        ("login", "4"),
        ("login", "0"),
        ("consent", "0"),
        ("token-issued", "0"),
        ("token-refused", "4"),
    ]
    users_named = {a.get("altId") for e in events[:4] for a in e["agent"]}
    assert username in users_named
    issued_event = events[3]
    assert any(a["who"].get("reference") == "Practitioner/audit-doc" for a in issued_event["agent"])
    assert "invalid_grant" in events[4]["outcomeDesc"]
    assert PASSWORD not in str(events) and code not in str(events)


def test_the_audit_index_keeps_what_compliance_searches_by_and_nothing_else(
    client: httpx.Client, live_server: LiveServer
) -> None:
    """fhir_profiles/medisentinel/indexed_search_parameters.json narrows AuditEvent's index:
    the CapabilityStatement offers exactly the kept parameters, a strict search by a left-out
    one is refused, and no index rows are written for them."""
    kept = {"_security", "_source", "_tag", "action", "address", "agent", "agent-name", "altid",
            "date", "entity", "outcome", "patient", "source", "subtype", "type"}  # fmt: skip
    statement = client.get("metadata").json()
    audit = next(r for r in statement["rest"][0]["resource"] if r["type"] == "AuditEvent")
    offered = {p["name"] for p in audit["searchParam"]}
    assert kept <= offered and not offered & {"entity-role", "entity-type", "site", "_profile"}
    refused = client.get(
        "AuditEvent", params={"entity-role": "4"}, headers={"Prefer": "handling=strict"}
    )
    assert refused.status_code == 400 and "entity-role" in refused.text
    some = client.get("AuditEvent", params={"action": "R", "_count": "1"}).json()
    event_id = some["entry"][0]["resource"]["id"]
    with live_server.app.state.engine.connect() as conn:
        params = set(conn.execute(text(
            "SELECT param FROM search_token WHERE resource_type = 'AuditEvent' "
            "AND resource_id = :id UNION SELECT param FROM search_uri "
            "WHERE resource_type = 'AuditEvent' AND resource_id = :id"), {"id": event_id}
        ).scalars())  # fmt: skip
    assert {"action", "type", "subtype", "outcome"} <= params
    assert not params & {"entity-role", "entity-type", "site", "_profile"}
