"""R4 http.html behaviours found wrong by a black-box probe of the running server."""

from __future__ import annotations

from typing import Any

import httpx

from tests.conftest import LiveServer
from tests.helpers import FHIR_JSON, patient, unique
from tests.smart_helpers import register_client
from tests.test_audit_trail import entity_refs, events_of


def _versions(client: httpx.Client, rid: str, **params: str) -> list[str]:
    bundle = client.get(f"/Patient/{rid}/_history", params=params).json()
    return [e["resource"]["meta"]["versionId"] for e in bundle.get("entry", [])]


def test_history_at_gives_the_versions_current_during_its_period(client: httpx.Client) -> None:
    """R4 http.html#history: `_at` includes "resource versions that were current at some
    point during the time period specified" (a date of any precision is a period). Every
    version up to the moment was listed, those replaced long before it too; `_at=2026`
    listed nothing written in 2026."""
    created = client.post("/Patient", json=patient(), headers=FHIR_JSON).json()
    rid = created["id"]
    stamps = [created["meta"]["lastUpdated"]]
    for gender in ("male", "other", "unknown"):
        body = {**created, "gender": gender}
        stamps.append(
            client.put(f"/Patient/{rid}", json=body, headers=FHIR_JSON).json()["meta"][
                "lastUpdated"
            ]
        )
    # The moment version 3 was written: only version 3 was current then.
    assert _versions(client, rid, _at=stamps[2]) == ["3"]
    # Just before it (to the microsecond): version 2.
    assert _versions(client, rid, _at=_minus_one_microsecond(stamps[2])) == ["2"]
    # The year all four were written in: each was current at some point of it.
    year = stamps[0][:4]
    assert _versions(client, rid, _at=year) == ["4", "3", "2", "1"]
    # Before the resource existed: nothing; long after: the current version only.
    assert _versions(client, rid, _at="2000-01-01") == []
    assert _versions(client, rid, _at="2999-01-01T00:00:00Z") == ["4"]


def test_history_instants_out_of_range_are_400_not_500(client: httpx.Client) -> None:
    """`9999-12-31T23:59:59-14:00` is a valid dateTime whose UTC moment is in year 10000:
    writing it back into the audit trail's query failed with a 500."""
    for name in ("_since", "_at"):
        response = client.get("/_history", params={name: "9999-12-31T23:59:59-14:00"})
        assert response.status_code == 400, response.text
        assert response.json()["issue"][0]["expression"] == [name]


def test_history_instant_with_an_unencoded_plus_offset(client: httpx.Client) -> None:
    """A `+` left unencoded in a URL arrives as a space (`…T00:00:00 05:00`): in an instant
    a space can mean nothing else, so it is read as the `+` of the offset rather than
    refused."""
    rid = client.post("/Patient", json=patient(), headers=FHIR_JSON).json()["id"]
    response = client.get(f"/Patient/{rid}/_history?_since=2000-01-01T00:00:00+05:00")
    assert response.status_code == 200, response.text
    assert len(response.json()["entry"]) == 1


def _minus_one_microsecond(instant: str) -> str:
    from datetime import datetime, timedelta

    moment = datetime.fromisoformat(instant.replace("Z", "+00:00")) - timedelta(microseconds=1)
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")


def test_vread_answers_conditional_requests_with_304(client: httpx.Client) -> None:
    """RFC 9110 13.1.2/13.1.3 on a GET of `_history/1`: the client holding that version (its
    ETag, or a date not older than it) gets 304, as on a read; the vread ignored both."""
    created = client.post("/Patient", json=patient(), headers=FHIR_JSON)
    rid = created.json()["id"]
    url = f"/Patient/{rid}/_history/1"
    unchanged = client.get(url, headers={"If-None-Match": 'W/"1"'})
    assert unchanged.status_code == 304 and unchanged.content == b""
    assert unchanged.headers["etag"] == 'W/"1"'
    since = client.get(url, headers={"If-Modified-Since": created.headers["last-modified"]})
    assert since.status_code == 304
    assert client.get(url, headers={"If-None-Match": 'W/"2"'}).status_code == 200
    old = "Mon, 01 Jan 2001 00:00:00 GMT"
    assert client.get(url, headers={"If-Modified-Since": old}).status_code == 200


def test_delete_of_a_resource_that_never_existed_is_204(client: httpx.Client) -> None:
    """R4 http.html#delete: "Upon successful deletion, or if the resource does not exist at
    all, the server should return either a 200 OK ... or a 204 No Content"; it was 404, and
    a transaction deleting it failed whole. If-Match still fails: nothing current matches."""
    rid = unique("never")
    response = client.delete(f"/Patient/{rid}")
    assert response.status_code == 204, response.text
    assert response.content == b""
    assert client.get(f"/Patient/{rid}").status_code == 404  # nothing was written
    refused = client.delete(f"/Patient/{rid}", headers={"If-Match": 'W/"1"'})
    assert refused.status_code == 412
    assert refused.json()["issue"][0]["code"] == "conflict"
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"request": {"method": "DELETE", "url": f"Patient/{rid}"}},
            {"resource": patient(), "request": {"method": "POST", "url": "Patient"}},
        ],
    }
    answer = client.post("/", json=bundle, headers=FHIR_JSON)
    assert answer.status_code == 200, answer.text
    statuses = [e["response"]["status"] for e in answer.json()["entry"]]
    assert statuses == ["204 No Content", "201 Created"]


def test_a_form_body_outside_post_search_is_415(client: httpx.Client) -> None:
    """A form (application/x-www-form-urlencoded) is the body of POST _search only; posted
    as a resource or a Bundle it was parsed as search parameters and refused as 400 "a
    resource must be a JSON object", where the media type is what is wrong (415). A Binary
    still takes a form as its content."""
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    for method, path in (("POST", "/Patient"), ("POST", ""), ("PUT", "/Patient/x")):
        response = client.request(method, path or "/", content=b"name=Ada", headers=form)
        assert response.status_code == 415, (method, path, response.text)
        assert response.json()["issue"][0]["code"] == "not-supported"
    assert client.post("/Patient/_search", content=b"name=Ada", headers=form).status_code == 200
    binary = client.post("/Binary", content=b"name=Ada", headers=form)
    assert binary.status_code == 201, binary.text
    assert binary.json()["contentType"] == "application/x-www-form-urlencoded"


def _bundle(kind: str, *entries: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": kind, "entry": list(entries)}


def test_an_entry_outcome_goes_in_response_outcome(client: httpx.Client) -> None:
    """R4 Bundle.entry.response.outcome holds "hints and warnings produced as part of
    processing this entry"; the informational OperationOutcome of a conditional delete that
    matched nothing was put in `entry.resource`, as if it were the resource deleted."""
    entry = {"request": {"method": "DELETE", "url": f"Patient?identifier=urn:x|{unique()}"}}
    for kind in ("batch", "transaction"):
        answer = client.post("/", json=_bundle(kind, entry), headers=FHIR_JSON)
        assert answer.status_code == 200, answer.text
        (result,) = answer.json()["entry"]
        assert "resource" not in result
        assert result["response"]["status"] == "200 OK"
        assert result["response"]["outcome"]["issue"][0]["severity"] == "information"


def test_head_entries_answer_as_get_without_the_resource(client: httpx.Client) -> None:
    """Bundle.entry.request.method allows HEAD (R4 http-verb); a HEAD entry was refused with
    405 (the router knows GET only, as HTTP HEAD is mapped to GET before it)."""
    rid = client.post("/Patient", json=patient(), headers=FHIR_JSON).json()["id"]
    entry = {"request": {"method": "HEAD", "url": f"Patient/{rid}"}}
    for kind in ("batch", "transaction"):
        answer = client.post("/", json=_bundle(kind, entry), headers=FHIR_JSON)
        assert answer.status_code == 200, answer.text
        (result,) = answer.json()["entry"]
        assert result["response"]["status"] == "200 OK", result
        assert result["response"]["etag"] == 'W/"1"'
        assert "resource" not in result


def test_an_entry_url_on_another_server_is_400_naming_it(client: httpx.Client) -> None:
    """An absolute request.url not under this server's base was cut into segments and
    answered as an unknown resource type 'fhir' (404); it names another server (400 at
    request.url). One under this base still works, the base itself included."""
    entry = {"request": {"method": "GET", "url": "http://other.example/fhir/Patient/1"}}
    answer = client.post("/", json=_bundle("batch", entry), headers=FHIR_JSON).json()
    outcome = answer["entry"][0]["response"]["outcome"]
    assert answer["entry"][0]["response"]["status"] == "400 Bad Request"
    assert outcome["issue"][0]["expression"] == ["Bundle.entry[0].request.url"]
    base = str(client.base_url).rstrip("/")
    ours = {"request": {"method": "GET", "url": f"{base}?_type=Patient&_count=1"}}
    answer = client.post("/", json=_bundle("batch", ours), headers=FHIR_JSON).json()
    assert answer["entry"][0]["response"]["status"] == "200 OK"


def test_bundle_entry_that_is_an_empty_object_is_400(client: httpx.Client) -> None:
    """`"entry": {}` is no array; being falsy it was taken as no entries (200, nothing run)."""
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": {}}
    response = client.post("/", json=bundle, headers=FHIR_JSON)
    assert response.status_code == 400
    assert response.json()["issue"][0]["expression"] == ["Bundle.entry"]


def test_405_on_a_compartment_allows_only_reads(client: httpx.Client) -> None:
    """RFC 9110 15.5.6: Allow lists what the target answers. A DELETE or POST on a
    compartment search (Patient/123/Observation) was refused with an Allow header listing
    PUT, PATCH and DELETE, the refused method among them."""
    rid = client.post("/Patient", json=patient(), headers=FHIR_JSON).json()["id"]
    for method, target in (("DELETE", "Observation"), ("POST", "*"), ("PUT", "Observation")):
        response = client.request(method, f"/Patient/{rid}/{target}", json=patient())
        assert response.status_code == 405, response.text
        assert response.headers["allow"] == "GET, HEAD"
        assert response.json()["issue"][0]["code"] == "not-supported"


def test_metadata_mode_is_checked(client: httpx.Client) -> None:
    """R4 http.html#capabilities: mode is full, normative or terminology (a
    TerminologyCapabilities). Any mode, an unknown one too, was answered with the
    CapabilityStatement: for terminology that is another resource type than asked for."""
    for mode in ("full", "normative"):
        response = client.get("/metadata", params={"mode": mode})
        assert response.json()["resourceType"] == "CapabilityStatement"
    terminology = client.get("/metadata", params={"mode": "terminology"})
    assert terminology.status_code == 400
    assert terminology.json()["issue"][0]["code"] == "not-supported"
    bogus = client.get("/metadata", params={"mode": "bogus"})
    assert bogus.status_code == 400
    assert bogus.json()["issue"][0]["expression"] == ["mode"]


def test_bundle_get_entries_honour_summary_and_elements(client: httpx.Client) -> None:
    """A GET entry of a batch or transaction behaves as the GET sent alone: `_elements` and
    `_summary` were applied by the HTTP layer only, so entries got whole resources, and a
    bad `_summary` was not refused."""
    rid = client.post("/Patient", json=patient(), headers=FHIR_JSON).json()["id"]
    entries = [
        {"request": {"method": "GET", "url": f"Patient/{rid}?_elements=gender"}},
        {"request": {"method": "GET", "url": f"Patient?_id={rid}&_summary=text"}},
    ]
    for kind in ("batch", "transaction"):
        answer = client.post("/", json=_bundle(kind, *entries), headers=FHIR_JSON)
        assert answer.status_code == 200, answer.text
        read, search = (e["resource"] for e in answer.json()["entry"])
        assert "name" not in read and read["gender"] == "female"
        assert read["meta"]["tag"][0]["code"] == "SUBSETTED"
        (match,) = search["entry"]
        assert set(match["resource"]) == {"resourceType", "id", "meta"}
    bad = {"request": {"method": "GET", "url": f"Patient/{rid}?_summary=bogus"}}
    refused = client.post("/", json=_bundle("batch", bad), headers=FHIR_JSON).json()
    outcome = refused["entry"][0]["response"]["outcome"]
    assert outcome["issue"][0]["expression"] == ["Bundle.entry[0].request.url"]


def test_a_bad_summary_on_a_write_refuses_it_before_it_is_made(client: httpx.Client) -> None:
    """`PUT …?_summary=bogus` was answered 400 after the update had been committed: the
    client is told it failed while version 2 exists. Now it is refused first."""
    created = client.post("/Patient", json=patient(), headers=FHIR_JSON).json()
    rid = created["id"]
    body = {**created, "gender": "male"}
    response = client.put(f"/Patient/{rid}?_summary=bogus", json=body, headers=FHIR_JSON)
    assert response.status_code == 400
    assert client.get(f"/Patient/{rid}").json()["meta"]["versionId"] == "1"


def test_a_conditional_create_that_matched_records_what_it_returned(
    live_server: LiveServer, client: httpx.Client, base_url: str
) -> None:
    """If-None-Exist with one match returns that resource (200) without writing: a
    disclosure like a read. Its AuditEvent named no resource and no patient (the door
    recorded no access), so the trail could not tell whose record the client was shown."""
    marker = unique("audit")
    identifier = [{"system": "urn:probe", "value": marker}]
    rid = client.post("/Patient", json=patient(identifier=identifier), headers=FHIR_JSON)
    rid = rid.json()["id"]
    auth = live_server.app.state.auth
    scope = "system/Patient.crs"
    registered = register_client(auth, "backend", scope, jwks={"keys": []})
    token = auth.local_token(registered.name, scope)["access_token"]
    headers = {"Authorization": f"Bearer {token}", **FHIR_JSON}
    with httpx.Client(base_url=base_url, headers=headers, timeout=30) as http:
        matched = http.post(
            "/Patient",
            json=patient(identifier=identifier),
            headers={"If-None-Exist": f"identifier=urn:probe|{marker}"},
        )
    assert matched.status_code == 200, matched.text
    [event] = events_of(client, registered.client_id)
    assert entity_refs(event, "4") == [f"Patient/{rid}/_history/1"]
    assert entity_refs(event, "1") == [f"Patient/{rid}"]


def _conditional_post(full_url: str, marker: str) -> dict[str, Any]:
    identifier = [{"system": "urn:probe", "value": marker}]
    return {
        "fullUrl": full_url,
        "resource": patient(identifier=identifier),
        "request": {
            "method": "POST",
            "url": "Patient",
            "ifNoneExist": f"identifier=urn:probe|{marker}",
        },
    }


def _observation_of(reference: str) -> dict[str, Any]:
    body = {"resourceType": "Observation", "status": "final", "code": {"text": "x"}}
    return {
        "resource": {**body, "subject": {"reference": reference}},
        "request": {"method": "POST", "url": "Observation"},
    }


def test_two_conditional_creates_of_one_resource_share_it(client: httpx.Client) -> None:
    """Two entries creating the same resource conditionally (same If-None-Exist, nothing
    stored yet): the first creates it and the second matches it, but the second's fullUrl
    had been given an id of its own up front, so a reference to it was rewritten to a
    Patient that never existed, and committed. Both fullUrls now name the one created."""
    marker = unique("twice")
    bundle = _bundle(
        "transaction",
        _conditional_post("urn:uuid:a", marker),
        _conditional_post("urn:uuid:b", marker),
        _observation_of("urn:uuid:b"),
    )
    answer = client.post("/", json=bundle, headers=FHIR_JSON)
    assert answer.status_code == 200, answer.text
    first, second, observation = answer.json()["entry"]
    assert first["response"]["status"] == "201 Created"
    assert second["response"]["status"] == "200 OK"
    assert second["fullUrl"] == first["fullUrl"]
    reference = observation["resource"]["subject"]["reference"]
    assert first["fullUrl"].endswith(reference)
    assert client.get(f"/{reference}").status_code == 200


def test_a_conditional_create_that_ends_elsewhere_fails_the_transaction(
    client: httpx.Client,
) -> None:
    """A condition resolved up front can come to match something else while the entries run
    (here entry 0, without a condition, creates what entry 1's If-None-Exist then finds):
    the references rewritten to entry 1's id would dangle, so the transaction is refused."""
    marker = unique("later")
    plain = _conditional_post("urn:uuid:c", marker)
    del plain["request"]["ifNoneExist"]
    bundle = _bundle(
        "transaction",
        plain,
        _conditional_post("urn:uuid:d", marker),
        _observation_of("urn:uuid:d"),
    )
    answer = client.post("/", json=bundle, headers=FHIR_JSON)
    assert answer.status_code == 409, answer.text
    issue = answer.json()["issue"][0]
    assert issue["expression"] == ["Bundle.entry[1].request.ifNoneExist"]
    found = client.get("/Patient", params={"identifier": f"urn:probe|{marker}"}).json()
    assert found["total"] == 0  # rolled back


def test_history_count_zero_returns_no_entries(client: httpx.Client) -> None:
    """R4 http.html#history, _count: the server "cannot return more" than asked for; with
    `_count=0` it returned one entry (and a next link)."""
    rid = client.post("/Patient", json=patient(), headers=FHIR_JSON).json()["id"]
    for url in (f"/Patient/{rid}/_history", "/Patient/_history", "/_history"):
        bundle = client.get(url, params={"_count": "0"}).json()
        assert bundle["type"] == "history"
        assert "entry" not in bundle
        assert [link["relation"] for link in bundle["link"]] == ["self"]


def test_405_on_audit_event_writes_allows_only_reads(client: httpx.Client) -> None:
    """AuditEvent is read-only through the API: its 405s carried the Allow header of a
    writable type (POST, PUT, PATCH, DELETE), the refused method among them."""
    event = {"resourceType": "AuditEvent", "id": "x"}
    for method, path in (("POST", "/AuditEvent"), ("PUT", "/AuditEvent/x"),
                         ("DELETE", "/AuditEvent/x"), ("DELETE", "/AuditEvent?_id=x")):  # fmt: skip
        body = event if method in ("POST", "PUT") else None
        response = client.request(method, path, json=body, headers=FHIR_JSON)
        assert response.status_code == 405, (method, path, response.text)
        assert response.headers["allow"] == "GET, HEAD", (method, path)


def test_a_conditional_create_whose_match_is_deleted_first_fails_unnamed(
    client: httpx.Client,
) -> None:
    """DELETE entries run first: a conditional create resolved up front to the resource a
    DELETE entry removes ends on a new one, and links to its fullUrl would name the deleted
    one; refused (409). The id found up front is not named in the refusal: in a client's
    transaction it may be a resource outside what the client may see (conditions are
    resolved before each entry's own authorization)."""
    marker = unique("gone")
    identifier = [{"system": "urn:probe", "value": marker}]
    found = client.post("/Patient", json=patient(identifier=identifier), headers=FHIR_JSON)
    rid = found.json()["id"]
    bundle = _bundle(
        "transaction",
        {"request": {"method": "DELETE", "url": f"Patient/{rid}"}},
        _conditional_post("urn:uuid:e", marker),
        _observation_of("urn:uuid:e"),
    )
    answer = client.post("/", json=bundle, headers=FHIR_JSON)
    assert answer.status_code == 409, answer.text
    issue = answer.json()["issue"][0]
    assert issue["expression"] == ["Bundle.entry[1].request.ifNoneExist"]
    assert rid not in issue["diagnostics"]
    assert client.get(f"/Patient/{rid}").status_code == 200  # rolled back
