"""Older versions under a confined grant: history and vread judge each version on its own
content, not on the resource's current one (docs/smart.md, enforcement step 3). A resource
moved into a patient's compartment, or re-filed into a category a granular scope allows,
does not open its earlier versions to that grant."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from app.db import write_transaction
from tests.conftest import LiveServer
from tests.smart_helpers import TwoPatients, create_resource, register_client, two_patients

CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"


@pytest.fixture(scope="module")
def world(live_server: LiveServer, auth_headers: dict[str, str]) -> TwoPatients:
    return two_patients(live_server, auth_headers)


def _observation(patient: str, category: str, marker: str) -> dict[str, Any]:
    return {"resourceType": "Observation", "status": "final",
            "category": [{"coding": [{"system": CATEGORY, "code": category}]}],
            "code": {"text": marker}, "subject": {"reference": f"Patient/{patient}"}}  # fmt: skip


def _moved(world: TwoPatients, headers: dict[str, str], before: dict[str, Any],
           after: dict[str, Any]) -> str:  # fmt: skip
    """An Observation created as `before`, then updated to `after`: its id."""
    with httpx.Client(base_url=world.base, headers=headers, timeout=30) as http:
        rid = create_resource(http, before)
        updated = http.put(f"/Observation/{rid}", json={**after, "id": rid})
        assert updated.status_code == 200, updated.text
    return rid


def _token(world: TwoPatients, scope: str) -> dict[str, str]:
    app = register_client(world.auth, "public", scope)
    claims = {"scope": scope, "sub": "ann", "sub_kind": "user", "role": "patient",
              "fhirUser": f"Patient/{world.pa}", "patient": world.pa}  # fmt: skip
    with write_transaction(world.auth.engine) as conn:
        token = world.auth.tokens.issue(conn, app.client_id, claims)["access_token"]
    return {"Authorization": f"Bearer {token}"}


def _versions(response: httpx.Response, rid: str) -> list[str]:
    assert response.status_code == 200, response.text
    return [
        e["resource"]["meta"]["versionId"]
        for e in response.json().get("entry", [])
        if e.get("resource", {}).get("id") == rid
    ]


@pytest.mark.parametrize(
    ("scope", "before", "after"),
    [
        # Patient B's Observation, moved to patient A: A never had B's version.
        ("launch/patient patient/Observation.rs", ("pb", "laboratory"), ("pa", "laboratory")),
        # Re-filed from vital-signs to laboratory: the granular scope never reached version 1.
        ("launch/patient patient/Observation.rs?category=laboratory",
         ("pa", "vital-signs"), ("pa", "laboratory")),
        (f"launch/patient patient/Observation.rs?category={CATEGORY}|laboratory",
         ("pa", "vital-signs"), ("pa", "laboratory")),
    ],
)  # fmt: skip
def test_earlier_versions_outside_the_grant_stay_hidden(
    world: TwoPatients,
    auth_headers: dict[str, str],
    scope: str,
    before: tuple[str, str],
    after: tuple[str, str],
) -> None:
    marker = uuid.uuid4().hex
    patients = {"pa": world.pa, "pb": world.pb}
    rid = _moved(
        world,
        auth_headers,
        _observation(patients[before[0]], before[1], marker),
        _observation(patients[after[0]], after[1], marker),
    )
    ann = _token(world, scope)
    base = world.base
    assert httpx.get(f"{base}/Observation/{rid}", headers=ann).status_code == 200
    assert httpx.get(f"{base}/Observation/{rid}/_history/2", headers=ann).status_code == 200
    old = httpx.get(f"{base}/Observation/{rid}/_history/1", headers=ann)
    assert old.status_code == 403, old.text
    assert marker not in old.text
    assert _versions(httpx.get(f"{base}/Observation/{rid}/_history", headers=ann), rid) == ["2"]
    listed = httpx.get(f"{base}/Observation/_history", headers=ann, params={"_count": "500"})
    assert _versions(listed, rid) == ["2"]
    # The unconfined system grant still sees both.
    full = httpx.get(f"{base}/Observation/{rid}/_history", headers=auth_headers)
    assert sorted(_versions(full, rid)) == ["1", "2"]


def test_versions_inside_the_grant_are_all_listed(
    world: TwoPatients, auth_headers: dict[str, str]
) -> None:
    marker = uuid.uuid4().hex
    first = _observation(world.pa, "laboratory", marker)
    rid = _moved(world, auth_headers, first, {**first, "status": "amended"})
    ann = _token(world, "launch/patient patient/Observation.rs?category=laboratory")
    history = httpx.get(f"{world.base}/Observation/{rid}/_history", headers=ann)
    assert sorted(_versions(history, rid)) == ["1", "2"]
    old = httpx.get(f"{world.base}/Observation/{rid}/_history/1", headers=ann)
    assert old.status_code == 200
