"""Contained resources and search (R4 search.html, "Contained Resources"): a chained
criterion is evaluated inside contained resources (`Observation?subject.name=x` where the
subject is `#p1`, contained in the Observation), while the contained resource is never a
match of its own, nor taken for a resource of ours by literal searches, includes or the
patient compartment.

Scenarios work as in test_search_params.py (``{id:label}``; every query is ANDed with the
scenario's ``_tag``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.test_search_params import World, entries, get_bundle, outcome_free, split_query, world_of


@pytest.fixture(scope="module")
def world(base_url: str, auth_headers: dict[str, str]) -> Iterator[World]:
    yield from world_of(base_url, auth_headers)


# Refers to a contained resource from outside every search parameter: dom-3 wants each
# contained resource referred to from elsewhere in its container.
ALSO = "http://example.org/fhir/StructureDefinition/also-concerns"


def _observation(subject: str, *contained: dict[str, Any], also: str = "") -> dict[str, Any]:
    body: dict[str, Any] = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"text": "contained-{m}"},
        "subject": {"reference": subject},
    }
    if also:
        body["extension"] = [{"url": ALSO, "valueReference": {"reference": also}}]
    if contained:
        body["contained"] = list(contained)
    return body


TAYLOR = {"resourceType": "Patient", "id": "p1", "name": [{"family": "Taylor-{m}"}],
          "managingOrganization": {"reference": "#o1"}}  # fmt: skip
CLINIC = {"resourceType": "Organization", "id": "o1", "name": "Clinic-{m}"}
OTHER = {"resourceType": "Patient", "id": "p2", "name": [{"family": "Other-{m}"}]}

SCENARIOS: dict[str, dict[str, dict[str, Any]]] = {
    "contained": {
        "real": {"resourceType": "Patient", "name": [{"family": "Taylor-{m}"}]},
        "obs-real": _observation("Patient/{id:real}"),
        # the subject is contained; a second contained Patient is not the subject
        "obs-in": _observation("#p1", TAYLOR, CLINIC, OTHER, also="#p2"),
        # a contained Patient that is not the subject: the chain does not reach it
        "nobody": {"resourceType": "Patient", "name": [{"family": "Nobody-{m}"}]},
        "obs-unused": _observation(
            "Patient/{id:nobody}",
            dict(
                OTHER,
                id="p9",
                name=[{"family": "Lonely-{m}"}],
                link=[{"other": {"reference": "Patient/{id:real}"}, "type": "seealso"}],
            ),
            also="#p9",
        ),  # fmt: skip
        "enc-in": {
            "resourceType": "Encounter",
            "status": "finished",
            "class": {"code": "AMB"},
            "subject": {"reference": "#p1"},
            "contained": [TAYLOR, CLINIC],
        },
    },
}

CASES = [
    # a chain matches a contained subject as it matches a referenced one
    ("Observation?subject.name=Taylor-{m}", "obs-real obs-in"),
    ("Observation?subject:Patient.family=Taylor-{m}", "obs-real obs-in"),
    ("Encounter?subject.name=Taylor-{m}", "enc-in"),
    # ... the one the reference names only, not a sibling contained resource
    ("Observation?subject.name=Other-{m}", ""),
    ("Observation?subject.name=Lonely-{m}", ""),
    # two levels: the contained Patient's organization is contained too
    ("Observation?subject:Patient.organization.name=Clinic-{m}", "obs-in"),
    # a contained resource is not a search match of its own, nor a resource of ours
    ("Patient?name=Taylor-{m}", "real"),
    ("Organization?name=Clinic-{m}", ""),
    ("Observation?subject=p1", ""),
    ("Observation?subject=Patient/p1", ""),
    # its parameters are not the container's (nor its references: the patient compartment
    # is judged on the same rows)
    ("Observation?patient=Patient/{id:real}", "obs-real"),
    ("Observation?subject=Patient/{id:nobody}", "obs-unused"),
    ("Observation?subject:missing=false", "obs-real obs-in obs-unused"),
    ("Patient?organization:missing=false&name=Taylor-{m}", ""),
]


@pytest.mark.parametrize(("query", "expected"), CASES)
def test_chains_go_into_contained_resources(world: World, query: str, expected: str) -> None:
    loaded = world.load("contained", SCENARIOS)
    path, pairs = split_query(loaded.render(query))
    bundle = get_bundle(world.http, path, [*pairs, loaded.scope, ("_count", "100")])
    outcome_free(bundle)
    labels = loaded.label_of()
    found = sorted(labels.get(m, "/".join(m)) for m in entries(bundle, "match"))
    assert found == sorted(expected.split()), query


def test_a_contained_subject_is_not_included_as_a_resource(world: World) -> None:
    """The contained resource is in its container already: `_include` adds nothing."""
    loaded = world.load("contained", SCENARIOS)
    pairs = [("_id", loaded.ids["obs-in"][1]), ("_include", "Observation:subject"), loaded.scope]
    bundle = get_bundle(world.http, "Observation", pairs)
    assert entries(bundle, "match") == [loaded.ids["obs-in"]]
    assert entries(bundle, "include") == []


@pytest.mark.parametrize(
    ("path", "label", "include", "expected"),
    [
        ("Observation", "obs-unused", ("_include", "*"), "nobody"),
        ("Observation", "obs-unused", ("_include", "Observation:*"), "nobody"),
        ("Patient", "real", ("_revinclude", "*"), "obs-real"),
        ("Patient", "real", ("_revinclude", "Observation:*"), "obs-real"),
    ],
)
def test_wildcard_includes_follow_the_resources_own_references(
    world: World, path: str, label: str, include: tuple[str, str], expected: str
) -> None:
    """obs-unused contains a Patient that links to `real`: the Observation itself does not
    refer to `real`, so no wildcard (whose reach, and scopes, are the Observation's own
    reference parameters) follows that link."""
    loaded = world.load("contained", SCENARIOS)
    pairs = [("_id", loaded.ids[label][1]), include, loaded.scope]
    bundle = get_bundle(world.http, path, pairs)
    labels = loaded.label_of()
    included = sorted(labels.get(i, "/".join(i)) for i in entries(bundle, "include"))
    assert included == expected.split()


@pytest.mark.parametrize("prefer", [{}, {"Prefer": "handling=strict"}], ids=["lenient", "strict"])
@pytest.mark.parametrize(
    ("pairs", "refusal"),
    [
        ([("_contained", "false")], None),  # the default, said aloud
        ([("_containedType", "container")], None),
        ([("_contained", "false"), ("_containedType", "contained")], None),
        ([("_contained", "true")], ("not-supported", "_contained")),
        (
            [("_contained", "both"), ("_containedType", "contained")],
            ("not-supported", "_contained"),
        ),
        ([("_contained", "yes")], ("invalid", "_contained")),
        ([("_containedType", "inside")], ("invalid", "_containedType")),
    ],
)
def test_contained_result_parameters(
    world: World,
    prefer: dict[str, str],
    pairs: list[tuple[str, str]],
    refusal: tuple[str, str] | None,
) -> None:
    """_contained=false (the default) is understood; returning contained resources or their
    containers (true, both) is not supported and refused in either handling mode: ignoring
    it would return other resources than the ones asked for."""
    loaded = world.load("contained", SCENARIOS)
    query = [("subject.name", loaded.render("Taylor-{m}")), *pairs, loaded.scope]
    response = world.http.get("/Observation", params=query, headers=prefer)
    if refusal is None:
        assert response.status_code == 200, response.text
        outcome_free(response.json())
        matches = sorted(loaded.label_of()[m] for m in entries(response.json(), "match"))
        assert matches == ["obs-in", "obs-real"]
    else:
        assert response.status_code == 400, response.text
        issue = response.json()["issue"][0]
        assert (issue["code"], issue["expression"][0]) == refusal
