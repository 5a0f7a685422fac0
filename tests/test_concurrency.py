"""Concurrent writers on one resource: every update becomes its own version, none is lost."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import httpx

from app.context import RequestContext
from app.db import create_db_engine
from app.fhir import storage
from app.fhir.hooks import Pipeline
from app.fhir.service import FhirService
from tests.helpers import FHIR_JSON, patient

WRITERS = 12


def test_concurrent_updates_all_become_versions(
    base_url: str, auth_headers: dict[str, str]
) -> None:
    with httpx.Client(base_url=base_url, headers=auth_headers, timeout=60) as setup:
        created = setup.post("/Patient", json=patient(), headers=FHIR_JSON).json()
    rid = created["id"]

    def write(n: int) -> int:
        body = {**created, "name": [{"family": f"Writer{n}"}]}
        with httpx.Client(base_url=base_url, headers=auth_headers, timeout=60) as http:
            return http.put(f"/Patient/{rid}", json=body, headers=FHIR_JSON).status_code

    with ThreadPoolExecutor(WRITERS) as pool:
        statuses = list(pool.map(write, range(WRITERS)))
    assert statuses == [200] * WRITERS
    with httpx.Client(base_url=base_url, headers=auth_headers, timeout=60) as http:
        history = http.get(f"/Patient/{rid}/_history", params={"_count": 100}).json()
        current = http.get(f"/Patient/{rid}").json()
    versions = sorted(int(e["resource"]["meta"]["versionId"]) for e in history["entry"])
    assert versions == list(range(1, WRITERS + 2))
    writers_seen = {e["resource"]["name"][0]["family"] for e in history["entry"]}
    assert writers_seen >= {f"Writer{n}" for n in range(WRITERS)}
    assert current["meta"]["versionId"] == str(WRITERS + 1)


def test_concurrent_if_match_updates_exactly_one_wins(
    base_url: str, auth_headers: dict[str, str]
) -> None:
    with httpx.Client(base_url=base_url, headers=auth_headers, timeout=60) as setup:
        created = setup.post("/Patient", json=patient(), headers=FHIR_JSON).json()
    rid = created["id"]

    def write(n: int) -> int:
        body = {**created, "name": [{"family": f"Racer{n}"}]}
        headers = {**FHIR_JSON, "If-Match": 'W/"1"'}
        with httpx.Client(base_url=base_url, headers=auth_headers, timeout=60) as http:
            return http.put(f"/Patient/{rid}", json=body, headers=headers).status_code

    with ThreadPoolExecutor(WRITERS) as pool:
        statuses = sorted(pool.map(write, range(WRITERS)))
    assert statuses == [200] + [412] * (WRITERS - 1)


def test_concurrent_update_as_create_of_one_id(base_url: str, auth_headers: dict[str, str]) -> None:
    rid = "race-create-1"

    def write(n: int) -> int:
        with httpx.Client(base_url=base_url, headers=auth_headers, timeout=60) as http:
            body = patient(id=rid, name=[{"family": f"C{n}"}])
            return http.put(f"/Patient/{rid}", json=body, headers=FHIR_JSON).status_code

    with ThreadPoolExecutor(8) as pool:
        statuses = sorted(pool.map(write, range(8)))
    assert statuses.count(201) == 1 and statuses.count(200) == 7


def test_concurrent_transactions_creating_one_id_never_lose_a_version(
    base_url: str, auth_headers: dict[str, str]
) -> None:
    """PUT targets of a transaction are looked up in one batch; two transactions creating the
    same new id at once: one wins, the other commits after it (SQLite) or gets a retryable
    409 (PostgreSQL) - never a 500, never a lost or duplicated version."""
    rid = "race-tx-" + uuid.uuid4().hex[:8]

    def write(n: int) -> int:
        bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
            {"resource": patient(id=rid, name=[{"family": f"T{n}"}]),
             "request": {"method": "PUT", "url": f"Patient/{rid}"}}]}  # fmt: skip
        with httpx.Client(base_url=base_url, headers=auth_headers, timeout=60) as http:
            return http.post("", json=bundle, headers=FHIR_JSON).status_code

    with ThreadPoolExecutor(6) as pool:
        statuses = list(pool.map(write, range(6)))
    assert set(statuses) <= {200, 409} and 200 in statuses
    with httpx.Client(base_url=base_url, headers=auth_headers, timeout=60) as http:
        history = http.get(f"/Patient/{rid}/_history").json()
    versions = sorted(int(e["resource"]["meta"]["versionId"]) for e in history["entry"])
    assert versions == list(range(1, statuses.count(200) + 1))


def test_moving_the_current_row_from_a_stale_version_changes_nothing(database_url: str) -> None:
    """storage.update_current moves the row and drops its index rows in one go (one
    statement on PostgreSQL); from a version that is no longer current it must do neither,
    and from the current one both."""
    db = create_db_engine(database_url, pool_size=1)
    service = FhirService(db, Pipeline())
    ctx = RequestContext.system("http://stale-move.test/fhir")
    family = f"Stale{uuid.uuid4().hex[:8]}"
    try:
        with service.unit_of_work(ctx, write=True) as uow:
            body = {"resourceType": "Patient", "name": [{"family": family}]}
            created = service.create(uow, "Patient", body).version
        with service.unit_of_work(ctx, write=True) as uow:
            moved = replace(created, version_id=3, content=b'{"resourceType":"Patient"}')
            assert not storage.update_current(uow, moved, expected_version=2)
            assert storage.get_current(uow, "Patient", created.id) == replace(created, method="")
            assert service.find_ids(uow, "Patient", f"family={family}") == [created.id]
            assert storage.update_current(uow, replace(moved, version_id=2), expected_version=1)
            assert storage.get_current(uow, "Patient", created.id).version_id == 2  # type: ignore[union-attr]
            assert service.find_ids(uow, "Patient", f"family={family}") == []
    finally:
        db.dispose()


def _identifier() -> tuple[str, str]:
    value = uuid.uuid4().hex
    return f"urn:oid:9.9|{value}", value


def _count(base_url: str, auth_headers: dict[str, str], criteria: str) -> int:
    with httpx.Client(base_url=base_url, headers=auth_headers, timeout=60) as http:
        found = http.get(f"/Patient?{criteria}&_total=accurate").json()
    return int(found["total"])


def test_concurrent_conditional_creates_make_one_resource(
    base_url: str, auth_headers: dict[str, str]
) -> None:
    """Twelve POSTs with one If-None-Exist at once: on PostgreSQL each found nothing and
    created (twelve Patients, and from then on 412 for everyone: "matches more than one").
    Now the criteria's name is locked first: one creates (201), the others find it (200)."""
    for _ in range(3):
        criteria, value = _identifier()
        body = {**patient(), "identifier": [{"system": "urn:oid:9.9", "value": value}]}
        # Two spellings of one condition: the lock's name is the decoded, sorted criteria.
        spellings = [f"identifier={criteria}", f"identifier={criteria.replace('|', '%7C')}"]
        statuses = sorted(_race(base_url, auth_headers, body, spellings))
        assert statuses == [200] * (WRITERS - 1) + [201]
        assert _count(base_url, auth_headers, f"identifier={criteria}") == 1


def _race(
    base_url: str, auth_headers: dict[str, str], body: dict[str, object], spellings: list[str]
) -> list[int]:
    def create(n: int) -> int:
        headers = {**FHIR_JSON, "If-None-Exist": spellings[n % len(spellings)]}
        with httpx.Client(base_url=base_url, headers=auth_headers, timeout=60) as http:
            return http.post("/Patient", json=body, headers=headers).status_code

    with ThreadPoolExecutor(WRITERS) as pool:
        return list(pool.map(create, range(WRITERS)))


def test_concurrent_conditional_updates_and_transactions_make_one_resource(
    base_url: str, auth_headers: dict[str, str]
) -> None:
    """The same for conditional updates that create, and transactions whose entries do."""
    criteria, value = _identifier()
    body = {**patient(), "identifier": [{"system": "urn:oid:9.9", "value": value}]}

    def write(n: int) -> int:
        with httpx.Client(base_url=base_url, headers=auth_headers, timeout=60) as http:
            if n % 2:
                return http.put(f"/Patient?identifier={criteria}", json=body,
                                headers=FHIR_JSON).status_code  # fmt: skip
            bundle = {
                "resourceType": "Bundle",
                "type": "transaction",
                "entry": [
                    {
                        "resource": body,
                        "request": {
                            "method": "POST",
                            "url": "Patient",
                            "ifNoneExist": f"identifier={criteria}",
                        },
                    }
                ],
            }
            return http.post("", json=bundle, headers=FHIR_JSON).status_code

    with ThreadPoolExecutor(WRITERS) as pool:
        statuses = list(pool.map(write, range(WRITERS)))
    assert set(statuses) <= {200, 201}, statuses
    assert _count(base_url, auth_headers, f"identifier={criteria}") == 1
