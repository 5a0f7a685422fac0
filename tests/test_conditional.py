"""Conditional create / update / delete / patch with the spec's 0 / 1 / many outcomes."""

from __future__ import annotations

import httpx

from tests.helpers import FHIR_JSON, patient, unique

SYSTEM = "http://hospital.example/mrn"


def with_mrn(mrn: str, **extra: object) -> dict:
    return patient(identifier=[{"system": SYSTEM, "value": mrn}], **extra)


def test_conditional_create_zero_one_many(client: httpx.Client) -> None:
    mrn = unique("mrn")
    condition = {"If-None-Exist": f"identifier={SYSTEM}|{mrn}"}
    first = client.post("/Patient", json=with_mrn(mrn), headers={**FHIR_JSON, **condition})
    assert first.status_code == 201
    second = client.post("/Patient", json=with_mrn(mrn), headers={**FHIR_JSON, **condition})
    assert second.status_code == 200
    assert second.json()["id"] == first.json()["id"]
    assert second.json()["meta"]["versionId"] == "1"
    client.post("/Patient", json=with_mrn(mrn), headers=FHIR_JSON)  # an unconditional duplicate
    many = client.post("/Patient", json=with_mrn(mrn), headers={**FHIR_JSON, **condition})
    assert many.status_code == 412


def test_conditional_create_with_unknown_parameter_is_refused(client: httpx.Client) -> None:
    response = client.post(
        "/Patient", json=patient(), headers={**FHIR_JSON, "If-None-Exist": "nonsense=1"}
    )
    assert response.status_code == 400
    assert response.json()["resourceType"] == "OperationOutcome"


def test_conditional_update_zero_one_many(client: httpx.Client) -> None:
    mrn = unique("mrn")
    url = f"/Patient?identifier={SYSTEM}|{mrn}"
    created = client.put(url, json=with_mrn(mrn), headers=FHIR_JSON)
    assert created.status_code == 201
    rid = created.json()["id"]
    updated = client.put(url, json=with_mrn(mrn, gender="male"), headers=FHIR_JSON)
    assert updated.status_code == 200
    assert updated.json()["id"] == rid
    assert updated.json()["meta"]["versionId"] == "2"
    wrong_id = client.put(url, json=with_mrn(mrn, id="someone-else"), headers=FHIR_JSON)
    assert wrong_id.status_code == 400
    client.post("/Patient", json=with_mrn(mrn), headers=FHIR_JSON)
    many = client.put(url, json=with_mrn(mrn), headers=FHIR_JSON)
    assert many.status_code == 412


def test_conditional_delete_zero_one_many(client: httpx.Client) -> None:
    mrn = unique("mrn")
    url = f"/Patient?identifier={SYSTEM}|{mrn}"
    none = client.delete(url)
    assert none.status_code == 200
    assert none.json()["resourceType"] == "OperationOutcome"
    rid = client.post("/Patient", json=with_mrn(mrn), headers=FHIR_JSON).json()["id"]
    assert client.delete(url).status_code == 204
    assert client.get(f"/Patient/{rid}").status_code == 410
    client.post("/Patient", json=with_mrn(mrn), headers=FHIR_JSON)
    client.post("/Patient", json=with_mrn(mrn), headers=FHIR_JSON)
    assert client.delete(url).status_code == 412


def test_conditional_patch(client: httpx.Client) -> None:
    mrn = unique("mrn")
    rid = client.post("/Patient", json=with_mrn(mrn), headers=FHIR_JSON).json()["id"]
    ops = [{"op": "replace", "path": "/gender", "value": "other"}]
    response = client.patch(
        f"/Patient?identifier={SYSTEM}|{mrn}",
        json=ops,
        headers={"Content-Type": "application/json-patch+json"},
    )
    assert response.status_code == 200
    assert client.get(f"/Patient/{rid}").json()["gender"] == "other"


def test_search_by_id_and_identifier(client: httpx.Client) -> None:
    mrn = unique("mrn")
    rid = client.post("/Patient", json=with_mrn(mrn), headers=FHIR_JSON).json()["id"]
    by_id = client.get("/Patient", params={"_id": rid}).json()
    assert by_id["type"] == "searchset"
    assert [e["resource"]["id"] for e in by_id["entry"]] == [rid]
    assert by_id["entry"][0]["search"]["mode"] == "match"
    for value in (f"{SYSTEM}|{mrn}", mrn, f"|{mrn}"):
        found = client.get("/Patient", params={"identifier": value}).json()
        ids = [e["resource"]["id"] for e in found.get("entry", [])]
        assert ids == ([] if value.startswith("|") else [rid]), value


def test_search_paging_with_next_links(client: httpx.Client) -> None:
    mrn = unique("page")
    ids = {
        client.post("/Patient", json=with_mrn(mrn), headers=FHIR_JSON).json()["id"]
        for _ in range(5)
    }
    seen: list[str] = []
    url: str | None = f"/Patient?identifier={mrn}&_count=2"
    while url:
        page = client.get(url).json()
        seen += [e["resource"]["id"] for e in page.get("entry", [])]
        nxt = [link["url"] for link in page["link"] if link["relation"] == "next"]
        url = nxt[0] if nxt else None
    assert sorted(seen) == sorted(ids)


def test_lenient_search_reports_ignored_parameter(client: httpx.Client) -> None:
    bundle = client.get("/Patient", params={"_id": "x", "unknownparam": "1"}).json()
    self_link = [link["url"] for link in bundle["link"] if link["relation"] == "self"][0]
    assert "unknownparam" not in self_link
    outcomes = [e for e in bundle.get("entry", []) if e["search"]["mode"] == "outcome"]
    assert outcomes and "unknownparam" in outcomes[0]["resource"]["issue"][0]["diagnostics"]
    strict = client.get(
        "/Patient", params={"unknownparam": "1"}, headers={"Prefer": "handling=strict"}
    )
    assert strict.status_code == 400
