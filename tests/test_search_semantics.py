"""Search semantics checked against R4 search.html, table-driven: token `:text`, uri
`:below` / `:above` at a trailing slash; and `_sort` of numbers beyond ±1e30.

Scenarios work as in test_search_params.py: each case names the labels a query must return,
and every other resource of its scenario must not be returned (``{id:label}`` templates; every
query is ANDed with the scenario's ``_tag``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.test_search_params import (
    World,
    assert_case,
    assert_real_labels,
    case_params,
    entries,
    walk,
    world_of,
)

LOINC = "http://loinc.org"
V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
VS = "http://slash.example.org/fhir/ValueSet"

SCENARIOS: dict[str, dict[str, dict[str, Any]]] = {
    # token :text: "processed as a string search against the text associated with the
    # code/value - either CodeableConcept.text, Coding.display, or Identifier.type.text";
    # a string search matches a text that equals or starts with the value, both folded.
    "token-text": {
        "hr": {
            "resourceType": "Observation",
            "status": "final",
            "code": {
                "coding": [{"system": LOINC, "code": "8867-4", "display": "Heart rate"}],
                "text": "Pulse",
            },
        },
        "murmur": {
            "resourceType": "Observation",
            "status": "final",
            "code": {"coding": [{"code": "local-1"}], "text": "Heart murmur"},
        },
        "resting": {
            "resourceType": "Observation",
            "status": "final",
            "code": {"text": "Resting heart rate"},
        },
        "accent": {
            "resourceType": "Observation",
            "status": "final",
            "code": {"coding": [{"system": LOINC, "code": "x-1", "display": "Hémoglobine"}]},
        },
        "wild": {
            "resourceType": "Observation",
            "status": "final",
            "code": {"text": "50% of_x"},
        },
        "mrn": {
            "resourceType": "Patient",
            "identifier": [
                {
                    "system": "urn:sys:a",
                    "value": "123",
                    "type": {
                        "coding": [{"system": V2_0203, "code": "MR", "display": "Chart number"}],
                        "text": "Medical record number",
                    },
                }
            ],
        },
    },
    # uri :below / :above compare by path; a trailing slash names the same place
    "uri-slash": {
        "x": {"resourceType": "ValueSet", "status": "active", "url": f"{VS}/x"},
        "x-slash": {"resourceType": "ValueSet", "status": "active", "url": f"{VS}/x/"},
        "x-y": {"resourceType": "ValueSet", "status": "active", "url": f"{VS}/x/y"},
        "xz": {"resourceType": "ValueSet", "status": "active", "url": f"{VS}/xz"},
        "vs": {"resourceType": "ValueSet", "status": "active", "url": f"{VS}"},
        "oid": {"resourceType": "ValueSet", "status": "active", "url": "urn:oid:1.2.3"},
    },
    # _sort: numbers as large as the index holds (values.bounded: 1e300), and none at all
    "big-numbers": {
        label: {
            "resourceType": "ChargeItem",
            "status": "billable",
            "code": {"text": "f"},
            "subject": {"reference": "Patient/x"},
            **({"factorOverride": value} if value is not None else {}),
        }
        for label, value in (
            ("huge", 1e250),
            ("big", 1e50),
            ("half", 0.5),
            ("neg", -1e40),
            ("none", None),
        )
    },
}

CASES: dict[str, list[tuple[str, str]]] = {
    "token-text": [
        # the whole text starts with the value (Coding.display and CodeableConcept.text)
        ("Observation?code:text=heart", "hr murmur"),
        ("Observation?code:text=Heart Rate", "hr"),
        ("Observation?code:text=HEART   rate", "hr"),  # whitespace folded as in the index
        ("Observation?code:text=heart rate", "hr"),
        ("Observation?code:text=pulse", "hr"),  # CodeableConcept.text beside a display
        ("Observation?code:text=resting heart rate", "resting"),
        ("Observation?code:text=resting heart rate now", ""),  # longer than the text
        # not a word or a piece inside the text
        ("Observation?code:text=rate", ""),
        ("Observation?code:text=murmur", ""),
        ("Observation?code:text=eart", ""),
        ("Observation?code:text=ulse", ""),
        # case and accents folded on both sides
        ("Observation?code:text=hemoglobine", "accent"),
        ("Observation?code:text=HÉMO", "accent"),
        ("Observation?code:text=hèmo", "accent"),
        # the code is no text
        ("Observation?code:text=8867", ""),
        ("Observation?code:text=local", ""),
        # LIKE's wildcards are literal
        ("Observation?code:text=50%", "wild"),
        ("Observation?code:text=50% of_", "wild"),
        ("Observation?code:text=5_", ""),
        ("Observation?code:text=%", ""),
        ("Observation?code:text=_", ""),
        # comma is OR
        ("Observation?code:text=pulse,resting", "hr resting"),
        # Identifier.type.text, not its coding's display or code, nor the value
        ("Patient?identifier:text=medical", "mrn"),
        ("Patient?identifier:text=medical record number", "mrn"),
        ("Patient?identifier:text=record", ""),
        ("Patient?identifier:text=chart", ""),
        ("Patient?identifier:text=mr", ""),
        ("Patient?identifier:text=123", ""),
    ],
    "uri-slash": [
        (f"ValueSet?url:below={VS}/x", "x x-slash x-y"),
        (f"ValueSet?url:below={VS}/x/", "x x-slash x-y"),
        (f"ValueSet?url:below={VS}/x/y", "x-y"),
        (f"ValueSet?url:below={VS}", "vs x x-slash x-y xz"),
        (f"ValueSet?url:above={VS}/x", "vs x x-slash"),
        (f"ValueSet?url:above={VS}/x/", "vs x x-slash"),
        (f"ValueSet?url:above={VS}/x/y/", "vs x x-slash x-y"),
        (f"ValueSet?url:above={VS}/xz", "vs xz"),
        (f"ValueSet?url={VS}/x", "x"),  # no modifier: the uri exactly
        (f"ValueSet?url={VS}/x/", "x-slash"),
        ("ValueSet?url:below=urn:oid:1.2", ""),  # a URN has no path
        ("ValueSet?url:below=urn:oid:1.2.3", "oid"),
        ("ValueSet?url:above=urn:oid:1.2.3.4", ""),
    ],
}


@pytest.fixture(scope="module")
def world(base_url: str, auth_headers: dict[str, str]) -> Iterator[World]:
    yield from world_of(base_url, auth_headers)


@pytest.mark.parametrize(("scenario", "query", "expected"), case_params(CASES))
def test_search_semantics(world: World, scenario: str, query: str, expected: str) -> None:
    assert_case(world, SCENARIOS, scenario, query, expected)


def test_every_case_names_real_labels() -> None:
    assert_real_labels(CASES, SCENARIOS)


@pytest.mark.parametrize(
    ("sort", "expected"),
    [
        ("factor-override", "neg half big huge none"),
        ("-factor-override", "huge big half neg none"),
    ],
)
def test_resources_without_the_sorted_number_come_last_whatever_the_numbers(
    world: World, sort: str, expected: str
) -> None:
    """A missing number sorted as 1e30 (ascending) or -1e30 (descending), so the resource
    without one came before 1e50, or before -1e40 going down; on one page and paged alike."""
    loaded = world.load("big-numbers", SCENARIOS)
    labels = loaded.label_of()
    for count in ("50", "1"):
        pages = walk(world.http, "ChargeItem", [loaded.scope, ("_sort", sort), ("_count", count)])
        order = [labels[m] for page in pages for m in entries(page, "match")]
        assert order == expected.split(), count
