"""JSON Patch, history at every level, and the outbox rows writes leave behind."""

from __future__ import annotations

import base64
import json
import time

import httpx
from sqlalchemy import create_engine, select, update

from app.fhir.tables import change_event, resource_history
from tests.helpers import FHIR_JSON, patient, unique

PATCH = {"Content-Type": "application/json-patch+json"}


def test_json_patch_updates_and_versions(client: httpx.Client) -> None:
    rid = client.post("/Patient", json=patient(), headers=FHIR_JSON).json()["id"]
    ops = [
        {"op": "test", "path": "/gender", "value": "female"},
        {"op": "replace", "path": "/gender", "value": "male"},
        {"op": "add", "path": "/active", "value": True},
    ]
    response = client.patch(f"/Patient/{rid}", json=ops, headers=PATCH)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["gender"] == "male" and body["active"] is True
    assert body["meta"]["versionId"] == "2"
    history = client.get(f"/Patient/{rid}/_history").json()
    assert history["entry"][0]["request"]["method"] == "PATCH"


def test_json_patch_errors(client: httpx.Client) -> None:
    rid = client.post("/Patient", json=patient(), headers=FHIR_JSON).json()["id"]
    failed_test = [{"op": "test", "path": "/gender", "value": "male"}]
    assert client.patch(f"/Patient/{rid}", json=failed_test, headers=PATCH).status_code == 412
    bad_path = [{"op": "replace", "path": "/nothing/here", "value": 1}]
    assert client.patch(f"/Patient/{rid}", json=bad_path, headers=PATCH).status_code == 422
    invalid_result = [{"op": "replace", "path": "/gender", "value": "girl"}]
    response = client.patch(f"/Patient/{rid}", json=invalid_result, headers=PATCH)
    assert response.status_code == 400
    assert "Patient.gender" in response.json()["issue"][0]["expression"]
    change_id = [{"op": "replace", "path": "/id", "value": "other"}]
    assert client.patch(f"/Patient/{rid}", json=change_id, headers=PATCH).status_code in (400, 422)
    stale = client.patch(f"/Patient/{rid}", json=[], headers={**PATCH, "If-Match": 'W/"3"'})
    assert stale.status_code == 412
    assert client.patch("/Patient/missing-one", json=[], headers=PATCH).status_code == 404
    assert client.get(f"/Patient/{rid}").json()["meta"]["versionId"] == "1"


def test_instance_history_newest_first_with_paging(client: httpx.Client) -> None:
    created = client.post("/Patient", json=patient(), headers=FHIR_JSON).json()
    rid = created["id"]
    for gender in ("male", "other", "unknown"):
        client.put(f"/Patient/{rid}", json={**created, "gender": gender}, headers=FHIR_JSON)
    page = client.get(f"/Patient/{rid}/_history", params={"_count": 2}).json()
    assert page["type"] == "history"
    assert [e["resource"]["meta"]["versionId"] for e in page["entry"]] == ["4", "3"]
    assert page["entry"][0]["response"]["etag"] == 'W/"4"'
    nxt = [link["url"] for link in page["link"] if link["relation"] == "next"][0]
    rest = client.get(nxt).json()
    assert [e["resource"]["meta"]["versionId"] for e in rest["entry"]] == ["2", "1"]
    assert not [link for link in rest["link"] if link["relation"] == "next"]


def test_type_and_system_history_since(client: httpx.Client) -> None:
    before = client.post("/Patient", json=patient(), headers=FHIR_JSON).json()
    time.sleep(0.01)
    since = client.post("/Patient", json=patient(), headers=FHIR_JSON).json()["meta"]["lastUpdated"]
    after = client.post("/Patient", json=patient(), headers=FHIR_JSON).json()
    type_history = client.get("/Patient/_history", params={"_since": since}).json()
    ids = [e["resource"]["id"] for e in type_history["entry"]]
    assert after["id"] in ids and before["id"] not in ids
    system = client.get("/_history", params={"_since": since, "_count": 500}).json()
    assert after["id"] in [e["fullUrl"].rsplit("/", 1)[1] for e in system["entry"]]
    assert client.get("/_history", params={"_since": "garbage"}).status_code == 400


def test_history_of_unknown_resource_is_404(client: httpx.Client) -> None:
    assert client.get("/Patient/not-there/_history").status_code == 404


def test_every_write_leaves_an_outbox_row(client: httpx.Client, database_url: str) -> None:
    created = client.post("/Patient", json=patient(), headers=FHIR_JSON).json()
    rid = created["id"]
    client.put(f"/Patient/{rid}", json=created, headers=FHIR_JSON)
    client.patch(f"/Patient/{rid}", json=[], headers=PATCH)
    client.delete(f"/Patient/{rid}")
    engine = create_engine(database_url)
    with engine.connect() as conn:
        rows = conn.execute(
            select(change_event.c.interaction, change_event.c.version_id)
            .where(change_event.c.resource_id == rid)
            .order_by(change_event.c.seq)
        ).all()
    engine.dispose()
    assert [tuple(r) for r in rows] == [("create", 1), ("update", 2), ("patch", 3), ("delete", 4)]


def test_failed_write_leaves_no_outbox_row(client: httpx.Client, database_url: str) -> None:
    rid = "never-written-x1"
    response = client.put(f"/Patient/{rid}", json=patient(id=rid, gender="bad"), headers=FHIR_JSON)
    assert response.status_code == 400
    engine = create_engine(database_url)
    with engine.connect() as conn:
        count = conn.execute(
            select(change_event.c.seq).where(change_event.c.resource_id == rid)
        ).all()
    engine.dispose()
    assert count == []


def test_patch_needs_the_json_patch_media_type(client: httpx.Client) -> None:
    rid = client.post("/Patient", json=patient(), headers=FHIR_JSON).json()["id"]
    ops = [{"op": "replace", "path": "/gender", "value": "male"}]
    for media in ("application/fhir+json", "application/json", "application/fhir+xml"):
        response = client.patch(f"/Patient/{rid}", json=ops, headers={"Content-Type": media})
        assert response.status_code == 415, (media, response.text)
    assert client.get(f"/Patient/{rid}").json()["meta"]["versionId"] == "1"


def test_version_numbers_out_of_range_are_404_or_400_not_500(client: httpx.Client) -> None:
    """A version number or _count no column holds ("²" is a digit to str.isdigit, 2**80 no
    INTEGER), in a URL, a transaction entry or a paging token, is refused, not a 500."""
    rid = client.post("/Patient", json=patient(), headers=FHIR_JSON).json()["id"]
    for version in ("99999999999999999999999", "2147483648", "\u00b2"):
        response = client.get(f"/Patient/{rid}/_history/{version}")
        assert response.status_code == 404, response.text
        assert response.json()["resourceType"] == "OperationOutcome"
    assert client.get(f"/Patient/{rid}/_history/1").status_code == 200
    bundle = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [{"request": {"method": "GET", "url": f"Patient/{rid}/_history/{2**70}"}}],
    }
    response = client.post("/", json=bundle, headers=FHIR_JSON)
    assert response.status_code == 200, response.text
    assert response.json()["entry"][0]["response"]["status"].startswith("404")
    assert client.get(f"/Patient/{rid}/_history", params={"_count": "\u00b2"}).status_code == 400
    for at in ([2**70, "Patient", rid, 1], [1, "Patient", rid, 2**70]):
        token = base64.urlsafe_b64encode(json.dumps({"at": at}).encode()).decode().rstrip("=")
        response = client.get(f"/Patient/{rid}/_history", params={"_page": token})
        assert response.status_code == 400, response.text


def test_a_failing_json_patch_names_its_operation(client: httpx.Client) -> None:
    """A failing operation's OperationOutcome names it (index in the patch, op, path; its
    location the JSON Pointer `/n` into the patch): the library's message said only that
    some path was missing, not which of the client's operations failed. A patch whose
    result is invalid names the element of the resource instead."""
    rid = client.post("/Patient", json=patient(), headers=FHIR_JSON).json()["id"]
    ok = {"op": "replace", "path": "/gender", "value": "male"}
    cases = [
        ({"op": "test", "path": "/birthDate", "value": "1999-01-01"}, 412, "test /birthDate"),
        ({"op": "remove", "path": "/telecom/0"}, 422, "remove /telecom/0"),
        ({"op": "replace", "path": "/name/5/family", "value": "X"}, 422, "replace /name/5/family"),
        ({"op": "frobnicate", "path": "/gender"}, 422, "frobnicate /gender"),
        ({"op": "replace", "path": "/id", "value": "other"}, 422, "replace /id"),
    ]
    for failing, status, named in cases:
        response = client.patch(f"/Patient/{rid}", json=[ok, ok, failing], headers=PATCH)
        assert response.status_code == status, (failing, response.text)
        issue = response.json()["issue"][0]
        assert issue["location"] == ["/2"], issue
        assert issue["diagnostics"].startswith(f"JSON Patch operation 2 ({named}): "), issue
    not_an_object = client.patch(f"/Patient/{rid}", json=[ok, "remove"], headers=PATCH)
    assert not_an_object.status_code == 422
    assert not_an_object.json()["issue"][0]["location"] == ["/1"]
    invalid = [ok, {"op": "add", "path": "/name/0/given/-", "value": 5}]
    response = client.patch(f"/Patient/{rid}", json=invalid, headers=PATCH)
    assert response.status_code == 400
    assert response.json()["issue"][0]["expression"] == ["Patient.name[0].given[1]"]
    assert client.get(f"/Patient/{rid}").json()["meta"]["versionId"] == "1"
    entry = {
        "resource": {
            "resourceType": "Binary",
            "contentType": "application/json-patch+json",
            "data": base64.b64encode(json.dumps([ok, cases[1][0]]).encode()).decode(),
        },
        "request": {"method": "PATCH", "url": f"Patient/{rid}"},
    }
    tx = {"resourceType": "Bundle", "type": "transaction", "entry": [entry]}
    refused = client.post("", json=tx, headers=FHIR_JSON)
    assert refused.status_code == 422
    issue = refused.json()["issue"][0]
    assert issue["location"] == ["/1"] and issue["expression"] == ["Bundle.entry[0]"], issue
    assert "JSON Patch operation 1 (remove /telecom/0)" in issue["diagnostics"]


def test_history_shows_a_resurrecting_put_as_the_create_it_was(
    client: httpx.Client, database_url: str
) -> None:
    """A PUT that brings back a deleted resource is answered 201, but history said
    "200 OK" for it (it guessed from the row: POST or version 1). Whether a version created
    its resource is now stored when it is written; by id, by a conditional update whose
    body names the deleted id, and in a transaction alike. A row written before migration
    0022 (created NULL) is answered as before."""
    statuses: dict[str, list[str]] = {}
    ids = []
    for way in ("put", "conditional", "transaction"):
        created = client.post("/Patient", json=patient(), headers=FHIR_JSON).json()
        rid = created["id"]
        ids.append(rid)
        assert client.delete(f"/Patient/{rid}").status_code == 204
        body = {**created, "identifier": [{"system": "urn:test:h", "value": unique("h")}]}
        if way == "put":
            back = client.put(f"/Patient/{rid}", json=body, headers=FHIR_JSON)
        elif way == "conditional":
            criteria = f"identifier=urn:test:h|{body['identifier'][0]['value']}"
            back = client.put(f"/Patient?{criteria}", json=body, headers=FHIR_JSON)
        else:
            entry = {"resource": body, "request": {"method": "PUT", "url": f"Patient/{rid}"}}
            tx = {"resourceType": "Bundle", "type": "transaction", "entry": [entry]}
            back = client.post("", json=tx, headers=FHIR_JSON)
            assert back.json()["entry"][0]["response"]["status"] == "201 Created", back.text
        assert back.status_code in (200, 201), back.text
        if way != "transaction":
            assert back.status_code == 201, (way, back.text)
        client.put(f"/Patient/{rid}", json=body, headers=FHIR_JSON)  # a plain update: 200
        history = client.get(f"/Patient/{rid}/_history").json()
        statuses[way] = [e["response"]["status"] for e in history["entry"]]
    for way, seen in statuses.items():
        assert seen == ["200 OK", "201 Created", "204 No Content", "201 Created"], (way, seen)
    # Rows from before the column: as the row alone shows (version 1 created, the rest 200).
    engine = create_engine(database_url)
    with engine.begin() as conn:
        h = resource_history.c
        conn.execute(update(resource_history).where(h.id == ids[0]).values(created=None))
    engine.dispose()
    history = client.get(f"/Patient/{ids[0]}/_history").json()
    seen = [e["response"]["status"] for e in history["entry"]]
    assert seen == ["200 OK", "200 OK", "204 No Content", "201 Created"]


def test_history_shows_a_put_that_created_as_the_put_it_was(client: httpx.Client) -> None:
    """A conditional update that matched nothing (and whose body named no id) was stored as
    a POST, so history said `POST Patient` for a version the client wrote by PUT. It is now a
    PUT of the id it was given (R4 bundle.html: entry.request is how the version was written;
    a transaction resolves the same request to `PUT Patient/[id]`), 201 as answered. An
    update-as-create by id and a conditional update in a transaction say the same."""
    seen: dict[str, tuple[dict[str, str], str]] = {}
    for way in ("conditional", "by-id", "transaction"):
        value = unique("c")
        body = patient(identifier=[{"system": "urn:test:cu", "value": value}])
        if way == "conditional":
            made = client.put(
                f"/Patient?identifier=urn:test:cu|{value}", json=body, headers=FHIR_JSON
            )
            assert made.status_code == 201, made.text
            rid = made.json()["id"]
        elif way == "by-id":
            rid = unique("cu")
            made = client.put(f"/Patient/{rid}", json={**body, "id": rid}, headers=FHIR_JSON)
            assert made.status_code == 201, made.text
        else:
            url = f"Patient?identifier=urn:test:cu|{value}"
            tx = {
                "resourceType": "Bundle",
                "type": "transaction",
                "entry": [{"resource": body, "request": {"method": "PUT", "url": url}}],
            }
            made = client.post("", json=tx, headers=FHIR_JSON)
            assert made.status_code == 200, made.text
            rid = made.json()["entry"][0]["response"]["location"].split("/")[1]
        (entry,) = client.get(f"/Patient/{rid}/_history").json()["entry"]
        seen[way] = (entry["request"], entry["response"]["status"])
        assert seen[way] == ({"method": "PUT", "url": f"Patient/{rid}"}, "201 Created"), seen


def test_a_patch_whose_copies_grow_the_resource_without_bound_is_refused(
    client: httpx.Client,
) -> None:
    """Each `copy` of a list into itself doubles it: forty such operations (2 KB of patch)
    would grow the Patient 2^40-fold and hold the worker for hours. The copies of one patch
    may add at most MAX_COPIED elements; the one that would pass it is named (422)."""
    rid = client.post("/Patient", json=patient(), headers=FHIR_JSON).json()["id"]
    doubling = [{"op": "copy", "from": "/name", "path": "/name/-"}] * 40
    started = time.monotonic()
    response = client.patch(f"/Patient/{rid}", json=doubling, headers=PATCH)
    assert response.status_code == 422, response.text[:300]
    assert time.monotonic() - started < 10
    issue = response.json()["issue"][0]
    assert "copies would add more than" in issue["diagnostics"]
    assert client.get(f"/Patient/{rid}").json()["meta"]["versionId"] == "1"
    few = [{"op": "copy", "from": "/name/0", "path": "/name/-"}] * 3  # ordinary copies pass
    assert client.patch(f"/Patient/{rid}", json=few, headers=PATCH).status_code == 200
