"""Search edge cases of the session-13 second probe: canonically equivalent Unicode in
:exact, canonical references searched with and without their version.

Scenarios work as in test_search_params.py (``{id:label}``; every query is ANDed with the
scenario's ``_tag``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.test_search_params import World, entries, get_bundle, outcome_free, split_query, world_of

NFC_RENEE = "Ren\u00e9e"  # é precomposed
NFD_RENEE = "Rene\u0301e"  # e + combining acute accent
QUESTIONNAIRE = "http://example.org/fhir/Questionnaire/intake"


@pytest.fixture(scope="module")
def world(base_url: str, auth_headers: dict[str, str]) -> Iterator[World]:
    yield from world_of(base_url, auth_headers)


def answers(questionnaire: str) -> dict[str, Any]:
    return {
        "resourceType": "QuestionnaireResponse",
        "status": "completed",
        "questionnaire": questionnaire,
    }


SCENARIOS: dict[str, dict[str, dict[str, Any]]] = {
    "unicode": {
        "nfc": {"resourceType": "Patient", "name": [{"family": NFC_RENEE}]},
        "nfd": {"resourceType": "Patient", "name": [{"family": NFD_RENEE}]},
        "plain": {"resourceType": "Patient", "name": [{"family": "Renee"}]},
    },
    "canonical": {
        "v2": answers(f"{QUESTIONNAIRE}|2.0"),
        "v3": answers(f"{QUESTIONNAIRE}|3.0"),
        "bare": answers(QUESTIONNAIRE),
        "other": answers(f"{QUESTIONNAIRE}-2|2.0"),
    },
}

CASES: dict[str, list[tuple[str, str]]] = {
    "unicode": [
        # the same text whichever way é is encoded, in the resource or in the query
        (f"Patient?family:exact={NFC_RENEE}", "nfc nfd"),
        (f"Patient?family:exact={NFD_RENEE}", "nfc nfd"),
        ("Patient?family:exact=Renee", "plain"),  # accents still count
        (f"Patient?family={NFD_RENEE}", "nfc nfd plain"),
    ],
    "canonical": [
        # without a version: the canonical in any version (and unversioned)
        (f"QuestionnaireResponse?questionnaire={QUESTIONNAIRE}", "v2 v3 bare"),
        # with one: that version only
        (f"QuestionnaireResponse?questionnaire={QUESTIONNAIRE}|2.0", "v2"),
        (f"QuestionnaireResponse?questionnaire={QUESTIONNAIRE}|4.0", ""),
        (f"QuestionnaireResponse?questionnaire={QUESTIONNAIRE}-2", "other"),
    ],
}


def _case_params() -> list[Any]:
    return [
        pytest.param(scenario, query, expected, id=f"{scenario}:{query}")
        for scenario, cases in CASES.items()
        for query, expected in cases
    ]


@pytest.mark.parametrize(("scenario", "query", "expected"), _case_params())
def test_search_edge_criteria(world: World, scenario: str, query: str, expected: str) -> None:
    loaded = world.load(scenario, SCENARIOS)
    path, pairs = split_query(loaded.render(query))
    bundle = get_bundle(world.http, path, [*pairs, loaded.scope, ("_count", "100")])
    outcome_free(bundle)
    labels = loaded.label_of()
    found = sorted(labels[m] for m in entries(bundle, "match"))
    assert found == sorted(expected.split()), query
