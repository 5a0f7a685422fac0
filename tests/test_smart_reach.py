"""Scopes reach every type a search touches, not only the searched one: `_include`,
`_revinclude`, `_has` and chains need scopes for the types they reach, with unconfined grants
(system/, a practitioner's user/) as with confined ones (patient/), and the audit trail is
never reached through a wildcard. Writes confined to a patient stay out of every other
patient's compartment and off shared resources (docs/smart.md)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from app.auth.server import AuthServer
from app.db import write_transaction
from tests.conftest import LiveServer
from tests.helpers import FHIR_JSON
from tests.smart_helpers import create_resource, register_client

HEART_RATE = "8867-4"


@dataclass(frozen=True)
class World:
    auth: AuthServer
    base: str
    pa: str  # "ann", the confined grants' patient
    pb: str
    obs_pb: str  # pb's heart rate
    about_pa: str  # pb's Observation whose focus is pa (in pb's compartment only)
    shared: str  # an Observation with subject pa and performer pb: in both compartments
    practitioner: str
    organization: str
    provenance: str  # targets pa and an AuditEvent
    audit_event: str
    marker: str


@pytest.fixture(scope="module")
def world(live_server: LiveServer, auth_headers: dict[str, str]) -> World:
    base = live_server.base_url
    marker = uuid.uuid4().hex[:10]
    with httpx.Client(base_url=base, headers=auth_headers, timeout=30) as http:

        def create(body: dict[str, Any]) -> str:
            return create_resource(http, body)

        pa = create({"resourceType": "Patient", "name": [{"family": f"Ann{marker}"}]})
        pb = create({"resourceType": "Patient", "name": [{"family": f"Bea{marker}"}]})
        obs_pb = create(_obs(pb, code=HEART_RATE))
        about_pa = create({**_obs(pb, code=marker), "focus": [{"reference": f"Patient/{pa}"}]})
        shared = create({**_obs(pa), "performer": [{"reference": f"Patient/{pb}"}]})
        create({"resourceType": "Condition", "subject": {"reference": f"Patient/{pb}"},
                "code": {"text": f"secret {marker}"}})  # fmt: skip
        practitioner = create({"resourceType": "Practitioner", "name": [{"family": marker}]})
        organization = create({"resourceType": "Organization", "name": marker})
        audit = http.get("/AuditEvent", params={"_count": "1"}).json()
        audit_event = audit["entry"][0]["resource"]["id"]
        provenance = create({
            "resourceType": "Provenance", "recorded": "2024-01-01T00:00:00Z",
            "agent": [{"who": {"reference": f"Practitioner/{practitioner}"}}],
            "target": [{"reference": f"Patient/{pa}"}, {"reference": f"AuditEvent/{audit_event}"}],
        })  # fmt: skip
    return World(live_server.app.state.auth, base, pa, pb, obs_pb, about_pa, shared,
                 practitioner, organization, provenance, audit_event, marker)  # fmt: skip


def _obs(patient: str, code: str = "29463-7") -> dict[str, Any]:
    return {"resourceType": "Observation", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
            "subject": {"reference": f"Patient/{patient}"}}  # fmt: skip


def _token(world: World, scope: str, **claims: str) -> dict[str, str]:
    """A live access token of a new client, issued straight by the token service."""
    app = register_client(world.auth, "public", scope)
    with write_transaction(world.auth.engine) as conn:
        body = {"scope": scope, "sub": claims.pop("sub", app.client_id), "sub_kind": "user",
                **claims}  # fmt: skip
        issued = world.auth.tokens.issue(conn, app.client_id, body)
    return {"Authorization": f"Bearer {issued['access_token']}", "Accept": "application/fhir+json"}


def _backend(world: World, scope: str) -> dict[str, str]:
    app = register_client(world.auth, "backend", scope, jwks={"keys": []})
    token = world.auth.local_token(app.name, scope)["access_token"]
    return {"Authorization": f"Bearer {token}", "Accept": "application/fhir+json"}


@pytest.fixture(scope="module")
def ann(world: World) -> dict[str, str]:
    """A patient user's token, confined to her own compartment."""
    return _token(world, "launch/patient patient/*.cruds", role="patient",
                  fhirUser=f"Patient/{world.pa}", patient=world.pa)  # fmt: skip


def _get(world: World, headers: dict[str, str], path: str, **params: str) -> httpx.Response:
    return httpx.get(f"{world.base}/{path}", params=params, headers=headers, timeout=30)


def _ids(response: httpx.Response) -> set[tuple[str, str]]:
    assert response.status_code == 200, response.text
    entries = response.json().get("entry", [])
    return {(e["resource"]["resourceType"], e["resource"]["id"]) for e in entries}


def _refused(response: httpx.Response, parameter: str | None = None) -> None:
    assert response.status_code == 403, response.text
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert 'error="insufficient_scope"' in response.headers["www-authenticate"]
    issue = response.json()["issue"][0]
    assert issue["code"] == "forbidden"
    if parameter is not None:
        assert issue["expression"] == [parameter], issue


# ---------------------------------------------------------------------- unconfined grants


def test_patient_only_scope_reaches_no_other_type(world: World) -> None:
    headers = _backend(world, "system/Patient.rs")
    _refused(_get(world, headers, "Observation"))
    assert ("Patient", world.pa) in _ids(_get(world, headers, "Patient", _id=world.pa))
    revinclude = _get(world, headers, "Patient", _id=world.pb, _revinclude="Observation:subject")
    _refused(revinclude, "_revinclude=Observation:subject")
    has = f"_has:Condition:subject:code:text=secret {world.marker}"
    oracle = httpx.get(f"{world.base}/Patient?{has}", headers=headers)
    _refused(oracle, "_has:Condition:subject:code:text")
    included = _get(world, headers, "Patient", _id=world.pa, _include="Patient:organization")
    _refused(included, "_include=Patient:organization")


def test_practitioner_observation_scope_includes_no_patients(world: World) -> None:
    only_obs = _token(world, "user/Observation.rs", role="practitioner",
                      fhirUser=f"Practitioner/{world.practitioner}")  # fmt: skip
    search = {"_id": world.obs_pb, "_include": "Observation:subject"}
    _refused(_get(world, only_obs, "Observation", **search), "_include=Observation:subject")
    typed = {"_id": world.obs_pb, "_include": "Observation:subject:Patient"}
    _refused(_get(world, only_obs, "Observation", **typed), "_include=Observation:subject:Patient")
    chained = _get(world, only_obs, "Observation", **{"subject:Patient.name": f"Bea{world.marker}"})
    _refused(chained, "subject:Patient.name")
    assert _ids(_get(world, only_obs, "Observation", _id=world.obs_pb)) == {
        ("Observation", world.obs_pb)
    }
    both = _token(world, "user/Observation.rs user/Patient.rs", role="practitioner",
                  fhirUser=f"Practitioner/{world.practitioner}")  # fmt: skip
    assert _ids(_get(world, both, "Observation", **search)) == {
        ("Observation", world.obs_pb), ("Patient", world.pb)
    }  # fmt: skip


def test_wildcard_never_reaches_the_audit_trail(world: World, auth_headers: dict[str, str]) -> None:
    wild = _backend(world, "system/*.cruds")
    _refused(_get(world, wild, "AuditEvent"))
    for path, parameter in [
        ("Patient", "_revinclude=AuditEvent:patient"),
        ("Patient", "_revinclude=AuditEvent:entity"),
        ("Practitioner", "_revinclude=AuditEvent:agent"),
        ("Provenance", "_include=Provenance:target:AuditEvent"),
    ]:
        name, _, value = parameter.partition("=")
        _refused(_get(world, wild, path, **{name: value}), parameter)
    oracle = httpx.get(f"{world.base}/Patient?_has:AuditEvent:patient:outcome=0", headers=wild)
    _refused(oracle, "_has:AuditEvent:patient:outcome")
    # An untyped include may land on many types: the AuditEvent among them is left out, the
    # rest is included; with an explicit AuditEvent scope it is there too.
    search = {"_id": world.provenance, "_include": "Provenance:target"}
    assert _ids(_get(world, wild, "Provenance", **search)) == {
        ("Provenance", world.provenance), ("Patient", world.pa)
    }  # fmt: skip
    assert ("AuditEvent", world.audit_event) in _ids(_get(world, auth_headers, "Provenance",
                                                          **search))  # fmt: skip


# ---------------------------------------------------------------------- confined grants


def test_confined_grant_reaches_only_its_scopes_types(world: World) -> None:
    only_obs = _token(world, "launch/patient patient/Observation.rs", role="practitioner",
                      fhirUser=f"Practitioner/{world.practitioner}", patient=world.pa)  # fmt: skip
    for name, value in [
        ("_include", "Observation:subject"),
        ("_include", "Observation:performer:Practitioner"),
        ("_revinclude", "Provenance:target"),
        ("subject:Patient.name", f"Ann{world.marker}"),
    ]:
        response = _get(world, only_obs, "Observation", **{name: value})
        _refused(response, f"{name}={value}" if name.startswith("_") else name)
    mine = _get(world, only_obs, "Observation", **{"_has:Provenance:target:agent": "x"})
    _refused(mine, "_has:Provenance:target:agent")
    assert _ids(_get(world, only_obs, "Observation")) >= {("Observation", world.shared)}


def test_system_search_refuses_a_named_type_it_may_not_search(
    world: World, auth_headers: dict[str, str]
) -> None:
    only_obs = _token(world, "launch/patient patient/Observation.rs", role="patient",
                      fhirUser=f"Patient/{world.pa}", patient=world.pa)  # fmt: skip
    _refused(_get(world, only_obs, "", _type="Observation,Condition"), "_type")
    assert _get(world, only_obs, "", _type="Observation").status_code == 200
    assert _get(world, only_obs, "").status_code == 200  # no _type: the types it may search
    _refused(_get(world, _backend(world, "system/*.rs"), "", _type="Patient,AuditEvent"), "_type")


def test_chains_and_has_see_only_the_compartment(world: World, ann: dict[str, str]) -> None:
    mine = {**_obs(world.pa), "hasMember": [{"reference": f"Observation/{world.obs_pb}"}]}
    made = httpx.post(f"{world.base}/Observation", json=mine, headers=ann)
    assert made.status_code == 201, made.text
    member = made.json()["id"]
    # Without the filter on the chain's target, pb's heart rate answered yes/no questions.
    for code in (HEART_RATE, "0000-0"):
        found = _get(world, ann, "Observation", **{"has-member:Observation.code": code})
        assert ("Observation", member) not in _ids(found)
    about_me = _get(world, ann, "Patient", **{"_has:Observation:focus:code": world.marker})
    assert _ids(about_me) == set()  # pb's Observation about ann is not hers to test
    # The same searches by an unconfined grant do find them (the criteria are right).
    wild = _backend(world, "system/*.cruds")
    found = _get(world, wild, "Observation", **{"has-member:Observation.code": HEART_RATE})
    assert ("Observation", member) in _ids(found)
    about = _get(world, wild, "Patient", **{"_has:Observation:focus:code": world.marker})
    assert _ids(about) == {("Patient", world.pa)}


def test_confined_writes_stay_out_of_other_compartments(world: World, ann: dict[str, str]) -> None:
    both = {**_obs(world.pb), "performer": [{"reference": f"Patient/{world.pa}"}]}
    put = httpx.put(f"{world.base}/Observation/inj-{world.marker}",
                    json={**both, "id": f"inj-{world.marker}"}, headers=ann)  # fmt: skip
    _refused(put)
    reversed_roles = {**_obs(world.pa), "performer": [{"reference": f"Patient/{world.pb}"}]}
    _refused(httpx.post(f"{world.base}/Observation", json=reversed_roles, headers=ann))
    # A resource in both compartments may be read by either patient, changed by neither.
    assert _get(world, ann, f"Observation/{world.shared}").status_code == 200
    existing = {**_obs(world.pa), "id": world.shared}
    _refused(httpx.put(f"{world.base}/Observation/{world.shared}", json=existing, headers=ann))
    _refused(httpx.delete(f"{world.base}/Observation/{world.shared}", headers=ann))
    linked = {
        "resourceType": "Patient",
        "id": world.pa,
        "link": [{"other": {"reference": f"Patient/{world.pb}"}, "type": "seealso"}],
    }
    _refused(httpx.put(f"{world.base}/Patient/{world.pa}", json=linked, headers=ann))
    mine = httpx.post(f"{world.base}/Observation", json=_obs(world.pa), headers=ann)
    assert mine.status_code == 201, mine.text


def test_confined_grant_reads_but_never_writes_shared_resources(
    world: World, ann: dict[str, str]
) -> None:
    assert _get(world, ann, f"Practitioner/{world.practitioner}").status_code == 200
    assert _get(world, ann, f"Organization/{world.organization}").status_code == 200
    practitioner = {"resourceType": "Practitioner", "id": world.practitioner}
    _refused(httpx.put(f"{world.base}/Practitioner/{world.practitioner}", json=practitioner,
                       headers=ann))  # fmt: skip
    _refused(httpx.delete(f"{world.base}/Practitioner/{world.practitioner}", headers=ann))
    _refused(httpx.delete(f"{world.base}/Organization/{world.organization}", headers=ann))
    organization = {"resourceType": "Organization", "name": "mine"}
    _refused(httpx.post(f"{world.base}/Organization", json=organization, headers=ann))
    assert _get(world, ann, f"Organization/{world.organization}").status_code == 200


def test_conditional_writes_reach_only_scoped_types(world: World) -> None:
    wild = _backend(world, "system/*.cruds")
    oracle = httpx.delete(f"{world.base}/Patient?_has:AuditEvent:patient:outcome=0", headers=wild)
    _refused(oracle, "_has:AuditEvent:patient:outcome")
    only_obs = _backend(world, "system/Observation.cruds")
    query = f"subject:Patient.name=Bea{world.marker}"
    put = httpx.put(f"{world.base}/Observation?{query}", json=_obs(world.pb), headers=only_obs)
    _refused(put, "subject:Patient.name")
    made = httpx.put(f"{world.base}/Observation?{query}", json=_obs(world.pb), headers=wild)
    assert made.status_code == 412, made.text  # allowed: the criteria match pb's several


def test_a_conditional_create_shows_its_match_only_to_who_may_read_it(world: World) -> None:
    """If-None-Exist that matches answers 200 with the match (R4 http.html#ccreate): for a
    token that may only create, that would be a read its scopes do not grant. It learns that
    a match exists (its Location), not what it holds."""
    family = f"Ann{world.marker}"
    post = {"resourceType": "Patient", "name": [{"family": family}]}
    create_only = _backend(world, "system/Patient.c")
    assert _get(world, create_only, f"Patient/{world.pa}").status_code == 403
    matched = httpx.post(f"{world.base}/Patient", json=post, timeout=30,
                         headers={**create_only, "If-None-Exist": f"family={family}"})  # fmt: skip
    assert matched.status_code == 200, matched.text
    assert matched.headers["location"].endswith(f"/Patient/{world.pa}")
    body = matched.json()
    assert body["resourceType"] == "OperationOutcome", body
    assert family not in matched.text
    in_bundle = httpx.post(world.base, headers=create_only, timeout=30, json={
        "resourceType": "Bundle", "type": "transaction", "entry": [{
            "resource": post, "request": {"method": "POST", "url": "Patient",
                                          "ifNoneExist": f"family={family}"}}]})  # fmt: skip
    assert in_bundle.status_code == 200, in_bundle.text
    assert family not in in_bundle.text
    entry = in_bundle.json()["entry"][0]
    assert "resource" not in entry and entry["response"]["status"].startswith("200")
    # A token that may also read gets the match itself, as before.
    reader = _backend(world, "system/Patient.cr")
    shown = httpx.post(f"{world.base}/Patient", json=post, timeout=30,
                       headers={**reader, "If-None-Exist": f"family={family}"})  # fmt: skip
    assert shown.status_code == 200 and shown.json()["id"] == world.pa


def _transaction(world: World, headers: dict[str, str], entry: dict[str, Any]) -> httpx.Response:
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [entry]}
    return httpx.post(world.base, json=bundle, headers=headers, timeout=30)


def test_a_transactions_conditions_find_only_what_the_grant_reaches(
    world: World, ann: dict[str, str]
) -> None:
    """A transaction resolves its conditions before any entry runs: they find only what the
    grant confines the entry to, so a patient's app cannot tell from the answer whether
    another patient's resource meets a criterion."""

    def observation_about(family: str) -> dict[str, Any]:
        body = {**_obs(world.pa), "subject": {"reference": f"Patient?family={family}"}}
        return {"resource": body, "request": {"method": "POST", "url": "Observation"}}

    elsewhere = _transaction(world, ann, observation_about(f"Bea{world.marker}"))  # pb exists
    nowhere = _transaction(world, ann, observation_about(f"Nobody{world.marker}"))
    assert elsewhere.status_code == nowhere.status_code == 412, elsewhere.text
    assert "matches 0 resources" in elsewhere.text
    mine = _transaction(world, ann, observation_about(f"Ann{world.marker}"))
    assert mine.status_code == 200, mine.text  # her own record is found as before
    # ifNoneExist: pb's Observation with the marker's code is no match for her; one is made
    create = {"resource": _obs(world.pa, code=world.marker),
              "request": {"method": "POST", "url": "Observation",
                          "ifNoneExist": f"code={world.marker}"}}  # fmt: skip
    made = _transaction(world, ann, create)
    assert made.status_code == 200, made.text
    assert made.json()["entry"][0]["response"]["status"].startswith("201")


def test_a_conditional_reference_to_the_bundles_own_resource_stays_within_reach(
    world: World, ann: dict[str, str], auth_headers: dict[str, str]
) -> None:
    """A conditional reference sees what the transaction itself writes (the client's own
    resources, authorized when their entries run), and of the database still only what the
    grant reaches: another patient's Observation with the same identifier is no second
    match for her (it is for an unconfined grant)."""
    ident = {"system": "urn:test:reach", "value": f"obs-{world.marker}"}
    theirs = httpx.post(f"{world.base}/Observation", json={**_obs(world.pb), "identifier": [ident]},
                        headers={**auth_headers, **FHIR_JSON}, timeout=30)  # fmt: skip
    assert theirs.status_code == 201, theirs.text
    target = {"resource": {**_obs(world.pa), "identifier": [ident]},
              "request": {"method": "POST", "url": "Observation"}}  # fmt: skip
    member = {"reference": f"Observation?identifier={ident['system']}|{ident['value']}"}
    panel = {"resource": {**_obs(world.pa), "hasMember": [member]},
             "request": {"method": "POST", "url": "Observation"}}  # fmt: skip
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [panel, target]}
    mine = httpx.post(world.base, json=bundle, headers=ann, timeout=30)
    assert mine.status_code == 200, mine.text
    entries = mine.json()["entry"]
    made = entries[1]["response"]["location"].split("/")[1]
    panel_id = entries[0]["response"]["location"].split("/")[1]
    read = _get(world, ann, f"Observation/{panel_id}").json()
    assert read["hasMember"] == [{"reference": f"Observation/{made}"}]
    unconfined = httpx.post(world.base, json=bundle, headers={**auth_headers, **FHIR_JSON},
                            timeout=30)  # fmt: skip
    assert unconfined.status_code == 412, unconfined.text
    assert "matches 3 resources" in unconfined.text  # theirs, hers, and this Bundle's own
