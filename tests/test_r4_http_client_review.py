"""The R4 http.html and search.html behaviours a demanding client leans on, each checked as
the server answers it today: `_summary` and `_elements` on read and search, `_format` and
`_pretty`, conditional reads (304), HEAD, `Prefer: handling`, 406/415, the headers of a
vread and of writes, and history `_at` at every level. Where the spec leaves the answer
open the test says which one this server gives."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from tests.helpers import FHIR_JSON, observation, patient, unique

SUBSETTED = {"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue",
             "code": "SUBSETTED"}  # fmt: skip
NARRATIVE = {"status": "generated", "div": '<div xmlns="http://www.w3.org/1999/xhtml">hr</div>'}


@pytest.fixture
def stored(client: httpx.Client) -> dict[str, Any]:
    """A Patient in two versions and an Observation of it with narrative."""
    created = client.post("/Patient", json=patient(telecom=[{"system": "phone", "value": "1"}]),
                          headers=FHIR_JSON)  # fmt: skip
    assert created.status_code == 201, created.text
    first = created.json()
    updated = client.put(f"/Patient/{first['id']}", json={**first, "gender": "male"},
                         headers=FHIR_JSON)  # fmt: skip
    assert updated.status_code == 200, updated.text
    obs = observation(subject={"reference": f"Patient/{first['id']}"}, text=NARRATIVE)
    made = client.post("/Observation", json=obs, headers=FHIR_JSON)
    assert made.status_code == 201, made.text
    return {"pid": first["id"], "created": created, "updated": updated, "obs": made.json()}


def _subsetted(resource: dict[str, Any]) -> bool:
    return SUBSETTED in resource.get("meta", {}).get("tag", [])


def _matches(bundle: dict[str, Any]) -> list[dict[str, Any]]:
    return [e["resource"] for e in bundle.get("entry", []) if e["search"]["mode"] == "match"]


def test_summary_on_read_and_search(client: httpx.Client, stored: dict[str, Any]) -> None:
    """search.html#summary: `true` the summary elements, `text` text, id, meta and the
    mandatory top-level elements, `data` all but text, `count` (search only) the total,
    `false` everything; each subset marked SUBSETTED. On a read, `count` (defined for search
    only) gives the whole resource, unmarked."""
    oid = stored["obs"]["id"]
    for answer in (
        client.get(f"/Observation/{oid}", params={"_summary": s})
        for s in ("true", "text", "data", "false", "count")
    ):
        assert answer.status_code == 200, answer.text
    read = {s: client.get(f"/Observation/{oid}", params={"_summary": s}).json()
            for s in ("true", "text", "data", "false", "count")}  # fmt: skip
    assert set(read["true"]) == {"resourceType", "id", "meta", "status", "code", "subject",
                                 "valueQuantity"} and _subsetted(read["true"])  # fmt: skip
    assert set(read["text"]) == {"resourceType", "id", "meta", "text", "status", "code"}
    assert _subsetted(read["text"])
    assert "text" not in read["data"] and "valueQuantity" in read["data"]
    assert _subsetted(read["data"])
    for whole in (read["false"], read["count"]):
        assert whole["text"] == NARRATIVE and not _subsetted(whole)
    search = {s: client.get("/Observation", params={"_id": oid, "_summary": s}).json()
              for s in ("true", "text", "data", "false", "count")}  # fmt: skip
    assert search["count"]["total"] == 1 and "entry" not in search["count"]
    for s in ("true", "text", "data"):
        assert _matches(search[s]) == [read[s]], s
    assert _matches(search["false"]) == [read["false"]]
    bad = client.get(f"/Observation/{oid}", params={"_summary": "yes"})
    assert bad.status_code == 400 and bad.json()["issue"][0]["expression"] == ["_summary"]


def test_elements_keep_mandatory_elements_and_mark_the_subset(
    client: httpx.Client, stored: dict[str, Any]
) -> None:
    """search.html#elements: the named top-level elements, and "Servers SHOULD always return
    mandatory elements whether they are requested or not" (Observation status and code),
    marked SUBSETTED; on a read as on a search's matches."""
    oid = stored["obs"]["id"]
    read = client.get(f"/Observation/{oid}", params={"_elements": "subject"}).json()
    assert set(read) == {"resourceType", "id", "meta", "status", "code", "subject"}
    assert _subsetted(read)
    found = client.get("/Observation", params={"_id": oid, "_elements": "subject"}).json()
    assert _matches(found) == [read]


def test_format_and_pretty(client: httpx.Client, stored: dict[str, Any]) -> None:
    """http.html#mime-type: `_format` overrides Accept (json, xml or their MIME types);
    `_pretty=true` indents; any other `_pretty` is plain output; a format we cannot give
    is 406."""
    url = f"/Patient/{stored['pid']}"
    xml = client.get(url, params={"_format": "xml"}, headers={"Accept": "application/fhir+json"})
    assert xml.headers["content-type"].startswith("application/fhir+xml")
    assert xml.text.startswith("<?xml") and "\n  <id" not in xml.text
    pretty = client.get(url, params={"_format": "application/fhir+xml", "_pretty": "true"})
    assert "\n  <id" in pretty.text
    compact = client.get(url, params={"_format": "json"})
    assert compact.headers["content-type"].startswith("application/fhir+json")
    assert "\n" not in compact.text
    indented = client.get(url, params={"_format": "json", "_pretty": "true"})
    assert indented.text.startswith('{\n  "resourceType"')
    assert json.loads(indented.text) == compact.json()
    assert "\n" not in client.get(url, params={"_pretty": "maybe"}).text
    assert client.get(url, params={"_format": "text/html"}).status_code == 406


def test_conditional_read_and_head(client: httpx.Client, stored: dict[str, Any]) -> None:
    """http.html#read and RFC 9110: If-None-Match (a tag, a list, `*`) and If-Modified-Since
    give 304 with the ETag and no body; If-None-Match wins over If-Modified-Since; an
    unparseable date is ignored. HEAD gives GET's status and headers without the body."""
    url = f"/Patient/{stored['pid']}"
    since = stored["updated"].headers["last-modified"]
    for headers in ({"If-None-Match": 'W/"2"'}, {"If-None-Match": 'W/"1", W/"2"'},
                    {"If-None-Match": "*"}, {"If-Modified-Since": since}):  # fmt: skip
        answer = client.get(url, headers=headers)
        assert answer.status_code == 304 and answer.content == b"", headers
        assert answer.headers["etag"] == 'W/"2"'
    old = "Mon, 01 Jan 2001 00:00:00 GMT"
    assert client.get(url, headers={"If-None-Match": 'W/"1"'}).status_code == 200
    assert client.get(url, headers={"If-None-Match": 'W/"1"', "If-Modified-Since": since}
                      ).status_code == 200  # fmt: skip
    assert client.get(url, headers={"If-Modified-Since": old}).status_code == 200
    assert client.get(url, headers={"If-Modified-Since": "garbage"}).status_code == 200
    get, head = client.get(url), client.head(url)
    assert head.status_code == 200 and head.content == b""
    for name in ("etag", "last-modified", "content-type", "content-length"):
        assert head.headers[name] == get.headers[name], name
    assert client.head(url, headers={"If-None-Match": 'W/"2"'}).status_code == 304
    assert client.head(f"/Patient/{unique('none')}").status_code == 404
    searched = client.head("/Patient", params={"_id": stored["pid"]})
    assert searched.status_code == 200 and searched.content == b""


def test_prefer_handling_on_unknown_search_parameters(
    client: httpx.Client, stored: dict[str, Any]
) -> None:
    """search.html#errors: strict refuses an unknown parameter (400 naming it); lenient,
    and no Prefer at all, ignore it, leave it out of the self link and say so in an
    outcome entry."""
    params = {"_id": stored["pid"], "shoe-size": "42"}
    strict = client.get("/Patient", params=params, headers={"Prefer": "handling=strict"})
    assert strict.status_code == 400 and strict.json()["issue"][0]["expression"] == ["shoe-size"]
    for headers in ({"Prefer": "handling=lenient"}, {}):
        answer = client.get("/Patient", params=params, headers=headers)
        assert answer.status_code == 200, answer.text
        bundle = answer.json()
        assert [r["id"] for r in _matches(bundle)] == [stored["pid"]]
        assert "shoe-size" not in bundle["link"][0]["url"]
        outcome = [e for e in bundle["entry"] if e["search"]["mode"] == "outcome"]
        assert "shoe-size" in outcome[0]["resource"]["issue"][0]["diagnostics"]


def test_unsupported_media_types_are_406_and_415_before_anything_is_written(
    client: httpx.Client,
) -> None:
    """http.html#mime-type: an Accept we cannot answer is 406 (a browser's text/html gets
    JSON), a body type we cannot read 415, another FHIR version in either 406 / 415; the
    create asked for with an unanswerable Accept is not made."""
    tag = unique("media")
    body = json.dumps(patient(name=[{"family": tag}])).encode()
    headers = {"Content-Type": "application/fhir+json", "Accept": "text/plain"}
    refused = client.post("/Patient", content=body, headers=headers)
    assert refused.status_code == 406
    assert client.get("/Patient", params={"family:exact": tag}).json()["total"] == 0
    assert client.get("/metadata", headers={"Accept": "application/pdf"}).status_code == 406
    browser = client.get("/metadata", headers={"Accept": "text/html"})
    assert browser.status_code == 200
    assert browser.headers["content-type"].startswith("application/fhir+json")
    other = {"Accept": "application/fhir+json; fhirVersion=3.0"}
    assert client.get("/metadata", headers=other).status_code == 406
    for content_type in ("text/plain", "application/fhir+json; fhirVersion=3.0"):
        answer = client.post("/Patient", content=body, headers={"Content-Type": content_type})
        assert answer.status_code == 415, content_type
        assert answer.json()["resourceType"] == "OperationOutcome"


def test_headers_of_vread_and_of_writes(client: httpx.Client, stored: dict[str, Any]) -> None:
    """http.html: a create (201) and an update that creates (201) SHALL/SHOULD give
    `Location` naming the version written; an update of an existing resource (200) gives
    ETag and Last-Modified (R4 asks no Location of it, and none is sent). A vread gives the
    version's ETag and Last-Modified; R4 asks no Content-Location of a read or vread (only of
    an async request), and none is sent."""
    base = str(client.base_url).rstrip("/")
    pid = stored["pid"]
    created = stored["created"]
    assert created.headers["location"] == f"{base}/Patient/{pid}/_history/1"
    updated = stored["updated"]
    assert updated.headers["etag"] == 'W/"2"' and "last-modified" in updated.headers
    assert "location" not in updated.headers
    new_id = unique("upsert")
    upsert = client.put(f"/Patient/{new_id}", json={**patient(), "id": new_id}, headers=FHIR_JSON)
    assert upsert.status_code == 201
    assert upsert.headers["location"] == f"{base}/Patient/{new_id}/_history/1"
    vread = client.get(f"/Patient/{pid}/_history/1")
    assert vread.status_code == 200 and vread.json()["meta"]["versionId"] == "1"
    assert vread.headers["etag"] == 'W/"1"'
    assert vread.headers["last-modified"] == created.headers["last-modified"]
    assert "content-location" not in vread.headers


def test_history_at_at_type_and_system_level(client: httpx.Client) -> None:
    """http.html#history: `_at` keeps the versions current at some moment of its period, at
    every level: at the moment version 2 was written, the type and system histories hold
    version 2 of this Patient and not versions 1 or 3."""
    first = client.post("/Patient", json=patient(), headers=FHIR_JSON).json()
    rid, stamps = first["id"], [first["meta"]["lastUpdated"]]
    for gender in ("male", "other"):
        written = client.put(f"/Patient/{rid}", json={**first, "gender": gender},
                             headers=FHIR_JSON)  # fmt: skip
        stamps.append(written.json()["meta"]["lastUpdated"])
    for url in ("/Patient/_history", "/_history"):
        bundle = client.get(url, params={"_at": stamps[1], "_count": "1000"}).json()
        mine = [e["resource"]["meta"]["versionId"] for e in bundle.get("entry", [])
                if e.get("resource", {}).get("id") == rid]  # fmt: skip
        assert mine == ["2"], (url, mine)
