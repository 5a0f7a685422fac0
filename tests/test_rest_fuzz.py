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

import os
import random
from collections.abc import Iterator

import httpx
import pytest

from tests.rest_mutations import JSON, CaseMaker, answer_problem, make_targets, send
from tests.seeds import seeds_from_env

CASES = int(os.environ.get("MEDISENTINEL_FUZZ_CASES", "400"))
SEEDS = seeds_from_env("MEDISENTINEL_FUZZ_SEED", "20261123")


@pytest.fixture(scope="module")
def targets(client: httpx.Client) -> tuple[str, str]:
    return make_targets(client)


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
        response = send(client, case)
        statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
        problem = answer_problem(response)
        if problem:
            failures.append(f"seed {seed} case {number}: {case.describe()}\n  -> {problem}")
    assert not failures, f"{len(failures)} of {CASES} cases:\n" + "\n".join(failures[:15])
    # The fuzz must reach both sides: requests refused and requests that did their work.
    assert sum(n for s, n in statuses.items() if s < 300) > CASES // 10, statuses
    assert sum(n for s, n in statuses.items() if 400 <= s < 500) > CASES // 10, statuses
    alive = client.get(f"/Patient/{patient_id}")
    assert alive.status_code in (200, 410), alive.text
