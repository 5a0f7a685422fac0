"""batch and transaction Bundles at POST /fhir."""

from __future__ import annotations

import base64
import json
import uuid

import httpx

from tests.helpers import FHIR_JSON, observation, patient, unique

SYSTEM = "http://hospital.example/mrn"


def bundle(kind: str, entries: list[dict]) -> dict:
    return {"resourceType": "Bundle", "type": kind, "entry": entries}


def post_bundle(client: httpx.Client, body: dict, **headers: str) -> httpx.Response:
    return client.post("", json=body, headers={**FHIR_JSON, **headers})


def test_transaction_resolves_urn_uuid_references(client: httpx.Client) -> None:
    pat_urn = f"urn:uuid:{uuid.uuid4()}"
    obs = observation(subject={"reference": pat_urn}, hasMember=[{"reference": pat_urn}])
    tx = bundle(
        "transaction",
        [
            {
                "fullUrl": f"urn:uuid:{uuid.uuid4()}",
                "resource": obs,
                "request": {"method": "POST", "url": "Observation"},
            },
            {
                "fullUrl": pat_urn,
                "resource": patient(),
                "request": {"method": "POST", "url": "Patient"},
            },
        ],
    )
    response = post_bundle(client, tx)
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["type"] == "transaction-response"
    obs_entry, pat_entry = result["entry"]  # same order as the request
    assert obs_entry["response"]["status"] == "201 Created"
    assert pat_entry["response"]["location"].startswith("Patient/")
    assert pat_entry["response"]["etag"] == 'W/"1"'
    pat_id = pat_entry["response"]["location"].split("/")[1]
    obs_id = obs_entry["response"]["location"].split("/")[1]
    stored = client.get(f"/Observation/{obs_id}").json()
    assert stored["subject"]["reference"] == f"Patient/{pat_id}"
    assert stored["hasMember"][0]["reference"] == f"Patient/{pat_id}"


def test_transaction_is_all_or_nothing_and_names_the_entry(client: httpx.Client) -> None:
    mrn = unique("tx")
    bad = observation(status="not-a-status")
    tx = bundle(
        "transaction",
        [
            {
                "resource": patient(identifier=[{"system": SYSTEM, "value": mrn}]),
                "request": {"method": "POST", "url": "Patient"},
            },
            {"resource": bad, "request": {"method": "POST", "url": "Observation"}},
        ],
    )
    response = post_bundle(client, tx)
    assert response.status_code == 400
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert "Bundle.entry[1]" in outcome["issue"][0]["diagnostics"]
    assert any(e.startswith("Bundle.entry[1]") for e in outcome["issue"][0]["expression"])
    found = client.get("/Patient", params={"identifier": f"{SYSTEM}|{mrn}"}).json()
    assert not found.get("entry"), "the first entry must have been rolled back"


def test_transaction_processing_order_delete_post_put_get(client: httpx.Client) -> None:
    existing = client.post("/Patient", json=patient(), headers=FHIR_JSON).json()
    put_id = unique("p")
    tx = bundle(
        "transaction",
        [
            {"request": {"method": "GET", "url": f"Patient/{put_id}"}},
            {
                "resource": patient(id=put_id),
                "request": {"method": "PUT", "url": f"Patient/{put_id}"},
            },
            {"request": {"method": "DELETE", "url": f"Patient/{existing['id']}"}},
        ],
    )
    response = post_bundle(client, tx)
    assert response.status_code == 200, response.text
    get_entry, put_entry, delete_entry = response.json()["entry"]
    assert get_entry["response"]["status"] == "200 OK"  # GET ran after the PUT
    assert get_entry["resource"]["id"] == put_id
    assert put_entry["response"]["status"] == "201 Created"
    assert delete_entry["response"]["status"] == "204 No Content"
    assert client.get(f"/Patient/{existing['id']}").status_code == 410


def test_transaction_conditional_entries(client: httpx.Client) -> None:
    mrn = unique("cond")
    ident = [{"system": SYSTEM, "value": mrn}]
    pat_urn = f"urn:uuid:{uuid.uuid4()}"
    entries = [
        {
            "fullUrl": pat_urn,
            "resource": patient(identifier=ident),
            "request": {
                "method": "POST",
                "url": "Patient",
                "ifNoneExist": f"identifier={SYSTEM}|{mrn}",
            },
        },
        {
            "resource": observation(subject={"reference": pat_urn}),
            "request": {"method": "POST", "url": "Observation"},
        },
    ]
    first = post_bundle(client, bundle("transaction", entries)).json()
    second = post_bundle(client, bundle("transaction", entries)).json()
    assert first["entry"][0]["response"]["status"] == "201 Created"
    assert second["entry"][0]["response"]["status"] == "200 OK"
    pat_id = first["entry"][0]["response"]["location"].split("/")[1]
    assert second["entry"][0]["resource"]["id"] == pat_id
    obs_id = second["entry"][1]["response"]["location"].split("/")[1]
    assert (
        client.get(f"/Observation/{obs_id}").json()["subject"]["reference"] == f"Patient/{pat_id}"
    )
    # conditional update and conditional reference inside a transaction
    tx = bundle(
        "transaction",
        [
            {
                "resource": patient(identifier=ident, gender="male"),
                "request": {"method": "PUT", "url": f"Patient?identifier={SYSTEM}|{mrn}"},
            },
            {
                "resource": observation(
                    subject={"reference": f"Patient?identifier={SYSTEM}|{mrn}"}
                ),
                "request": {"method": "POST", "url": "Observation"},
            },
        ],
    )
    result = post_bundle(client, tx).json()
    assert result["entry"][0]["response"]["location"].startswith(f"Patient/{pat_id}/_history/2")
    obs_id = result["entry"][1]["response"]["location"].split("/")[1]
    assert (
        client.get(f"/Observation/{obs_id}").json()["subject"]["reference"] == f"Patient/{pat_id}"
    )


def test_transaction_patch_entry_with_binary(client: httpx.Client) -> None:
    rid = client.post("/Patient", json=patient(), headers=FHIR_JSON).json()["id"]
    ops = [{"op": "replace", "path": "/gender", "value": "male"}]
    binary = {
        "resourceType": "Binary",
        "contentType": "application/json-patch+json",
        "data": base64.b64encode(json.dumps(ops).encode()).decode(),
    }
    tx = bundle(
        "transaction",
        [{"resource": binary, "request": {"method": "PATCH", "url": f"Patient/{rid}"}}],
    )
    assert post_bundle(client, tx).status_code == 200
    assert client.get(f"/Patient/{rid}").json()["gender"] == "male"


def test_transaction_if_match_failure_is_412(client: httpx.Client) -> None:
    created = client.post("/Patient", json=patient(), headers=FHIR_JSON).json()
    tx = bundle(
        "transaction",
        [
            {
                "resource": created,
                "request": {"method": "PUT", "url": f"Patient/{created['id']}", "ifMatch": 'W/"9"'},
            }
        ],
    )
    assert post_bundle(client, tx).status_code == 412


def test_transaction_refuses_two_entries_on_one_resource(client: httpx.Client) -> None:
    rid = unique("dup")
    entry = {"resource": patient(id=rid), "request": {"method": "PUT", "url": f"Patient/{rid}"}}
    assert post_bundle(client, bundle("transaction", [entry, entry])).status_code == 400


def test_transaction_prefer_minimal_omits_resources(client: httpx.Client) -> None:
    tx = bundle(
        "transaction", [{"resource": patient(), "request": {"method": "POST", "url": "Patient"}}]
    )
    result = post_bundle(client, tx, Prefer="return=minimal").json()
    assert "resource" not in result["entry"][0]
    assert result["entry"][0]["response"]["status"] == "201 Created"


def test_batch_entries_succeed_or_fail_independently(client: httpx.Client) -> None:
    batch = bundle(
        "batch",
        [
            {"resource": patient(), "request": {"method": "POST", "url": "Patient"}},
            {
                "resource": observation(status="bogus"),
                "request": {"method": "POST", "url": "Observation"},
            },
            {"request": {"method": "GET", "url": "Patient/does-not-exist"}},
        ],
    )
    response = post_bundle(client, batch)
    assert response.status_code == 200
    ok, invalid, missing = response.json()["entry"]
    assert ok["response"]["status"] == "201 Created"
    assert invalid["response"]["status"].startswith("400")
    assert invalid["response"]["outcome"]["resourceType"] == "OperationOutcome"
    assert missing["response"]["status"].startswith("404")
    location = ok["response"]["location"]
    assert client.get("/" + location.split("/_history")[0]).status_code == 200


def test_bad_bundles_are_refused(client: httpx.Client) -> None:
    assert post_bundle(client, {"resourceType": "Patient"}).status_code == 400
    assert post_bundle(client, bundle("collection", [])).status_code == 400
    no_request = bundle("transaction", [{"resource": patient()}])
    response = post_bundle(client, no_request)
    assert response.status_code == 400
    assert "Bundle.entry[0]" in response.json()["issue"][0]["diagnostics"]
