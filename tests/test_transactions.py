"""batch and transaction Bundles at POST /fhir."""

from __future__ import annotations

import base64
import json
import uuid

import httpx

from app.fhir.search import SearchParams
from app.fhir.search.criteria import plan
from app.fhir.search.in_memory import matches_all
from app.fhir.search.indexer import index_rows
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


def _created_id(entry: dict) -> str:
    return str(entry["response"]["location"].split("/")[1])


def test_transaction_rewrites_urn_uuid_in_uri_elements_and_narrative(
    client: httpx.Client,
) -> None:
    org_urn = f"urn:uuid:{uuid.uuid4()}"
    div = (
        '<div xmlns="http://www.w3.org/1999/xhtml"><a href="' + org_urn + '">org</a>'
        "<img src='" + org_urn + "'/></div>"
    )
    pat = patient(
        text={"status": "generated", "div": div},
        extension=[
            {"url": "http://example.org/uri", "valueUri": org_urn},
            {"url": "http://example.org/url", "valueUrl": org_urn},
            {"url": "http://example.org/str", "valueString": org_urn},
        ],
        # Identifier.value is a string: an identifier that looks like the link is kept.
        identifier=[{"system": org_urn, "value": org_urn}],
        managingOrganization={"reference": org_urn},
    )
    tx = bundle(
        "transaction",
        [
            {
                "fullUrl": org_urn,
                "resource": {"resourceType": "Organization", "name": "O"},
                "request": {"method": "POST", "url": "Organization"},
            },
            {"resource": pat, "request": {"method": "POST", "url": "Patient"}},
        ],
    )
    response = post_bundle(client, tx)
    assert response.status_code == 200, response.text
    org_entry, pat_entry = response.json()["entry"]
    org = f"Organization/{_created_id(org_entry)}"
    stored = client.get(f"/Patient/{_created_id(pat_entry)}").json()
    assert [e.get("valueUri") or e.get("valueUrl") for e in stored["extension"][:2]] == [org, org]
    assert stored["extension"][2]["valueString"] == org_urn
    assert stored["identifier"] == [{"system": org, "value": org_urn}]
    assert f'href="{org}"' in stored["text"]["div"]
    assert f"src='{org}'" in stored["text"]["div"]
    assert org_urn not in stored["text"]["div"]
    assert stored["managingOrganization"]["reference"] == org


def test_transaction_conditional_update_with_another_body_id_is_400(
    client: httpx.Client,
) -> None:
    mrn = unique("cu")
    existing = client.post(
        "/Patient", json=patient(identifier=[{"system": SYSTEM, "value": mrn}]), headers=FHIR_JSON
    ).json()
    other = patient(id="someone-else", identifier=[{"system": SYSTEM, "value": mrn}])
    tx = bundle(
        "transaction",
        [{"resource": other, "request": {"method": "PUT", "url": f"Patient?identifier={mrn}"}}],
    )
    response = post_bundle(client, tx)
    assert response.status_code == 400, response.text
    issue = response.json()["issue"][0]
    assert issue["expression"] == ["Bundle.entry[0].resource.id"]
    assert client.get(f"/Patient/{existing['id']}").json()["meta"]["versionId"] == "1"
    assert client.get("/Patient/someone-else").status_code == 404


def test_duplicate_full_urls_are_refused_naming_both_entries(client: httpx.Client) -> None:
    urn = f"urn:uuid:{uuid.uuid4()}"
    entries = [
        {"fullUrl": urn, "resource": patient(), "request": {"method": "POST", "url": "Patient"}},
        {"fullUrl": urn, "resource": patient(), "request": {"method": "POST", "url": "Patient"}},
    ]
    for kind in ("transaction", "batch"):
        response = post_bundle(client, bundle(kind, entries))
        assert response.status_code == 400, response.text
        issue = response.json()["issue"][0]
        assert issue["expression"] == ["Bundle.entry[0].fullUrl", "Bundle.entry[1].fullUrl"]


def test_transaction_prefer_minimal_keeps_read_results(client: httpx.Client) -> None:
    created = client.post("/Patient", json=patient(), headers=FHIR_JSON).json()
    tx = bundle(
        "transaction",
        [
            {"request": {"method": "GET", "url": f"Patient/{created['id']}"}},
            {"resource": patient(), "request": {"method": "POST", "url": "Patient"}},
        ],
    )
    read, write = post_bundle(client, tx, Prefer="return=minimal").json()["entry"]
    assert read["resource"]["id"] == created["id"]
    assert "resource" not in write


def test_transaction_errors_name_the_entry_and_the_element(client: httpx.Client) -> None:
    missing_ref = observation(subject={"reference": f"Patient?identifier={unique('none')}"})
    bad_param = observation(subject={"reference": "Patient?no-such-param=1"})
    for resource, status in ((missing_ref, 412), (bad_param, 400)):
        tx = bundle(
            "transaction",
            [
                {"resource": patient(), "request": {"method": "POST", "url": "Patient"}},
                {"resource": resource, "request": {"method": "POST", "url": "Observation"}},
            ],
        )
        response = post_bundle(client, tx)
        assert response.status_code == status, response.text
        issue = response.json()["issue"][0]
        assert issue["diagnostics"].startswith("Bundle.entry[1]")
        assert issue["expression"] == ["Bundle.entry[1].resource.subject.reference"]
    invalid = bundle(
        "transaction",
        [
            {
                "resource": observation(status="bogus"),
                "request": {"method": "POST", "url": "Observation"},
            }
        ],
    )
    issue = post_bundle(client, invalid).json()["issue"][0]
    assert issue["expression"] == ["Bundle.entry[0].resource.status"]
    batch = bundle("batch", [{"request": {"method": "FOO", "url": "Patient"}}])
    outcome = post_bundle(client, batch).json()["entry"][0]["response"]["outcome"]
    assert outcome["issue"][0]["expression"] == ["Bundle.entry[0].request.method"]
    assert outcome["issue"][0]["diagnostics"].count("Bundle.entry[0]") == 1


def test_overlapping_targets_are_400_naming_both_entries(client: httpx.Client) -> None:
    mrn = unique("ov")
    rid = client.post(
        "/Patient", json=patient(identifier=[{"system": SYSTEM, "value": mrn}]), headers=FHIR_JSON
    ).json()["id"]
    by_id = {"resource": patient(id=rid), "request": {"method": "PUT", "url": f"Patient/{rid}"}}
    by_condition = {
        "resource": patient(identifier=[{"system": SYSTEM, "value": mrn}]),
        "request": {"method": "PUT", "url": f"Patient?identifier={SYSTEM}|{mrn}"},
    }
    delete_by_condition = {
        "request": {"method": "DELETE", "url": f"Patient?identifier={SYSTEM}|{mrn}"}
    }
    delete_by_id = {"request": {"method": "DELETE", "url": f"Patient/{rid}"}}
    for pair in (
        [by_id, by_condition],
        [delete_by_id, by_id],
        [delete_by_condition, by_id],
    ):
        response = post_bundle(client, bundle("transaction", pair))
        assert response.status_code == 400, response.text
        issue = response.json()["issue"][0]
        assert issue["expression"] == ["Bundle.entry[0].request.url", "Bundle.entry[1].request.url"]
    assert client.get(f"/Patient/{rid}").json()["meta"]["versionId"] == "1"


def test_batch_read_if_modified_since_is_a_fhir_instant(client: httpx.Client) -> None:
    """Bundle.entry.request.ifModifiedSince is an instant (2099-01-01T00:00:00Z), not an
    HTTP date: a read entry of a resource not modified since then answers 304."""
    rid = client.post("/Patient", json=patient(), headers=FHIR_JSON).json()["id"]
    reads = [
        ("2099-01-01T00:00:00Z", "304"),
        ("2099-01-01T00:00:00.5+02:00", "304"),
        ("2000-01-01T00:00:00Z", "200"),
        ("Fri, 01 Jan 2099 00:00:00 GMT", "304"),  # an HTTP date from a lenient client
        ("garbage", "200"),  # ignored, as in the header (RFC 9110 13.1.3)
    ]
    entries = [
        {"request": {"method": "GET", "url": f"Patient/{rid}", "ifModifiedSince": since}}
        for since, _ in reads
    ]
    response = post_bundle(client, bundle("batch", entries))
    assert response.status_code == 200, response.text
    statuses = [e["response"]["status"].split()[0] for e in response.json()["entry"]]
    assert statuses == [status for _, status in reads]


def test_prefer_operation_outcome_puts_an_outcome_in_each_write_entry(
    client: httpx.Client,
) -> None:
    """R4 Bundle.entry.response.outcome: with Prefer: return=OperationOutcome each write entry
    answers with an outcome instead of its resource, in a transaction and in a batch alike."""
    existing = client.post("/Patient", json=patient(), headers=FHIR_JSON).json()
    for kind in ("transaction", "batch"):
        entries = [
            {"resource": patient(), "request": {"method": "POST", "url": "Patient"}},
            {
                "resource": {**existing, "active": kind == "batch"},
                "request": {"method": "PUT", "url": f"Patient/{existing['id']}"},
            },
            {"request": {"method": "GET", "url": f"Patient/{existing['id']}"}},
        ]
        response = post_bundle(
            client, bundle(kind, entries), Prefer="handling=lenient, return=OperationOutcome"
        )
        assert response.status_code == 200, response.text
        created, updated, read = response.json()["entry"]
        for entry, verb in ((created, "created"), (updated, "updated")):
            assert "resource" not in entry
            outcome = entry["response"]["outcome"]
            assert outcome["resourceType"] == "OperationOutcome"
            assert outcome["issue"][0]["severity"] == "information"
            assert verb in outcome["issue"][0]["diagnostics"]
        assert created["response"]["status"] == "201 Created"
        assert read["resource"]["id"] == existing["id"]
        assert "outcome" not in read["response"]


def _patch_entry(url: str, ops: list[dict]) -> dict:
    binary = {
        "resourceType": "Binary",
        "contentType": "application/json-patch+json",
        "data": base64.b64encode(json.dumps(ops).encode()).decode(),
    }
    return {"resource": binary, "request": {"method": "PATCH", "url": url}}


def _patch_beside_new_patient(
    client: httpx.Client, obs_id: str, ops: list[dict], full_url: str
) -> tuple[str, dict]:
    """A transaction: PATCH Observation/obs_id with `ops`, POST a Patient at `full_url`.
    The new Patient's id, and the Observation as patched."""
    tx = bundle(
        "transaction",
        [
            _patch_entry(f"Observation/{obs_id}", ops),
            {
                "fullUrl": full_url,
                "resource": patient(),
                "request": {"method": "POST", "url": "Patient"},
            },
        ],
    )
    response = post_bundle(client, tx)
    assert response.status_code == 200, response.text
    pat_id = response.json()["entry"][1]["response"]["location"].split("/")[1]
    return pat_id, client.get(f"/Observation/{obs_id}").json()


def test_transaction_patch_references_to_full_urls_are_rewritten(client: httpx.Client) -> None:
    """R4 transaction: "Servers SHALL replace all matching links in the bundle": a JSON
    Patch in a Binary that points at a urn:uuid: fullUrl gets the new id as well."""
    old = client.post("/Patient", json=patient(), headers=FHIR_JSON).json()["id"]
    subject = {"reference": f"Patient/{old}"}
    obs = observation(subject=subject)
    obs_id = client.post("/Observation", json=obs, headers=FHIR_JSON).json()["id"]
    new_patient = f"urn:uuid:{uuid.uuid4()}"
    ops = [
        {"op": "replace", "path": "/subject/reference", "value": new_patient},
        {"op": "add", "path": "/performer", "value": [{"reference": new_patient}]},
    ]
    pat_id, patched = _patch_beside_new_patient(client, obs_id, ops, new_patient)
    assert patched["subject"]["reference"] == f"Patient/{pat_id}"
    assert patched["performer"] == [{"reference": f"Patient/{pat_id}"}]


def test_transaction_patch_conditional_reference_must_match_one(client: httpx.Client) -> None:
    old = client.post("/Patient", json=patient(), headers=FHIR_JSON).json()["id"]
    subject = {"reference": f"Patient/{old}"}
    obs = observation(subject=subject)
    obs_id = client.post("/Observation", json=obs, headers=FHIR_JSON).json()["id"]
    missing = f"Patient?identifier={unique('none')}"
    ops = [{"op": "replace", "path": "/subject/reference", "value": missing}]
    response = post_bundle(
        client, bundle("transaction", [_patch_entry(f"Observation/{obs_id}", ops)])
    )
    assert response.status_code == 412, response.text
    assert response.json()["issue"][0]["expression"] == ["Bundle.entry[0].resource.data"]
    assert client.get(f"/Observation/{obs_id}").json()["subject"] == subject


def test_transaction_patch_links_are_rewritten_by_element_type(client: httpx.Client) -> None:
    """R4 transaction: links to fullUrls are replaced in references and in elements of type
    uri, url, oid, uuid (and the narrative), not in other strings: a JSON Patch value is
    judged by the type of the element its path names. An Identifier's value (a string) that
    equals a fullUrl stays as sent; Observation.implicitRules and an extension's valueUri
    (uri) point at the new resource."""
    obs_id = client.post("/Observation", json=observation(), headers=FHIR_JSON).json()["id"]
    full_url = f"urn:uuid:{uuid.uuid4()}"
    link = {"url": "http://example.org/linked", "valueUri": full_url}
    ops = [
        {"op": "add", "path": "/identifier", "value": [{"value": full_url}]},
        {"op": "add", "path": "/identifier/-", "value": {"system": "urn:ietf:rfc:3986"}},
        {"op": "add", "path": "/identifier/1/value", "value": full_url},
        {"op": "add", "path": "/implicitRules", "value": full_url},
        {"op": "add", "path": "/extension", "value": [link]},
        {"op": "add", "path": "/note", "value": [{"text": full_url}]},
    ]
    pat_id, patched = _patch_beside_new_patient(client, obs_id, ops, full_url)
    new = f"Patient/{pat_id}"
    assert patched["identifier"] == [
        {"value": full_url},
        {"system": "urn:ietf:rfc:3986", "value": full_url},
    ]
    assert patched["note"] == [{"text": full_url}]
    assert patched["implicitRules"] == new
    assert patched["extension"] == [{**link, "valueUri": new}]


def _ref_to(system: str, value: str) -> dict:
    return {"reference": f"Patient?identifier={system}|{value}"}


def test_conditional_references_see_what_the_transaction_writes(client: httpx.Client) -> None:
    """A conditional reference to a Patient POSTed by another entry of the same transaction
    found nothing (412): it was looked up in the database before any entry ran. It is now
    resolved against what the transaction leaves (HAPI resolves it after the writes): the
    Bundle's own creates and updates count, whatever their place in the Bundle, and what it
    deletes or replaces no longer matches as stored."""
    mrn, obs = unique("mrn"), unique("o")
    ident = [{"system": SYSTEM, "value": mrn}]
    tx = bundle(
        "transaction",
        [
            {"resource": observation(subject=_ref_to(SYSTEM, mrn)),
             "request": {"method": "POST", "url": "Observation"}},
            {"resource": patient(identifier=ident),
             "request": {"method": "POST", "url": "Patient"}},
            {"resource": observation(id=obs, subject={"reference": f"Patient?identifier={mrn}"}),
             "request": {"method": "PUT", "url": f"Observation/{obs}"}},
        ],
    )  # fmt: skip
    response = post_bundle(client, tx)
    assert response.status_code == 200, response.text
    entries = response.json()["entry"]
    pat_id = entries[1]["response"]["location"].split("/")[1]
    for entry in (entries[0], entries[2]):
        obs_id = entry["response"]["location"].split("/")[1]
        subject = client.get(f"/Observation/{obs_id}").json()["subject"]
        assert subject == {"reference": f"Patient/{pat_id}"}
    # Stored and POSTed again with the same identifier: two matches once it commits.
    again = bundle("transaction", [tx["entry"][1], tx["entry"][0]])
    refused = post_bundle(client, again)
    assert refused.status_code == 412, refused.text
    assert "matches 2 resources" in refused.json()["issue"][0]["diagnostics"]
    assert refused.json()["issue"][0]["expression"] == [
        "Bundle.entry[1].resource.subject.reference"
    ]
    # Deleted by the same transaction: no match (it resolved to the deleted one, dangling).
    deleting = bundle(
        "transaction",
        [
            {"request": {"method": "DELETE", "url": f"Patient/{pat_id}"}},
            tx["entry"][0],
        ],
    )
    gone = post_bundle(client, deleting)
    assert gone.status_code == 412, gone.text
    assert "matches 0 resources" in gone.json()["issue"][0]["diagnostics"]
    # Replaced by the same transaction: its new identifier finds it, the old one does not.
    new_mrn = unique("mrn")
    renamed = patient(id=pat_id, identifier=[{"system": SYSTEM, "value": new_mrn}])
    put = {"resource": renamed, "request": {"method": "PUT", "url": f"Patient/{pat_id}"}}
    old_ref = {"resource": observation(subject=_ref_to(SYSTEM, mrn)),
               "request": {"method": "POST", "url": "Observation"}}  # fmt: skip
    assert post_bundle(client, bundle("transaction", [put, old_ref])).status_code == 412
    new_ref = {"resource": observation(subject=_ref_to(SYSTEM, new_mrn)),
               "request": {"method": "POST", "url": "Observation"}}  # fmt: skip
    done = post_bundle(client, bundle("transaction", [new_ref, put]))
    assert done.status_code == 200, done.text
    obs_id = done.json()["entry"][0]["response"]["location"].split("/")[1]
    assert (
        client.get(f"/Observation/{obs_id}").json()["subject"]["reference"] == f"Patient/{pat_id}"
    )


IN_MEMORY_CRITERIA = [
    f"identifier={SYSTEM}|m1", "identifier=m1", "identifier=|m1", f"identifier={SYSTEM}|",
    "identifier=other|m1", "identifier:not=m1", "family=exa", "family:exact=Example",
    "family:exact=example", "name:contains=xamp", "birthdate=1970", "birthdate=gt1980",
    "birthdate=le1970-01-01", "gender=female,male", "gender:not=male", "gender:missing=true",
    "general-practitioner:missing=true", "organization=Organization/o1", "organization=o1",
    "telecom=phone|555", "phone=555", "address-city=spring", "active=true",
]  # fmt: skip


def test_a_bundle_resource_is_judged_as_the_database_would_judge_it(
    client: httpx.Client, base_url: str
) -> None:
    """Conditional references judge the Bundle's own resources from the index rows they
    will have (search/in_memory.py): on a stored Patient, each criterion answers as the
    database's search does."""
    body = patient(
        identifier=[{"system": SYSTEM, "value": "m1"}],
        telecom=[{"system": "phone", "value": "555"}],
        address=[{"city": "Springfield"}],
        managingOrganization={"reference": "Organization/o1"},
        active=True,
    )
    assert_judged_as_searched(client, base_url, body, IN_MEMORY_CRITERIA)


def assert_judged_as_searched(
    client: httpx.Client, base_url: str, body: dict, criteria_list: list[str]
) -> None:
    """Each criterion judged in memory on `body`'s index rows answers as the database's
    search does once `body` is stored."""
    rtype = body["resourceType"]
    rid = client.post(f"/{rtype}", json=body, headers=FHIR_JSON).json()["id"]
    rows = index_rows(rtype, rid, body)
    for criteria in criteria_list:
        params = SearchParams.parse_query(criteria, rtype, strict=True)
        judged = matches_all([plan(c, base_url) for c in params.criteria], rid, rows)
        found = client.get(f"/{rtype}?_id={rid}&{criteria}").json().get("entry", [])
        assert judged is (len(found) == 1), criteria


OBSERVATION_CRITERIA = [
    "value-quantity=5.4||mg", "value-quantity=5.4||MG-X", "value-quantity=5.4||g",
    "value-quantity=gt5", "value-quantity=5.4|http://example.org/units|MG-X",
    "value-quantity=5.4|http://unitsofmeasure.org|mg", "code=c1", "code=http://example.org/codes|",
    "code-value-quantity=c1$5.4||mg", "code-value-quantity=c1$lt5||mg", "status=final",
]  # fmt: skip


def test_a_bundle_observation_is_judged_as_the_database_would_judge_it(
    client: httpx.Client, base_url: str
) -> None:
    """As above for quantities: the unit text is compared only where it is not the code
    (criteria.UNIT_NOT_CODE, a `differs` condition in the plan)."""
    body = observation(
        code={"coding": [{"system": "http://example.org/codes", "code": "c1"}]},
        valueQuantity={"value": 5.4, "unit": "mg", "system": "http://example.org/units",
                       "code": "MG-X"},
    )  # fmt: skip
    assert_judged_as_searched(client, base_url, body, OBSERVATION_CRITERIA)


def test_a_large_transaction_stores_awkward_text_and_decimals_exactly(
    client: httpx.Client,
) -> None:
    """Enough entries that every table gets many rows at once (on PostgreSQL such tables go
    by COPY, whose text format escapes tabs, newlines and backslashes, and spells NULL
    `\\N`): each value must come back and be found exactly as sent."""
    tag = unique("copy")
    awkward = ["tab\there", "new\nline", "back\\slash", "\\N", "zürich ñ 北京", "quote'\"", "\\."]
    entries = []
    for n, text in enumerate(awkward * 2):
        family = f"{tag}{n}"
        body = patient(name=[{"family": family, "given": [text]}])
        body["extension"] = [{"url": "http://example.org/x", "valueDecimal": 1.50}]
        entries.append({"resource": body, "request": {"method": "POST", "url": "Patient"}})
    raw = json.dumps(bundle("transaction", entries)).replace("1.5}", "1.50}")
    response = client.post("", content=raw, headers=FHIR_JSON)
    assert response.status_code == 200, response.text
    for n, (entry, text) in enumerate(zip(response.json()["entry"], awkward * 2, strict=True)):
        location = entry["response"]["location"].split("/_history")[0]
        stored = client.get(f"/{location}")
        assert stored.json()["name"][0]["given"] == [text]
        assert '"valueDecimal":1.50' in stored.text.replace(" ", "")
        escaped = text.replace("\\", "\\\\")  # a backslash escapes in search values
        found = client.get("/Patient", params={"family:exact": f"{tag}{n}", "given:exact": escaped})
        assert [e["resource"]["id"] for e in found.json().get("entry", [])] == [
            location.split("/")[1]
        ], text
