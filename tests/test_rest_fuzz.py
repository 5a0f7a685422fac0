"""Mutation fuzz of the FHIR REST API over real HTTP: bad input gets a clear answer, never a
crash (DEVELOPERS.md principle 6; issue #2: "every error anywhere is an OperationOutcome with
the right status, never a stack trace").

Each case is a valid request (create, update, JSON Patch, batch/transaction, search by GET
and POST, $validate, conditional headers) with one to three random changes
(tests/rest_mutations.py). Every answer must be below 500, and every error must be an
OperationOutcome with at least one issue; after the run the server must still read the
Patient the cases were aimed at. The cases are reproducible: the seed and the case number are
in every failure message. `MEDISENTINEL_FUZZ_CASES` / `MEDISENTINEL_FUZZ_SEED` run more or
other cases locally.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Iterator

import httpx
import pytest

from tests.rest_mutations import JSON, OBSERVATION, PATIENT, Case, CaseMaker

CASES = int(os.environ.get("MEDISENTINEL_FUZZ_CASES", "400"))
SEEDS = [int(s) for s in os.environ.get("MEDISENTINEL_FUZZ_SEED", "20261123").split(",")]


def _send(http: httpx.Client, case: Case) -> httpx.Response:
    path = "/" + case.path if case.path else ""
    headers = {name: value.encode() for name, value in case.headers.items()}  # UTF-8 bytes
    return http.request(case.method, path, headers=headers, content=case.body)


def _problem(response: httpx.Response) -> str | None:
    """What is wrong with this answer, or None."""
    if response.status_code >= 500:
        return f"status {response.status_code}: {response.text[:800]}"
    if response.status_code < 400 or response.status_code == 406:
        # 406: the client accepts no format we write, so the OperationOutcome may be sent in
        # JSON anyway or not at all; its status is the answer.
        return None
    if "xml" in response.headers.get("content-type", ""):  # the client asked for XML
        if b"<OperationOutcome" in response.content and b"<issue>" in response.content:
            return None
        return f"status {response.status_code}: {response.text[:300]!r}"
    try:
        body = json.loads(response.content)
    except ValueError:
        return f"status {response.status_code} without a JSON body: {response.text[:300]!r}"
    if not isinstance(body, dict) or body.get("resourceType") != "OperationOutcome":
        return f"status {response.status_code} answered with {str(body)[:300]}"
    if not body.get("issue"):
        return f"status {response.status_code}: an OperationOutcome without issues"
    return None


@pytest.fixture(scope="module")
def targets(client: httpx.Client) -> tuple[str, str]:
    """A Patient and an Observation the cases name (updates, patches, searches, reads)."""
    headers = {"Content-Type": JSON}
    made = client.post("/Patient", content=json.dumps(PATIENT), headers=headers)
    assert made.status_code == 201, made.text
    patient_id = made.json()["id"]
    observation = json.loads(json.dumps(OBSERVATION).replace("PATIENT", patient_id))
    made = client.post("/Observation", content=json.dumps(observation), headers=headers)
    assert made.status_code == 201, made.text
    return patient_id, made.json()["id"]


@pytest.fixture(scope="module")
def client(base_url: str, auth_headers: dict[str, str]) -> Iterator[httpx.Client]:
    headers = {"Accept": JSON, **auth_headers}
    with httpx.Client(base_url=base_url, headers=headers, timeout=60) as http:
        yield http


@pytest.mark.parametrize("seed", SEEDS)
def test_mutated_requests_get_clear_answers(
    client: httpx.Client, targets: tuple[str, str], seed: int
) -> None:
    patient_id, observation_id = targets
    maker = CaseMaker(random.Random(seed), patient_id, observation_id)
    failures: list[str] = []
    statuses: dict[int, int] = {}
    for number in range(CASES):
        case = maker.case()
        response = _send(client, case)
        statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
        problem = _problem(response)
        if problem:
            failures.append(f"seed {seed} case {number}: {case.describe()}\n  -> {problem}")
    assert not failures, f"{len(failures)} of {CASES} cases:\n" + "\n".join(failures[:15])
    # The fuzz must reach both sides: requests refused and requests that did their work.
    assert sum(n for s, n in statuses.items() if s < 300) > CASES // 10, statuses
    assert sum(n for s, n in statuses.items() if 400 <= s < 500) > CASES // 10, statuses
    alive = client.get(f"/Patient/{patient_id}")
    assert alive.status_code in (200, 410), alive.text
