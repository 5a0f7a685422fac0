"""Patient/[id]/$everything (R4 Patient-everything): the patient, its compartment and the
supporting resources its records refer to, as a paged searchset; start/end, _since, _type
and _count; authorized and audited as a search."""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from app.db import write_transaction
from tests.conftest import LiveServer
from tests.smart_helpers import create_resource, register_client
from tests.test_audit_trail import CLIENT, entity_refs, subtype

FHIR_JSON = "application/fhir+json"


def _entries(bundle: dict[str, Any], mode: str | None = None) -> set[tuple[str, str]]:
    return {
        (e["resource"]["resourceType"], e["resource"]["id"])
        for e in bundle.get("entry", [])
        if mode is None or e["search"]["mode"] == mode
    }


def _get(http: httpx.Client, url: str, **params: str) -> dict[str, Any]:
    answer = http.get(url, params=params)
    assert answer.status_code == 200, answer.text
    bundle = answer.json()
    assert bundle["type"] == "searchset"
    return dict(bundle)


def _all_pages(http: httpx.Client, url: str, **params: str) -> tuple[set[Any], int]:
    bundle, pages = _get(http, url, **params), 1
    found = _entries(bundle)
    while nxt := next((x["url"] for x in bundle["link"] if x["relation"] == "next"), None):
        parts = urlsplit(nxt)
        assert parts.path.endswith(url), nxt  # the link goes on with the operation
        answer = http.get(nxt)
        assert answer.status_code == 200, answer.text
        bundle, pages = answer.json(), pages + 1
        found |= _entries(bundle)
    return found, pages


def _obs(pid: str, when: str, **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"text": "hr"},
        "subject": {"reference": f"Patient/{pid}"},
        "effectiveDateTime": when,
        **extra,
    }


@pytest.fixture(scope="module")
def record(base_url: str, auth_headers: dict[str, str]) -> dict[str, Any]:
    headers = {"Accept": FHIR_JSON, **auth_headers}
    with httpx.Client(base_url=base_url, headers=headers, timeout=30) as http:
        r: dict[str, Any] = {}
        r["org"] = create_resource(http, {"resourceType": "Organization", "name": "Clinic"})
        r["doc"] = create_resource(http, {"resourceType": "Practitioner"})
        r["loc"] = create_resource(http, {"resourceType": "Location", "name": "Ward"})
        r["med"] = create_resource(http, {"resourceType": "Medication"})
        r["pa"] = create_resource(
            http,
            {
                "resourceType": "Patient",
                "managingOrganization": {"reference": f"Organization/{r['org']}"},
            },
        )
        r["pb"] = create_resource(http, {"resourceType": "Patient"})
        r["o2019"] = create_resource(
            http, _obs(r["pa"], "2019-05-01", performer=[{"reference": f"Practitioner/{r['doc']}"}])
        )
        r["o2021"] = create_resource(http, _obs(r["pa"], "2021-05-01"))
        r["enc"] = create_resource(
            http,
            {
                "resourceType": "Encounter",
                "status": "finished",
                "class": {
                    "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                    "code": "AMB",
                },
                "subject": {"reference": f"Patient/{r['pa']}"},
                "location": [{"location": {"reference": f"Location/{r['loc']}"}}],
            },
        )
        r["mr"] = create_resource(
            http,
            {
                "resourceType": "MedicationRequest",
                "status": "active",
                "intent": "order",
                "subject": {"reference": f"Patient/{r['pa']}"},
                "medicationReference": {"reference": f"Medication/{r['med']}"},
            },
        )
        r["ob"] = create_resource(http, _obs(r["pb"], "2021-05-01"))
        time.sleep(0.01)
        r["since"] = http.get(f"/Observation/{r['o2021']}").json()["meta"]["lastUpdated"]
        r["late"] = create_resource(http, _obs(r["pa"], "2022-01-01"))
    return r


def test_everything_returns_the_record_and_what_supports_it_and_not_another_patients(
    client: httpx.Client, record: dict[str, Any]
) -> None:
    bundle = _get(client, f"/Patient/{record['pa']}/$everything")
    assert _entries(bundle, "match") == {
        ("Patient", record["pa"]),
        ("Observation", record["o2019"]),
        ("Observation", record["o2021"]),
        ("Observation", record["late"]),
        ("Encounter", record["enc"]),
        ("MedicationRequest", record["mr"]),
    }
    assert _entries(bundle, "include") == {
        ("Organization", record["org"]),
        ("Practitioner", record["doc"]),
        ("Location", record["loc"]),
        ("Medication", record["med"]),
    }
    everything = _entries(bundle)
    assert ("Patient", record["pb"]) not in everything
    assert ("Observation", record["ob"]) not in everything


def test_paging_links_go_on_with_everything(client: httpx.Client, record: dict[str, Any]) -> None:
    whole = _entries(_get(client, f"/Patient/{record['pa']}/$everything"))
    paged, pages = _all_pages(client, f"/Patient/{record['pa']}/$everything", _count="2")
    assert pages == 3 and paged == whole
    # the same by POST with Parameters
    body = {"resourceType": "Parameters", "parameter": [{"name": "_count", "valueInteger": 2}]}
    answer = client.post(f"/Patient/{record['pa']}/$everything", json=body)
    assert answer.status_code == 200 and len(_entries(answer.json(), "match")) == 2


def test_type_since_and_care_dates_narrow_the_record(
    client: httpx.Client, record: dict[str, Any]
) -> None:
    url = f"/Patient/{record['pa']}/$everything"
    only = _entries(_get(client, url, _type="Observation,Patient"), "match")
    assert only == {
        ("Patient", record["pa"]),
        ("Observation", record["o2019"]),
        ("Observation", record["o2021"]),
        ("Observation", record["late"]),
    }
    since = _entries(_get(client, url, _since=record["since"]), "match")
    assert ("Observation", record["late"]) in since
    assert ("Observation", record["o2019"]) not in since
    dated = _entries(_get(client, url, start="2020-01-01", end="2021-12-31"), "match")
    assert ("Observation", record["o2021"]) in dated
    assert ("Observation", record["o2019"]) not in dated
    assert ("Observation", record["late"]) not in dated
    assert ("Patient", record["pa"]) in dated  # no care date: not narrowed
    post = {
        "resourceType": "Parameters",
        "parameter": [
            {"name": "start", "valueDate": "2020-01-01"},
            {"name": "end", "valueDate": "2021-12-31"},
        ],
    }
    answer = client.post(url, json=post)
    assert answer.status_code == 200 and _entries(answer.json(), "match") == dated


def test_bad_parameters_and_levels_are_clear_answers(
    client: httpx.Client, record: dict[str, Any]
) -> None:
    url = f"/Patient/{record['pa']}/$everything"
    for params, expression in (
        ({"start": "soon"}, "start"),
        ({"_since": "x"}, "_since"),
        ({"_type": "Nonsense"}, "_type"),
        ({"_type": "Practitioner"}, "_type"),
        ({"_count": "-1"}, "_count"),
    ):
        answer = client.get(url, params=params)
        assert answer.status_code == 400, (params, answer.text)
        assert answer.json()["issue"][0]["expression"] == [expression]
    put = client.put(url, json={"resourceType": "Parameters"})
    assert put.status_code == 405 and put.headers["Allow"] == "GET, HEAD, POST"
    type_level = client.get("/Patient/$everything")
    assert type_level.status_code == 400
    assert type_level.json()["issue"][0]["code"] == "not-supported"


def test_everything_of_a_patient_not_there_is_404_and_of_a_deleted_one_410(
    client: httpx.Client,
) -> None:
    """An operation on an instance answers for a missing instance as a read does (R4
    http.html#read: 404 unknown, 410 deleted); it answered an empty searchset, which told
    the client the patient had no record rather than that there is no such patient."""
    for method in ("GET", "POST"):
        body = {"resourceType": "Parameters"} if method == "POST" else None
        unknown = client.request(method, "/Patient/nobody-at-all/$everything", json=body)
        assert unknown.status_code == 404, unknown.text
        assert unknown.json()["resourceType"] == "OperationOutcome"
        assert unknown.json()["issue"][0]["code"] == "not-found"
    gone = create_resource(client, {"resourceType": "Patient"})
    assert client.delete(f"/Patient/{gone}").status_code == 204
    answer = client.get(f"/Patient/{gone}/$everything")
    assert answer.status_code == 410, answer.text
    assert answer.json()["issue"][0]["code"] == "deleted"


def test_a_patient_token_gets_only_its_own_record(
    live_server: LiveServer, base_url: str, record: dict[str, Any]
) -> None:
    auth = live_server.app.state.auth
    scope = "launch/patient patient/Patient.rs patient/Observation.rs"
    app = register_client(auth, "public", scope)
    claims = {
        "scope": scope,
        "sub": "ann",
        "sub_kind": "user",
        "role": "patient",
        "fhirUser": f"Patient/{record['pa']}",
        "patient": record["pa"],
    }
    with write_transaction(auth.engine) as conn:
        token = auth.tokens.issue(conn, app.client_id, claims)["access_token"]
    headers = {"Accept": FHIR_JSON, "Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=base_url, headers=headers, timeout=30) as http:
        own = _entries(_get(http, f"/Patient/{record['pa']}/$everything"), "match")
        # what the scopes do not reach (Encounter, MedicationRequest) is left out
        assert {t for t, _ in own} == {"Patient", "Observation"}
        assert ("Patient", record["pa"]) in own
        other = _get(http, f"/Patient/{record['pb']}/$everything")
        assert _entries(other) == set()
        # a type named in _type that the scopes do not reach is refused, not dropped
        named = http.get(f"/Patient/{record['pa']}/$everything", params={"_type": "Encounter"})
        assert named.status_code == 403


def test_everything_is_audited_as_a_query_of_the_patient(
    live_server: LiveServer, base_url: str, client: httpx.Client, record: dict[str, Any]
) -> None:
    auth = live_server.app.state.auth
    scope = "system/*.rs"
    registered = register_client(auth, "backend", scope, jwks={"keys": []})
    token = auth.local_token(registered.name, scope)["access_token"]
    headers = {"Accept": FHIR_JSON, "Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=base_url, headers=headers, timeout=30) as http:
        _get(http, f"/Patient/{record['pa']}/$everything")
    found = client.get(
        "/AuditEvent",
        params={"agent:identifier": f"{CLIENT}|{registered.client_id}", "_sort": "date"},
    )
    [event] = [e["resource"] for e in found.json()["entry"]]
    assert (subtype(event), event["action"], event["outcome"]) == ("search-system", "E", "0")
    assert entity_refs(event, "1") == [f"Patient/{record['pa']}"]
    descriptions = [x.get("description", "") for x in event["entity"]]
    assert any("$everything" in d for d in descriptions)


def test_the_capability_statement_lists_both_operations(client: httpx.Client) -> None:
    rest = client.get("/metadata").json()["rest"][0]
    by_type = {r["type"]: r.get("operation", []) for r in rest["resource"]}
    assert {
        "name": "everything",
        "definition": "http://hl7.org/fhir/OperationDefinition/Patient-everything",
    } in by_type["Patient"]
    validate = {
        "name": "validate",
        "definition": "http://hl7.org/fhir/OperationDefinition/Resource-validate",
    }
    assert all(validate in ops for ops in by_type.values())
    assert all(op["name"] != "everything" for op in by_type["Observation"])
