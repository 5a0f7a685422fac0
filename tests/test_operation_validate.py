"""$validate (R4 Resource-validate): the write path's issues in a 200 OperationOutcome, by
body or by Parameters, in each mode; nothing stored; authorized by the permission the mode
implies; audited as an operation. Unknown operations are still 404."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest

from app.fhir.hooks import Hook, Interaction
from app.fhir.storage import UnitOfWork
from tests.conftest import LiveServer
from tests.smart_helpers import create_resource, register_client
from tests.test_audit_trail import CLIENT, entity_refs, subtype

FHIR_JSON = "application/fhir+json"
CORE_PATIENT = "http://hl7.org/fhir/StructureDefinition/Patient"


def _outcome(response: httpx.Response) -> list[dict[str, Any]]:
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["resourceType"] == "OperationOutcome"
    return list(body["issue"])


def _errors(response: httpx.Response) -> list[dict[str, Any]]:
    return [i for i in _outcome(response) if i["severity"] in ("error", "fatal")]


def _valid(response: httpx.Response) -> bool:
    issues = _outcome(response)
    return not _errors(response) and any(
        i["severity"] == "information" and "no errors" in i.get("diagnostics", "") for i in issues
    )


def _params(resource: dict[str, Any] | None = None, **values: str) -> dict[str, Any]:
    parameter: list[dict[str, Any]] = []
    if resource is not None:
        parameter.append({"name": "resource", "resource": resource})
    kinds = {"mode": "valueCode", "profile": "valueUri"}
    parameter += [{"name": k, kinds[k]: v} for k, v in values.items()]
    return {"resourceType": "Parameters", "parameter": parameter}


def _family(tag: str) -> dict[str, Any]:
    return {"resourceType": "Patient", "name": [{"family": tag}]}


def _count(client: httpx.Client, tag: str) -> int:
    found = client.get("/Patient", params={"family:exact": tag, "_summary": "count"})
    assert found.status_code == 200, found.text
    return int(found.json()["total"])


@pytest.fixture
def token_for(live_server: LiveServer, base_url: str) -> Iterator[Any]:
    made: list[httpx.Client] = []

    def make(scope: str) -> tuple[str, httpx.Client]:
        auth = live_server.app.state.auth
        registered = register_client(auth, "backend", scope, jwks={"keys": []})
        token = auth.local_token(registered.name, scope)["access_token"]
        headers = {"Authorization": f"Bearer {token}", "Accept": FHIR_JSON}
        made.append(httpx.Client(base_url=base_url, headers=headers, timeout=30))
        return registered.client_id, made[-1]

    yield make
    for http in made:
        http.close()


def test_a_valid_resource_by_body_gets_no_errors_and_nothing_is_stored(
    client: httpx.Client,
) -> None:
    tag = uuid.uuid4().hex
    assert _valid(client.post("/Patient/$validate", json=_family(tag)))
    assert _valid(client.post("/Patient/$validate", json=_params(_family(tag), mode="create")))
    assert _count(client, tag) == 0


def test_an_invalid_resource_gets_the_write_paths_issues_with_their_paths(
    client: httpx.Client,
) -> None:
    bad = {"resourceType": "Observation", "status": "bogus", "code": {"text": "x"}}
    written = client.post("/Observation", json=bad)
    assert written.status_code == 400
    expected = {tuple(i.get("expression", [])) for i in written.json()["issue"]}
    for body in (bad, _params(bad), _params(bad, mode="create")):
        errors = _errors(client.post("/Observation/$validate", json=body))
        assert errors and {tuple(i.get("expression", [])) for i in errors} == expected
        assert ("Observation.status",) in expected
    # a resource of another type than the URL's
    errors = _errors(client.post("/Observation/$validate", json=_family("x")))
    assert errors and errors[0]["expression"] == ["resourceType"]


def test_mode_update_checks_the_id_against_the_urls_and_stores_nothing(
    client: httpx.Client,
) -> None:
    tag = uuid.uuid4().hex
    pid = create_resource(client, _family(tag))
    changed = {**_family(tag), "id": pid, "gender": "female"}
    assert _valid(client.post(f"/Patient/{pid}/$validate", json=_params(changed, mode="update")))
    assert _valid(client.post(f"/Patient/{pid}/$validate?mode=update", json=changed))
    other = {**changed, "id": "some-other-id"}
    errors = _errors(client.post(f"/Patient/{pid}/$validate", json=_params(other, mode="update")))
    assert [e["expression"] for e in errors] == [["Patient.id"]]
    stored = client.get(f"/Patient/{pid}").json()
    assert stored["meta"]["versionId"] == "1" and "gender" not in stored
    # update and delete name a resource: at the type level they are a bad request
    refused = client.post("/Patient/$validate", json=_params(changed, mode="update"))
    assert refused.status_code == 400 and refused.json()["issue"][0]["expression"] == ["mode"]


def test_mode_delete_checks_that_the_resource_exists_and_deletes_nothing(
    client: httpx.Client, token_for: Any
) -> None:
    pid = create_resource(client, _family(uuid.uuid4().hex))
    assert _valid(client.post(f"/Patient/{pid}/$validate", json=_params(mode="delete")))
    assert _valid(client.post(f"/Patient/{pid}/$validate?mode=delete"))  # no body needed
    assert client.get(f"/Patient/{pid}").status_code == 200
    missing = client.post("/Patient/nobody-here/$validate", json=_params(mode="delete"))
    assert missing.status_code == 404 and missing.json()["issue"][0]["code"] == "not-found"
    # the server's own audit trail is never deleted (nor created) by a client, whatever scope
    some = client.get("/AuditEvent", params={"_count": "1"}).json()["entry"][0]["resource"]
    _, auditor = token_for("system/AuditEvent.cruds")
    refused = _errors(auditor.post(f"/AuditEvent/{some['id']}/$validate?mode=delete"))
    assert [e["code"] for e in refused] == ["not-supported"]
    assert client.post(f"/AuditEvent/{some['id']}/$validate?mode=delete").status_code == 403


def test_validate_on_an_instance_not_there_is_404_or_410_except_an_update(
    client: httpx.Client,
) -> None:
    """`[type]/[id]/$validate` names a resource: one that was never there is 404 and a deleted
    one 410, as a read of it (mode absent, profile, create and delete alike: there is no
    nominated resource to check; a delete's validation gave a 200 with a `not-found` error,
    the others validated the content as if the id did not matter). mode=update is the
    exception: a PUT to that id would be accepted as an update-as-create (201), or would bring
    the deleted resource back, so its validation goes ahead and finds the content valid."""
    body = _family(uuid.uuid4().hex)
    gone = create_resource(client, body)
    assert client.delete(f"/Patient/{gone}").status_code == 204
    for rid, status, code in (("nobody-here", 404, "not-found"), (gone, 410, "deleted")):
        for params in ({}, {"mode": "create"}, {"mode": "delete"}, {"profile": CORE_PATIENT}):
            answer = client.post(f"/Patient/{rid}/$validate", json=_params(body, **params))
            assert answer.status_code == status, (rid, params, answer.text)
            assert answer.json()["issue"][0]["code"] == code
        update = {**body, "id": rid}
        assert _valid(client.post(f"/Patient/{rid}/$validate", json=_params(update, mode="update")))
    assert client.get("/Patient/nobody-here").status_code == 404  # nothing was stored
    assert client.get(f"/Patient/{gone}").status_code == 410


def test_profile_other_than_core_is_an_error_and_core_is_accepted(client: httpx.Client) -> None:
    body = _family("x")
    assert _valid(client.post("/Patient/$validate", json=_params(body, profile=CORE_PATIENT)))
    us_core = "http://hl7.org/fhir/us/core/StructureDefinition/us-core-patient"
    errors = _errors(client.post("/Patient/$validate", json=_params(body, profile=us_core)))
    assert [(e["code"], e["expression"]) for e in errors] == [("not-supported", ["profile"])]


def test_bad_requests_are_clear_400s(client: httpx.Client) -> None:
    cases = [
        ("/Patient/$validate", _params(_family("x"), mode="destroy"), "mode"),
        ("/Patient/$validate", _params(mode="create"), "resource"),
        ("/Patient/$validate", _params(_family("x"), mode="create") | {"parameter": 3},
         "Parameters.parameter"),
    ]  # fmt: skip
    for url, body, expression in cases:
        answer = client.post(url, json=body)
        assert answer.status_code == 400, answer.text
        assert answer.json()["issue"][0]["expression"] == [expression]
    not_get = client.get("/Patient/$validate")
    assert not_get.status_code == 405 and not_get.headers["Allow"] == "POST"
    assert client.post("/Patient/$validate", content=b"{", headers={
        "Content-Type": FHIR_JSON}).status_code == 400  # fmt: skip


def test_validate_needs_the_permission_its_mode_implies(
    token_for: Any, client: httpx.Client, base_url: str
) -> None:
    pid = create_resource(client, _family(uuid.uuid4().hex))
    body = {**_family("x"), "id": pid}
    _, reader = token_for("system/Patient.rs")
    assert _valid(reader.post("/Patient/$validate", json=body))
    for mode in ("create", "update", "delete"):
        answer = reader.post(f"/Patient/{pid}/$validate", json=_params(body, mode=mode))
        assert answer.status_code == 403, (mode, answer.text)
    _, writer = token_for("system/Patient.u")
    assert _valid(writer.post(f"/Patient/{pid}/$validate", json=_params(body, mode="update")))
    assert writer.post("/Patient/$validate", json=_params(body, mode="create")).status_code == 403
    _, other = token_for("system/Observation.cruds")
    assert other.post("/Patient/$validate", json=body).status_code == 403
    anonymous = httpx.post(f"{base_url}/Patient/$validate", json=body, timeout=30)
    assert anonymous.status_code == 401


def test_a_patient_token_may_not_validate_an_update_of_another_patient(
    live_server: LiveServer, base_url: str, client: httpx.Client
) -> None:
    from app.db import write_transaction

    mine = create_resource(client, _family(uuid.uuid4().hex))
    theirs = create_resource(client, _family(uuid.uuid4().hex))
    auth = live_server.app.state.auth
    scope = "launch/patient patient/Patient.rus"
    app = register_client(auth, "public", scope)
    claims = {"scope": scope, "sub": "ann", "sub_kind": "user", "role": "patient",
              "fhirUser": f"Patient/{mine}", "patient": mine}  # fmt: skip
    with write_transaction(auth.engine) as conn:
        token = auth.tokens.issue(conn, app.client_id, claims)["access_token"]
    headers = {"Accept": FHIR_JSON, "Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=base_url, headers=headers, timeout=30) as http:
        own = {**_family("x"), "id": mine}
        assert _valid(http.post(f"/Patient/{mine}/$validate", json=_params(own, mode="update")))
        other = {**_family("x"), "id": theirs}
        answer = http.post(f"/Patient/{theirs}/$validate", json=_params(other, mode="update"))
        assert answer.status_code == 403


def test_validate_is_audited_as_an_operation_on_the_resource(
    token_for: Any, client: httpx.Client
) -> None:
    pid = create_resource(client, _family(uuid.uuid4().hex))
    client_id, writer = token_for("system/Patient.cud")
    body = {**_family("x"), "id": pid}
    assert _valid(writer.post(f"/Patient/{pid}/$validate", json=_params(body, mode="update")))
    assert writer.post("/Patient/$validate", json=body).status_code == 403  # needs read
    found = client.get("/AuditEvent", params={"agent:identifier": f"{CLIENT}|{client_id}",
                                              "_sort": "date"})  # fmt: skip
    events = [e["resource"] for e in found.json().get("entry", [])]
    assert [(subtype(e), e["action"], e["outcome"]) for e in events] == [
        ("operation", "E", "0"),
        ("operation", "E", "4"),
    ]
    done = events[0]
    assert entity_refs(done, "4") == [f"Patient/{pid}/_history/1"]
    assert entity_refs(done, "1") == [f"Patient/{pid}"]
    descriptions = [x.get("description", "") for x in done["entity"]]
    assert any("$validate" in d for d in descriptions)


def test_unknown_operations_are_still_404_operation_outcomes(client: httpx.Client) -> None:
    for url in ("/$meta", "/Patient/$nonsense", "/Patient/1/$nonsense",
                "/Observation/1/$everything", "/Patient/$validate/x"):  # fmt: skip
        answer = client.get(url)
        assert answer.status_code == 404, (url, answer.text)
        assert answer.json()["resourceType"] == "OperationOutcome"


def test_in_a_batch_the_outcome_is_the_entrys_resource(client: httpx.Client) -> None:
    """An operation's OperationOutcome is its answer: Bundle.entry.resource, as a GET's
    result is (a write's outcome goes to response.outcome)."""
    tag = uuid.uuid4().hex
    invalid = {"resourceType": "Patient", "gender": "neither", "name": [{"family": tag}]}
    batch = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [
            {"resource": _family(tag), "request": {"method": "POST", "url": "Patient/$validate"}},
            {"resource": invalid, "request": {"method": "POST", "url": "Patient/$validate"}},
        ],
    }
    response = client.post("", json=batch, headers={"Content-Type": "application/fhir+json"})
    assert response.status_code == 200, response.text
    valid, refused = response.json()["entry"]
    for entry in (valid, refused):
        assert entry["response"]["status"].startswith("200")
        assert entry["resource"]["resourceType"] == "OperationOutcome"
        assert "outcome" not in entry["response"]
    assert any("no errors" in i.get("diagnostics", "") for i in valid["resource"]["issue"])
    assert any(i["severity"] == "error" for i in refused["resource"]["issue"])
    assert _count(client, tag) == 0


def _patient_token(live_server: LiveServer, patient: str, scope: str) -> tuple[str, str]:
    """(client id, access token) of a patient's app, confined to `patient`."""
    from app.db import write_transaction

    auth = live_server.app.state.auth
    app = register_client(auth, "public", scope)
    claims = {"scope": scope, "sub": "ann", "sub_kind": "user", "role": "patient",
              "fhirUser": f"Patient/{patient}", "patient": patient}  # fmt: skip
    with write_transaction(auth.engine) as conn:
        token = auth.tokens.issue(conn, app.client_id, claims)["access_token"]
    return app.client_id, token


def _observation(patient: str, tag: str) -> dict[str, Any]:
    # many codings: on PostgreSQL the tried write's token rows go by COPY (>= 8 rows)
    codes = (tag, *(f"extra-{n}" for n in range(9)))
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "urn:test:validate", "code": c} for c in codes]},
        "subject": {"reference": f"Patient/{patient}"},
    }


def _observations(client: httpx.Client, tag: str) -> int:
    found = client.get("/Observation", params={"code": f"urn:test:validate|{tag}",
                                               "_summary": "count"})  # fmt: skip
    assert found.status_code == 200, found.text
    return int(found.json()["total"])


def test_a_patient_token_gets_the_writes_refusal_of_a_create_outside_its_compartment(
    live_server: LiveServer, base_url: str, client: httpx.Client
) -> None:
    """A confined token's write is refused (403) when its result lies outside the token's
    reach; $validate of that create now says so (200, the same issue), and stores nothing
    either way, while the $validate itself is audited."""
    mine = create_resource(client, _family(uuid.uuid4().hex))
    theirs = create_resource(client, _family(uuid.uuid4().hex))
    client_id, token = _patient_token(
        live_server, mine, "launch/patient patient/Observation.crs patient/Patient.rs"
    )
    tag = uuid.uuid4().hex
    headers = {"Accept": FHIR_JSON, "Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=base_url, headers=headers, timeout=30) as http:
        own = _observation(mine, tag)
        assert _valid(http.post("/Observation/$validate", json=_params(own, mode="create")))
        assert _valid(http.post("/Observation/$validate?mode=create", json=own))
        other = _observation(theirs, tag)
        errors = _errors(http.post("/Observation/$validate", json=_params(other, mode="create")))
        assert _observations(client, tag) == 0  # nothing stored by either $validate
        written = http.post("/Observation", json=other)
        assert written.status_code == 403, written.text
        refusal = written.json()["issue"]
        assert [(e["code"], e["diagnostics"]) for e in errors] == [
            (i["code"], i["diagnostics"]) for i in refusal
        ]
        assert errors[0]["code"] == "forbidden"
        # without a mode the content alone is checked, as before
        assert _valid(http.post("/Observation/$validate", json=other))
    assert _observations(client, tag) == 0
    found = client.get("/AuditEvent", params={"agent:identifier": f"{CLIENT}|{client_id}",
                                              "_sort": "date"})  # fmt: skip
    events = [e["resource"] for e in found.json().get("entry", [])]
    assert [(subtype(e), e["outcome"]) for e in events] == [
        ("operation", "0"), ("operation", "0"), ("operation", "0"), ("create", "4"),
        ("operation", "0"),
    ]  # fmt: skip
    # the $validate records name no resource the trial staged (it was never stored)
    assert all(not entity_refs(e, "4") for e in events if subtype(e) == "operation")


def test_a_patient_token_gets_the_writes_refusal_of_an_update_moving_a_resource_away(
    live_server: LiveServer, base_url: str, client: httpx.Client
) -> None:
    mine = create_resource(client, _family(uuid.uuid4().hex))
    theirs = create_resource(client, _family(uuid.uuid4().hex))
    tag = uuid.uuid4().hex
    oid = create_resource(client, _observation(mine, tag))
    _, token = _patient_token(live_server, mine, "launch/patient patient/Observation.rus")
    headers = {"Accept": FHIR_JSON, "Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=base_url, headers=headers, timeout=30) as http:
        kept = {**_observation(mine, tag), "id": oid, "status": "amended"}
        url = f"/Observation/{oid}/$validate"
        assert _valid(http.post(url, json=_params(kept, mode="update")))
        moved = {**_observation(theirs, tag), "id": oid}
        errors = _errors(http.post(url, json=_params(moved, mode="update")))
        refused = http.put(f"/Observation/{oid}", json=moved)
        assert refused.status_code == 403, refused.text
        assert [e["diagnostics"] for e in errors] == [
            i["diagnostics"] for i in refused.json()["issue"]
        ]
    stored = client.get(f"/Observation/{oid}").json()
    assert stored["meta"]["versionId"] == "1" and stored["status"] == "final"
    assert stored["subject"]["reference"] == f"Patient/{mine}"
    # the trial left the index rows as they were: the Observation is still found by them
    found = client.get("/Observation", params={"subject": f"Patient/{mine}",
                                               "code": f"urn:test:validate|{tag}"})  # fmt: skip
    assert [e["resource"]["id"] for e in found.json()["entry"]] == [oid]


def test_an_unconfined_token_validates_a_create_for_any_patient(
    token_for: Any, client: httpx.Client
) -> None:
    theirs = create_resource(client, _family(uuid.uuid4().hex))
    tag = uuid.uuid4().hex
    _, writer = token_for("system/Observation.c")
    body = _params(_observation(theirs, tag), mode="create")
    assert _valid(writer.post("/Observation/$validate", json=body))
    assert _observations(client, tag) == 0


def test_in_a_batch_a_patient_tokens_validate_gets_the_writes_refusal_too(
    live_server: LiveServer, base_url: str, client: httpx.Client
) -> None:
    """The trial runs in the batch entry's own unit of work (a savepoint there too)."""
    mine = create_resource(client, _family(uuid.uuid4().hex))
    theirs = create_resource(client, _family(uuid.uuid4().hex))
    _, token = _patient_token(live_server, mine, "launch/patient patient/Observation.crs")
    tag = uuid.uuid4().hex
    url = "Observation/$validate?mode=create"
    batch = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [
            {"resource": _observation(p, tag), "request": {"method": "POST", "url": url}}
            for p in (mine, theirs)
        ],
    }
    headers = {"Accept": FHIR_JSON, "Authorization": f"Bearer {token}",
               "Content-Type": FHIR_JSON}  # fmt: skip
    answer = httpx.post(base_url, json=batch, headers=headers, timeout=30)
    assert answer.status_code == 200, answer.text
    own, other = (e["resource"]["issue"] for e in answer.json()["entry"])
    assert not [i for i in own if i["severity"] == "error"]
    assert [i["code"] for i in other if i["severity"] == "error"] == ["forbidden"]
    assert _observations(client, tag) == 0


class _UnitKinds(Hook):
    """Notes, for each $validate the door authorizes, whether its unit of work may write."""

    def __init__(self) -> None:
        self.read_only: list[bool] = []

    def authorize(self, uow: UnitOfWork, interaction: Interaction) -> None:
        if interaction.operation == "$validate":
            self.read_only.append(uow.read_only)


@contextmanager
def _unit_kinds(live_server: LiveServer) -> Iterator[_UnitKinds]:
    pipeline = live_server.app.state.pipeline
    hook = _UnitKinds()
    pipeline.add(hook)
    try:
        yield hook
    finally:
        pipeline.hooks.remove(hook)


def test_validate_of_a_write_opens_a_write_transaction_only_for_a_confined_token(
    live_server: LiveServer, base_url: str, client: httpx.Client
) -> None:
    """$validate of a create or update ran in a write unit of work for every token: on
    SQLite a BEGIN IMMEDIATE, so it queued for the one write lock behind any writer and then
    held it while it validated, though it writes nothing unless a confined token's result
    must be tried in a savepoint. An unconfined token's validation is now a read unit (its
    audit record goes by the reads' group commit); a confined one still opens a write unit
    and still gets the write's refusal."""
    pid = create_resource(client, _family(uuid.uuid4().hex))
    changed = {**_family("changed"), "id": pid}
    _, token = _patient_token(live_server, pid, "launch/patient patient/Observation.crs")
    headers = {"Accept": FHIR_JSON, "Authorization": f"Bearer {token}"}
    theirs = create_resource(client, _family(uuid.uuid4().hex))
    other = _observation(theirs, uuid.uuid4().hex)
    with (
        _unit_kinds(live_server) as units,
        httpx.Client(base_url=base_url, headers=headers, timeout=30) as confined,
    ):
        assert _valid(client.post("/Patient/$validate", json=_params(_family("x"), mode="create")))
        assert _valid(
            client.post(f"/Patient/{pid}/$validate", json=_params(changed, mode="update"))
        )
        assert units.read_only == [True, True]
        refused = confined.post("/Observation/$validate", json=_params(other, mode="create"))
        assert [e["code"] for e in _errors(refused)] == ["forbidden"]
        assert units.read_only == [True, True, False]
