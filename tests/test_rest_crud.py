"""create / read / vread / update / delete, versioning and Prefer over real HTTP."""

from __future__ import annotations

import httpx

from tests.helpers import FHIR_JSON, observation, patient, unique


def create(client: httpx.Client, body: dict, **headers: str) -> httpx.Response:
    return client.post(f"/{body['resourceType']}", json=body, headers={**FHIR_JSON, **headers})


def test_create_returns_201_with_location_etag_and_meta(
    client: httpx.Client, base_url: str
) -> None:
    response = create(client, patient())
    assert response.status_code == 201
    body = response.json()
    rid = body["id"]
    assert response.headers["location"] == f"{base_url}/Patient/{rid}/_history/1"
    assert response.headers["etag"] == 'W/"1"'
    assert response.headers["last-modified"].endswith("GMT")
    assert body["meta"]["versionId"] == "1"
    assert body["meta"]["lastUpdated"].endswith("Z")
    assert response.headers["content-type"].startswith("application/fhir+json")


def test_server_owns_id_and_meta_on_create(client: httpx.Client) -> None:
    sent = patient(
        id="client-chosen",
        meta={
            "versionId": "99",
            "lastUpdated": "2000-01-01T00:00:00Z",
            "tag": [{"code": "keep-me"}],
        },
    )
    body = create(client, sent).json()
    assert body["id"] != "client-chosen"
    assert body["meta"]["versionId"] == "1"
    assert body["meta"]["lastUpdated"] != "2000-01-01T00:00:00Z"
    assert body["meta"]["tag"] == [{"code": "keep-me"}]


def test_read_and_vread(client: httpx.Client) -> None:
    created = create(client, patient()).json()
    rid = created["id"]
    read = client.get(f"/Patient/{rid}")
    assert read.status_code == 200
    assert read.json() == created
    assert read.headers["etag"] == 'W/"1"'
    assert client.get(f"/Patient/{rid}/_history/1").json() == created
    missing = client.get(f"/Patient/{rid}/_history/7")
    assert missing.status_code == 404
    assert missing.json()["resourceType"] == "OperationOutcome"


def test_read_unknown_id_is_404_outcome(client: httpx.Client) -> None:
    response = client.get("/Patient/does-not-exist")
    assert response.status_code == 404
    assert response.json()["issue"][0]["code"] == "not-found"


def test_unknown_type_is_404_outcome(client: httpx.Client) -> None:
    for response in (
        client.get("/Pationt/1"),
        client.post("/Pationt", json={"resourceType": "Pationt"}, headers=FHIR_JSON),
    ):
        assert response.status_code == 404
        assert response.json()["resourceType"] == "OperationOutcome"


def test_update_increments_version_and_keeps_history(client: httpx.Client) -> None:
    created = create(client, patient()).json()
    rid = created["id"]
    changed = {**created, "gender": "male"}
    response = client.put(f"/Patient/{rid}", json=changed, headers=FHIR_JSON)
    assert response.status_code == 200
    assert response.json()["meta"]["versionId"] == "2"
    assert response.headers["etag"] == 'W/"2"'
    assert client.get(f"/Patient/{rid}/_history/1").json()["gender"] == "female"
    assert client.get(f"/Patient/{rid}").json()["gender"] == "male"


def test_update_as_create_with_client_id(client: httpx.Client, base_url: str) -> None:
    rid = unique("pat")
    response = client.put(f"/Patient/{rid}", json=patient(id=rid), headers=FHIR_JSON)
    assert response.status_code == 201
    assert response.headers["location"] == f"{base_url}/Patient/{rid}/_history/1"
    assert client.get(f"/Patient/{rid}").status_code == 200


def test_update_body_id_must_match_url(client: httpx.Client) -> None:
    response = client.put("/Patient/abc", json=patient(id="xyz"), headers=FHIR_JSON)
    assert response.status_code == 400
    assert "Patient.id" in response.json()["issue"][0]["expression"]
    missing_id = client.put("/Patient/abc", json=patient(), headers=FHIR_JSON)
    assert missing_id.status_code == 400


def test_if_match_mismatch_is_412(client: httpx.Client) -> None:
    created = create(client, patient()).json()
    rid = created["id"]
    stale = client.put(f"/Patient/{rid}", json=created, headers={**FHIR_JSON, "If-Match": 'W/"5"'})
    assert stale.status_code == 412
    fresh = client.put(f"/Patient/{rid}", json=created, headers={**FHIR_JSON, "If-Match": 'W/"1"'})
    assert fresh.status_code == 200
    delete = client.delete(f"/Patient/{rid}", headers={"If-Match": 'W/"1"'})
    assert delete.status_code == 412


def test_delete_then_read_is_410_and_history_keeps_it(client: httpx.Client) -> None:
    rid = create(client, patient()).json()["id"]
    assert client.delete(f"/Patient/{rid}").status_code == 204
    gone = client.get(f"/Patient/{rid}")
    assert gone.status_code == 410
    assert gone.json()["issue"][0]["code"] == "deleted"
    again = client.delete(f"/Patient/{rid}")
    assert again.status_code == 204
    history = client.get(f"/Patient/{rid}/_history").json()
    methods = [e["request"]["method"] for e in history["entry"]]
    assert methods == ["DELETE", "POST"]
    assert "resource" not in history["entry"][0]
    assert client.get(f"/Patient/{rid}/_history/1").status_code == 200
    assert client.get(f"/Patient/{rid}/_history/2").status_code == 410
    assert client.get(f"/Patient/{rid}").status_code == 410


def test_update_after_delete_resurrects_with_next_version(client: httpx.Client) -> None:
    created = create(client, patient()).json()
    rid = created["id"]
    client.delete(f"/Patient/{rid}")
    response = client.put(f"/Patient/{rid}", json=created, headers=FHIR_JSON)
    assert response.status_code == 201
    assert response.json()["meta"]["versionId"] == "3"


def test_prefer_return_variants(client: httpx.Client) -> None:
    minimal = create(client, patient(), Prefer="return=minimal")
    assert minimal.status_code == 201
    assert minimal.content == b""
    assert "location" in minimal.headers
    outcome = create(client, patient(), Prefer="return=OperationOutcome")
    assert outcome.json()["resourceType"] == "OperationOutcome"
    representation = create(client, patient(), Prefer="return=representation")
    assert representation.json()["resourceType"] == "Patient"


def test_conditional_read_not_modified(client: httpx.Client) -> None:
    created = create(client, patient()).json()
    response = client.get(f"/Patient/{created['id']}", headers={"If-None-Match": 'W/"1"'})
    assert response.status_code == 304


def test_observation_round_trip(client: httpx.Client) -> None:
    created = create(client, observation()).json()
    assert client.get(f"/Observation/{created['id']}").json()["valueQuantity"]["value"] == 72


def test_if_match_star_and_lists(client: httpx.Client) -> None:
    created = client.post("/Patient", json=patient(), headers=FHIR_JSON).json()
    rid = created["id"]
    star = client.put(f"/Patient/{rid}", json=created, headers={**FHIR_JSON, "If-Match": "*"})
    assert star.status_code == 200, star.text
    listed = {**FHIR_JSON, "If-Match": 'W/"7", W/"2"'}
    assert client.put(f"/Patient/{rid}", json=created, headers=listed).status_code == 200
    assert client.delete(f"/Patient/{rid}").status_code == 204
    gone = client.put(f"/Patient/{rid}", json=created, headers={**FHIR_JSON, "If-Match": "*"})
    assert gone.status_code == 412
    new = client.put("/Patient/never-there", json=patient(id="never-there"),
                     headers={**FHIR_JSON, "If-Match": "*"})  # fmt: skip
    assert new.status_code == 412


def test_if_none_match_star_and_lists_on_read(client: httpx.Client) -> None:
    rid = client.post("/Patient", json=patient(), headers=FHIR_JSON).json()["id"]
    assert client.get(f"/Patient/{rid}", headers={"If-None-Match": "*"}).status_code == 304
    listed = {"If-None-Match": 'W/"9", W/"1"'}
    assert client.get(f"/Patient/{rid}", headers=listed).status_code == 304
    assert client.get(f"/Patient/{rid}", headers={"If-None-Match": 'W/"9"'}).status_code == 200


def test_accept_quality_values_are_honoured(client: httpx.Client) -> None:
    rid = client.post("/Patient", json=patient(), headers=FHIR_JSON).json()["id"]
    cases = {
        "application/fhir+xml;q=0.1, application/fhir+json;q=0.9": "application/fhir+json",
        "application/fhir+json;q=0.2, application/fhir+xml": "application/fhir+xml",
        "application/fhir+json;q=0, application/fhir+xml;q=0.5": "application/fhir+xml",
    }
    for accept, media in cases.items():
        response = client.get(f"/Patient/{rid}", headers={"Accept": accept})
        assert response.headers["content-type"].startswith(media), accept
    refused = client.get(f"/Patient/{rid}", headers={"Accept": "application/fhir+json;q=0"})
    assert refused.status_code == 406


def test_head_carries_the_headers_of_get(client: httpx.Client) -> None:
    rid = client.post("/Patient", json=patient(), headers=FHIR_JSON).json()["id"]
    got = client.get(f"/Patient/{rid}")
    head = client.head(f"/Patient/{rid}")
    assert head.status_code == 200
    assert head.content == b""
    for name in ("content-type", "content-length", "etag", "last-modified"):
        assert head.headers[name] == got.headers[name], name


def test_405_says_what_is_allowed(client: httpx.Client) -> None:
    cases = [
        ("PUT", "/Patient", "GET, HEAD, POST"),
        ("DELETE", "/metadata", "GET, HEAD"),
        ("OPTIONS", "/metadata", "GET, HEAD"),
        ("POST", "/Patient/x/_history/1", "GET, HEAD"),
        ("GET", "/Patient/_search", "POST"),
        ("PUT", "", "GET, HEAD, POST"),
    ]
    for method, path, allowed in cases:
        response = client.request(method, path, json=patient(), headers=FHIR_JSON)
        assert response.status_code == 405, (method, path, response.text)
        assert response.headers["allow"] == allowed, (method, path)


def test_matched_conditional_create_outcome_says_nothing_was_created(
    client: httpx.Client,
) -> None:
    mrn = unique("m")
    ident = [{"system": "http://example.org/mrn", "value": mrn}]
    client.post("/Patient", json=patient(identifier=ident), headers=FHIR_JSON)
    headers = {
        **FHIR_JSON,
        "If-None-Exist": f"identifier=http://example.org/mrn|{mrn}",
        "Prefer": "return=OperationOutcome",
    }
    response = client.post("/Patient", json=patient(identifier=ident), headers=headers)
    assert response.status_code == 200
    message = response.json()["issue"][0]["diagnostics"]
    assert "nothing was created" in message and "updated" not in message


def test_put_with_if_none_match_star_only_creates(client: httpx.Client) -> None:
    """RFC 9110 13.1.2: `If-None-Match: *` on a PUT holds only where no current version
    exists; otherwise 412 and nothing is written. A deleted resource has none."""
    rid = unique("inm")
    star = {**FHIR_JSON, "If-None-Match": "*"}
    first = client.put(f"/Patient/{rid}", json=patient(id=rid), headers=star)
    assert first.status_code == 201, first.text
    again = client.put(f"/Patient/{rid}", json=patient(id=rid, active=False), headers=star)
    assert again.status_code == 412, again.text
    assert again.json()["resourceType"] == "OperationOutcome"
    listed = {**FHIR_JSON, "If-None-Match": 'W/"1"'}
    assert client.put(f"/Patient/{rid}", json=patient(id=rid), headers=listed).status_code == 412
    current = client.get(f"/Patient/{rid}")
    assert current.headers["etag"] == 'W/"1"'
    assert "active" not in current.json()
    other = {**FHIR_JSON, "If-None-Match": 'W/"7"'}
    assert client.put(f"/Patient/{rid}", json=patient(id=rid), headers=other).status_code == 200
    assert client.delete(f"/Patient/{rid}").status_code == 204
    revived = client.put(f"/Patient/{rid}", json=patient(id=rid), headers=star)
    assert revived.status_code == 201, revived.text


def test_transaction_put_entry_with_if_none_match_star(client: httpx.Client) -> None:
    rid = unique("inm-tx")
    entry = {
        "resource": patient(id=rid),
        "request": {"method": "PUT", "url": f"Patient/{rid}", "ifNoneMatch": "*"},
    }
    tx = {"resourceType": "Bundle", "type": "transaction", "entry": [entry]}
    assert client.post("", json=tx, headers=FHIR_JSON).status_code == 200
    refused = client.post("", json=tx, headers=FHIR_JSON)
    assert refused.status_code == 412, refused.text
    assert client.get(f"/Patient/{rid}").headers["etag"] == 'W/"1"'


MALFORMED_IF_MATCH = ("W/1", "1", '"abc"', 'W/"x"', 'W/"1", 2', 'W/"1", *', ",")


def test_a_malformed_if_match_is_400_naming_the_header(client: httpx.Client) -> None:
    """R4 http.html#concurrency: If-Match carries the ETag `W/"n"`. `W/1`, `1`, `"abc"` were
    read as versions (`W/1` and `1` as version 1), so a write passed or failed on a
    precondition the client never stated. Now each is 400 with the header as location
    ("http." + its name), on an existing resource and a missing one alike, and nothing is
    written. Empty list elements are skipped (RFC 9110 5.6.1), and the strong form `"2"`
    (HAPI and Medplum take it) matches version 2."""
    created = client.post("/Patient", json=patient(), headers=FHIR_JSON).json()
    rid = created["id"]
    patch_type = {"Content-Type": "application/json-patch+json"}
    for value in MALFORMED_IF_MATCH:
        for target in (rid, "never-there"):
            answers = [
                client.put(f"/Patient/{target}", json={**created, "id": target},
                           headers={**FHIR_JSON, "If-Match": value}),
                client.patch(f"/Patient/{target}", json=[],
                             headers={**patch_type, "If-Match": value}),
                client.delete(f"/Patient/{target}", headers={"If-Match": value}),
            ]  # fmt: skip
            for answer in answers:
                assert answer.status_code == 400, (value, target, answer.text)
                issue = answer.json()["issue"][0]
                assert issue["location"] == ["http.If-Match"], issue
                assert "If-Match" in issue["diagnostics"]
        conditional = client.put(f"/Patient?_id={rid}", json=created,
                                 headers={**FHIR_JSON, "If-Match": value})  # fmt: skip
        assert conditional.status_code == 400, (value, conditional.text)
    assert client.get(f"/Patient/{rid}").json()["meta"]["versionId"] == "1"
    assert client.get("/Patient/never-there").status_code == 404
    listed = {**FHIR_JSON, "If-Match": ', W/"1" ,'}  # empty list elements are ignored
    assert client.put(f"/Patient/{rid}", json=created, headers=listed).status_code == 200
    strong = client.put(f"/Patient/{rid}", json=created, headers={**FHIR_JSON, "If-Match": '"2"'})
    assert strong.status_code == 200, strong.text
    stale = client.put(f"/Patient/{rid}", json=created, headers={**FHIR_JSON, "If-Match": '"2"'})
    assert stale.status_code == 412


def test_a_malformed_entry_if_match_is_400_at_the_entry(client: httpx.Client) -> None:
    """The same for Bundle.entry.request.ifMatch: a transaction is refused whole, naming
    the element; a batch answers that entry 400 and runs the others."""
    created = client.post("/Patient", json=patient(), headers=FHIR_JSON).json()
    rid = created["id"]
    for value in ("W/1", "1", '"abc"', 'W/"x"'):
        put = {"resource": created,
               "request": {"method": "PUT", "url": f"Patient/{rid}", "ifMatch": value}}  # fmt: skip
        other = {"resource": patient(), "request": {"method": "POST", "url": "Patient"}}
        tx = {"resourceType": "Bundle", "type": "transaction", "entry": [other, put]}
        refused = client.post("", json=tx, headers=FHIR_JSON)
        assert refused.status_code == 400, (value, refused.text)
        assert refused.json()["issue"][0]["expression"] == ["Bundle.entry[1].request.ifMatch"]
        batch = client.post("", json={**tx, "type": "batch"}, headers=FHIR_JSON).json()
        statuses = [e["response"]["status"] for e in batch["entry"]]
        assert statuses == ["201 Created", "400 Bad Request"], (value, batch)
        outcome = batch["entry"][1]["response"]["outcome"]
        assert outcome["issue"][0]["expression"] == ["Bundle.entry[1].request.ifMatch"]
    assert client.get(f"/Patient/{rid}").json()["meta"]["versionId"] == "1"


def test_a_conditional_delete_honours_if_match(client: httpx.Client) -> None:
    """A conditional delete ignored If-Match (the router never passed it on): a stale tag
    deleted the resource anyway and a malformed one went unnoticed. It now acts as on a
    delete by id: 400 when malformed, 412 when it does not name the current version or
    nothing matches, and the delete when it does."""
    mrn = unique("del")
    created = create(client, patient(identifier=[{"system": "urn:test:del", "value": mrn}]))
    rid = created.json()["id"]
    url = f"/Patient?identifier=urn:test:del|{mrn}"
    malformed = client.delete(url, headers={"If-Match": "W/1"})
    assert malformed.status_code == 400, malformed.text
    assert malformed.json()["issue"][0]["location"] == ["http.If-Match"]
    assert client.delete(url, headers={"If-Match": 'W/"2"'}).status_code == 412
    assert client.get(f"/Patient/{rid}").status_code == 200
    assert client.delete(url, headers={"If-Match": 'W/"1"'}).status_code == 204
    assert client.get(f"/Patient/{rid}").status_code == 410
    assert client.delete(url, headers={"If-Match": 'W/"1"'}).status_code == 412
    assert client.delete(url).status_code == 200  # nothing matched, nothing asked: as before
