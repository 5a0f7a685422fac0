"""Compartment search (R4 http.html#search, CompartmentDefinition patient/encounter/...):
GET [base]/Patient/123/Observation matches the Observations whose compartment parameters
(subject, performer) refer to Patient/123, with the usual parameters on top; `*` searches every
type the compartment can hold. A patient-context token sees nothing more through it."""

from __future__ import annotations

import re
import uuid
from typing import Any

import httpx
import pytest
from sqlalchemy import event

from app.db import write_transaction
from app.fhir import compartments
from tests.conftest import LiveServer
from tests.smart_helpers import register_client

FHIR_JSON = "application/fhir+json"


def _create(client: httpx.Client, body: dict[str, Any]) -> str:
    response = client.post(f"/{body['resourceType']}", json=body)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def _ids(response: httpx.Response) -> list[tuple[str, str]]:
    assert response.status_code == 200, response.text
    bundle = response.json()
    return sorted(
        (e["resource"]["resourceType"], e["resource"]["id"])
        for e in bundle.get("entry", [])
        if e.get("search", {}).get("mode") == "match"
    )


@pytest.fixture(scope="module")
def world(base_url: str, auth_headers: dict[str, str]) -> dict[str, str]:
    headers = {"Accept": FHIR_JSON, **auth_headers}
    tag = uuid.uuid4().hex[:8]
    with httpx.Client(base_url=base_url, headers=headers, timeout=30) as client:
        w: dict[str, str] = {"tag": tag}
        w["pa"] = _create(client, {"resourceType": "Patient", "name": [{"family": f"A{tag}"}]})
        w["pb"] = _create(client, {"resourceType": "Patient", "name": [{"family": f"B{tag}"}]})
        w["doc"] = _create(client, {"resourceType": "Practitioner"})
        w["enc"] = _create(
            client,
            {"resourceType": "Encounter", "status": "finished",
             "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                       "code": "AMB"},
             "subject": {"reference": f"Patient/{w['pa']}"}},
        )  # fmt: skip

        def obs(code: str, **refs: Any) -> str:
            body = {
                "resourceType": "Observation",
                "status": "final",
                "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
                **refs,
            }
            return _create(client, body)  # fmt: skip

        w["oa1"] = obs("8867-4", subject={"reference": f"Patient/{w['pa']}"},
                       encounter={"reference": f"Encounter/{w['enc']}"})  # fmt: skip
        w["oa2"] = obs("8310-5", subject={"reference": f"{base_url}/Patient/{w['pa']}"})
        # in Patient A's compartment as performer only; in the Practitioner's as performer
        w["operf"] = obs("8867-4", subject={"reference": f"Patient/{w['pb']}"},
                         performer=[{"reference": f"Patient/{w['pa']}"},
                                    {"reference": f"Practitioner/{w['doc']}"}])  # fmt: skip
        w["ob"] = obs("8867-4", subject={"reference": f"Patient/{w['pb']}"})
        w["other"] = obs("8867-4", subject={"reference": "http://elsewhere.example/Patient/x"})
    return w


def test_a_patients_compartment_holds_what_refers_to_her_by_any_compartment_parameter(
    client: httpx.Client, world: dict[str, str]
) -> None:
    found = _ids(client.get(f"/Patient/{world['pa']}/Observation"))
    assert found == sorted(("Observation", world[k]) for k in ("oa1", "oa2", "operf"))
    found = _ids(client.get(f"/Patient/{world['pb']}/Observation"))
    assert found == sorted(("Observation", world[k]) for k in ("operf", "ob"))


def test_parameters_narrow_a_compartment_search_and_links_stay_on_it(
    client: httpx.Client, world: dict[str, str]
) -> None:
    path = f"/Patient/{world['pa']}/Observation"
    found = _ids(client.get(path, params={"code": "http://loinc.org|8867-4"}))
    assert found == sorted(("Observation", world[k]) for k in ("oa1", "operf"))
    page = client.get(path, params={"_count": "1"})
    assert len(_ids(page)) == 1
    links = {link["relation"]: link["url"] for link in page.json()["link"]}
    assert f"/Patient/{world['pa']}/Observation?" in links["self"]
    seen = _ids(page)
    url = links.get("next")
    while url:
        page = client.get(url)
        seen += _ids(page)
        url = next((lk["url"] for lk in page.json()["link"] if lk["relation"] == "next"), None)
    assert sorted(seen) == sorted(("Observation", world[k]) for k in ("oa1", "oa2", "operf"))


def test_other_compartments_and_the_compartments_own_resource(
    client: httpx.Client, world: dict[str, str]
) -> None:
    by_doc = _ids(client.get(f"/Practitioner/{world['doc']}/Observation"))
    assert by_doc == [("Observation", world["operf"])]
    in_encounter = _ids(client.get(f"/Encounter/{world['enc']}/*"))
    assert in_encounter == sorted([("Encounter", world["enc"]), ("Observation", world["oa1"])])
    everything = _ids(client.get(f"/Patient/{world['pa']}/*"))
    expected = [("Encounter", world["enc"]), ("Patient", world["pa"])] + [
        ("Observation", world[k]) for k in ("oa1", "oa2", "operf")
    ]
    assert everything == sorted(expected)
    narrowed = _ids(client.get(f"/Patient/{world['pa']}/*", params={"_type": "Encounter"}))
    assert narrowed == [("Encounter", world["enc"])]
    # `*` leaves the audit trail out (as _revinclude=* does); named, it is searched
    audit = _ids(client.get(f"/Patient/{world['pa']}/*", params={"_type": "AuditEvent"}))
    assert audit and {rtype for rtype, _ in audit} == {"AuditEvent"}


def _compartment_branches(
    live_server: LiveServer, client: httpx.Client, url: str
) -> tuple[list[tuple[str, str]], int]:
    """(what the compartment search at url matched, how many per-type branches the row filter
    of its page statement wrote: one `resource.resource_type = ...` test each)."""
    statements: list[str] = []

    def grab(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT") and "search_reference" in statement:
            statements.append(statement)

    engine = live_server.app.state.engine
    event.listen(engine, "before_cursor_execute", grab)
    try:
        found = _ids(client.get(url))
    finally:
        event.remove(engine, "before_cursor_execute", grab)
    page = next(s for s in statements if "FROM resource" in s)
    return found, len(re.findall(r"resource\.resource_type = ", page))


def test_a_compartment_search_of_some_types_writes_the_branches_of_those_types_only(
    live_server: LiveServer, client: httpx.Client, world: dict[str, str]
) -> None:
    """The row filter wrote one branch per type the compartment holds (66 for Patient), even
    when `_type` named two: the statement grew, and its planning with it, for nothing."""
    pa = world["pa"]
    found, branches = _compartment_branches(
        live_server, client, f"/Patient/{pa}/*?_type=Encounter,Observation"
    )
    observations = [("Observation", world[k]) for k in ("oa1", "oa2", "operf")]
    assert found == sorted([("Encounter", world["enc"]), *observations])
    assert branches == 2
    found, branches = _compartment_branches(
        live_server, client, f"/Patient/{pa}/*?_type=Patient,Observation"
    )
    assert found == sorted([("Patient", pa), *observations])
    assert branches == 2
    found, branches = _compartment_branches(
        live_server, client, f"/Patient/{pa}/*?_type=Observation"
    )
    assert found == sorted(observations)
    assert branches == 1  # no branch: the one `=` is the type filter of a one-type search
    found, branches = _compartment_branches(live_server, client, f"/Patient/{pa}/*")
    assert ("Encounter", world["enc"]) in found and ("Patient", pa) in found
    held = compartments.members("Patient")
    assert branches == len(held) - 1  # every type but AuditEvent, which `*` leaves out


@pytest.mark.parametrize(
    ("path", "status", "says"),
    [
        ("/Observation/{pa}/Observation", 404, "is not a compartment"),
        ("/Patient/{pa}/Practitioner", 400, "never in a Patient compartment"),
        ("/Patient/{pa}/NoSuchType", 404, "NoSuchType"),
        ("/Patient/{pa}/*?_type=Practitioner", 400, "never in this compartment"),
        ("/Patient/bad$id/Observation", 400, "not a valid Patient id"),
    ],
)
def test_what_is_no_compartment_search_is_refused_saying_why(
    client: httpx.Client, world: dict[str, str], path: str, status: int, says: str
) -> None:
    response = client.get(path.format(pa=world["pa"]))
    assert response.status_code == status, response.text
    assert response.json()["resourceType"] == "OperationOutcome"
    assert says in response.text


def test_a_compartment_search_is_read_only(client: httpx.Client, world: dict[str, str]) -> None:
    response = client.post(f"/Patient/{world['pa']}/Observation", json={})
    assert response.status_code == 405, response.text


def test_a_patient_token_sees_nothing_more_through_another_patients_compartment(
    live_server: LiveServer, base_url: str, world: dict[str, str]
) -> None:
    auth = live_server.app.state.auth
    scope = "launch/patient patient/*.rs"
    app = register_client(auth, "public", scope)
    claims = {"scope": scope, "sub": "ann", "sub_kind": "user", "role": "patient",
              "fhirUser": f"Patient/{world['pa']}", "patient": world["pa"]}  # fmt: skip
    with write_transaction(auth.engine) as conn:
        token = auth.tokens.issue(conn, app.client_id, claims)["access_token"]
    headers = {"Accept": FHIR_JSON, "Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=base_url, headers=headers, timeout=30) as http:
        own = _ids(http.get(f"/Patient/{world['pa']}/Observation"))
        assert own == sorted(("Observation", world[k]) for k in ("oa1", "oa2", "operf"))
        # B's compartment: only what is in A's compartment as well (A performed it)
        other = _ids(http.get(f"/Patient/{world['pb']}/Observation"))
        assert other == [("Observation", world["operf"])]


def test_the_capability_statement_names_the_compartments(client: httpx.Client) -> None:
    rest = client.get("/metadata").json()["rest"][0]
    assert "http://hl7.org/fhir/CompartmentDefinition/patient" in rest["compartment"]
    assert "http://hl7.org/fhir/CompartmentDefinition/relatedPerson" in rest["compartment"]
