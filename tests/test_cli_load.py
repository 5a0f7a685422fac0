"""medisentinel load: what reaches the server from collection and batch Bundles."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

import httpx

from tests.helpers import patient, unique

CLI = [sys.executable, "-m", "app.cli"]


def _load(path: Path, base_url: str, token: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, "load", str(path), "--url", base_url, "--token", token],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_collection_bundle_keeps_urn_uuid_references(
    tmp_path: Path, base_url: str, system_token: str, auth_headers: dict[str, str]
) -> None:
    patient_url = f"urn:uuid:{uuid.uuid4()}"
    code = unique("loadref")
    observation = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "urn:test:load", "code": code}]},
        "subject": {"reference": patient_url},
    }
    bundle = tmp_path / "collection.json"
    bundle.write_text(
        json.dumps(
            {
                "resourceType": "Bundle",
                "type": "collection",
                "entry": [
                    {"fullUrl": patient_url, "resource": patient()},
                    {"fullUrl": f"urn:uuid:{uuid.uuid4()}", "resource": observation},
                ],
            }
        )
    )
    result = _load(bundle, base_url, system_token)
    assert result.returncode == 0, result.stdout + result.stderr
    found = httpx.get(
        f"{base_url}/Observation", params={"code": f"urn:test:load|{code}"}, headers=auth_headers
    ).json()["entry"]
    reference = found[0]["resource"]["subject"]["reference"]
    assert reference.startswith("Patient/"), reference
    assert httpx.get(f"{base_url}/{reference}", headers=auth_headers).status_code == 200


def test_batch_entry_failure_names_the_entry_and_the_reason(
    tmp_path: Path, base_url: str, system_token: str
) -> None:
    bundle = tmp_path / "batch.json"
    bundle.write_text(
        json.dumps(
            {
                "resourceType": "Bundle",
                "type": "batch",
                "entry": [
                    {"resource": patient(), "request": {"method": "POST", "url": "Patient"}},
                    {
                        "resource": patient(gender="girl"),
                        "request": {"method": "POST", "url": "Patient"},
                    },
                ],
            }
        )
    )
    result = _load(bundle, base_url, system_token)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "1 ok, 1 failed" in result.stdout
    assert f"{bundle}: entry 1: 400" in result.stdout
    assert "girl" in result.stdout


def test_one_invalid_ndjson_resource_does_not_reject_its_neighbours(
    tmp_path: Path, base_url: str, system_token: str, auth_headers: dict[str, str]
) -> None:
    first, bad, last = unique("first"), unique("bad"), unique("last")
    ndjson = tmp_path / "one-bad.ndjson"
    ndjson.write_text(
        "\n".join(
            json.dumps(resource)
            for resource in (patient(id=first), patient(id=bad, gender="girl"), patient(id=last))
        )
        + "\n"
    )
    result = _load(ndjson, base_url, system_token)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "1 bundle(s): 2 ok, 1 failed" in result.stdout
    assert f"{ndjson}:2: 400" in result.stdout  # the file's line, not the entry's index
    assert "girl" in result.stdout
    for rid, status in ((first, 200), (bad, 404), (last, 200)):
        assert httpx.get(f"{base_url}/Patient/{rid}", headers=auth_headers).status_code == status


def test_load_stops_at_the_first_refused_token(tmp_path: Path, base_url: str) -> None:
    ndjson = tmp_path / "many.ndjson"
    ndjson.write_text("".join(json.dumps(patient()) + "\n" for _ in range(5)))
    result = subprocess.run(
        [*CLI, "load", str(ndjson), "--url", base_url, "--batch-size", "1"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "1 bundle(s): 0 ok, 1 failed" in result.stdout  # not five 401s
    assert "stopped: HTTP 401" in result.stdout
