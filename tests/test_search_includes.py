"""_include / _revinclude beyond the basics (those are in test_search_results.py): wildcards,
:iterate to any depth within the cap, invalid target types, and what the CapabilityStatement
declares about search.

Scenarios work as in test_search_params.py (``{id:label}``; every query is ANDed with the
scenario's ``_tag``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from app.context import RequestContext
from app.fhir.search import SearchParams, includes
from app.fhir.service import FhirService
from tests.test_search_params import World, entries, get_bundle, outcome_free, split_query, world_of
from tests.test_search_requests import SCENARIOS as REQUEST_SCENARIOS
from tests.test_search_shape_cache import service, statements_sent

STRICT = {"Prefer": "handling=strict"}
DEPTH = 7


@pytest.fixture(scope="module")
def world(base_url: str, auth_headers: dict[str, str]) -> Iterator[World]:
    yield from world_of(base_url, auth_headers)


def _org(level: int) -> dict[str, Any]:
    org: dict[str, Any] = {"resourceType": "Organization", "name": f"Level {level}"}
    if level < DEPTH:
        org["partOf"] = {"reference": f"Organization/{{id:org{level + 1}}}"}
    return org


SCENARIOS: dict[str, dict[str, dict[str, Any]]] = {
    **REQUEST_SCENARIOS,
    "tree": {f"org{level}": _org(level) for level in range(1, DEPTH + 1)},
}


def search(world: World, scenario: str, query: str) -> tuple[list[str], list[str], list[str]]:
    """(matches, included, warnings): labels, and any other included resource as Type/id."""
    loaded = world.load(scenario, SCENARIOS)
    path, pairs = split_query(loaded.render(query))
    bundle = get_bundle(world.http, path, [*pairs, loaded.scope], headers=STRICT)
    labels = loaded.label_of()
    matches = sorted(labels[m] for m in entries(bundle, "match"))
    included = sorted(labels.get(i, "/".join(i)) for i in entries(bundle, "include"))
    warnings = [
        issue["diagnostics"]
        for e in bundle.get("entry", [])
        if e["search"]["mode"] == "outcome"
        for issue in e["resource"]["issue"]
    ]
    return matches, included, warnings


# =========================================================================== :iterate


def test_iterate_follows_references_to_any_depth(world: World) -> None:
    query = "Organization?_id={id:org1}&_include:iterate=Organization:partof"
    matches, included, warnings = search(world, "tree", query)
    assert matches == ["org1"]
    assert included == [f"org{level}" for level in range(2, DEPTH + 1)]
    assert not warnings


def test_iterate_stops_at_the_cap_and_says_so(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(includes, "MAX_INCLUDES", 3)  # the server runs in this process
    query = "Organization?_id={id:org1}&_include:iterate=Organization:partof"
    _, included, warnings = search(world, "tree", query)
    assert included == ["org2", "org3", "org4"]
    assert warnings == ["included resources were limited to 3; narrow the search"]


def test_revinclude_iterate_walks_back_up(world: World) -> None:
    query = f"Organization?_id={{id:org{DEPTH}}}&_revinclude:iterate=Organization:partof"
    _, included, _ = search(world, "tree", query)
    assert included == sorted(f"org{level}" for level in range(1, DEPTH))


# =========================================================================== wildcards

WILDCARDS = [
    # query, matches, included
    ("Observation?_id={id:o1}&_include=Observation:*", "o1", "pa pr"),
    ("Observation?_id={id:o1}&_include=*", "o1", "pa pr"),
    ("Observation?_id={id:o1}&_include=Observation:*:Practitioner", "o1", "pr"),
    ("Observation?_id={id:o1},{id:o5}&_include=*", "o1 o5", "loc pa pr"),
    ("Observation?_id={id:o1}&_include=Patient:*", "o1", ""),  # applies to Patients only
    ("Observation?_id={id:o1}&_include=*&_include:iterate=Patient:*", "o1", "pa pr"),
    ("Observation?_id={id:o2}&_include:iterate=*", "o2", "clinic pb"),  # pb -> clinic
    ("Patient?_id={id:pa}&_revinclude=*", "pa", "o1 o6"),
    ("Practitioner?_id={id:pr}&_revinclude=*", "pr", "o1 o3 pa"),
    ("Practitioner?_id={id:pr}&_revinclude=Observation:*", "pr", "o1 o3"),
    ("Practitioner?_id={id:pr}&_revinclude=Patient:*", "pr", "pa"),
    ("Practitioner?_id={id:pr}&_revinclude=*&_include=*", "pr", "o1 o3 pa"),
]


@pytest.mark.parametrize(("query", "matches", "included"), WILDCARDS)
def test_wildcard_includes(world: World, query: str, matches: str, included: str) -> None:
    found, found_included, warnings = search(world, "refs", query)
    assert found == sorted(matches.split())
    assert found_included == sorted(included.split())  # nothing outside the scenario either
    assert not warnings


def test_wildcard_revinclude_is_capped(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(includes, "MAX_INCLUDES", 2)
    _, included, warnings = search(world, "refs", "Practitioner?_id={id:pr}&_revinclude=*")
    assert len(included) == 2 and set(included) <= {"o1", "o3", "pa"}
    assert warnings == ["included resources were limited to 2; narrow the search"]


def test_wildcard_revinclude_leaves_out_the_audit_trail(world: World) -> None:
    """Reading pa wrote AuditEvents that refer to it: only an explicit _revinclude has them."""
    loaded = world.load("refs", SCENARIOS)
    pa = loaded.ids["pa"][1]
    assert world.http.get(f"/Patient/{pa}").status_code == 200
    # Reading the trail makes its records searchable (AuditCatchUpHook); a Patient search
    # would not wait for the background indexing.
    assert entries(get_bundle(world.http, "AuditEvent", [("entity", f"Patient/{pa}")]), "match")
    explicit = get_bundle(
        world.http, "Patient", [("_id", pa), ("_revinclude", "AuditEvent:entity")]
    )
    assert any(t == "AuditEvent" for t, _ in entries(explicit, "include"))
    wildcard = get_bundle(world.http, "Patient", [("_id", pa), ("_revinclude", "*")])
    assert not [t for t, _ in entries(wildcard, "include") if t == "AuditEvent"]


def test_wildcard_links_repeat_the_wildcard(world: World) -> None:
    loaded = world.load("refs", SCENARIOS)
    pairs = [("_include", "*"), ("_revinclude", "Observation:*"), loaded.scope, ("_count", "1")]
    bundle = get_bundle(world.http, "Patient", pairs)
    outcome_free(bundle)
    nxt = next(ln["url"] for ln in bundle["link"] if ln["relation"] == "next")
    assert "_include=%2A" in nxt and "_revinclude=Observation%3A%2A" in nxt


def test_types_an_include_may_return() -> None:
    """What an access check must consider for each include (the alternatives it may return)."""

    def returned(key: str, value: str) -> tuple[str, ...]:
        (include,) = SearchParams.parse([(key, value)], "Observation").includes
        return include.returned_types()

    assert returned("_include", "Observation:subject") == ("Device", "Group", "Location", "Patient")
    assert returned("_include", "Observation:subject:Patient") == ("Patient",)
    assert {"Patient", "Practitioner", "Encounter", "Specimen"} <= set(
        returned("_include", "Observation:*")
    )
    assert "Specimen" not in returned("_include", "Patient:*")
    assert len(returned("_include", "*")) > 100
    assert returned("_revinclude", "Observation:*") == ("Observation",)
    anything = returned("_revinclude", "*")
    assert "Observation" in anything and "AuditEvent" not in anything


# =========================================================================== invalid includes

BAD_INCLUDES = [
    ("Observation", "_include", "Observation:subject:Foo"),  # not a resource type
    ("Observation", "_include", "Observation:subject:Organization"),  # not a subject target
    ("Patient", "_revinclude", "Observation:subject:Organization"),
    ("Observation", "_include", "Nosuch:*"),
    ("Observation", "_include", "Observation:code"),  # not a reference
    ("Observation", "_include:foo", "Observation:subject"),  # unknown modifier
    ("Observation", "_include", "Observation"),
]


@pytest.mark.parametrize(("path", "key", "value"), BAD_INCLUDES)
@pytest.mark.parametrize("prefer", [{}, STRICT], ids=["lenient", "strict"])
def test_invalid_include_is_refused(
    world: World, path: str, key: str, value: str, prefer: dict[str, str]
) -> None:
    loaded = world.load("refs", SCENARIOS)
    response = world.http.get(f"/{path}", params=[(key, value), loaded.scope], headers=prefer)
    assert response.status_code == 400, response.text
    assert response.json()["issue"][0]["expression"] == [key]


# =========================================================================== CapabilityStatement


def test_capability_statement_declares_what_search_does(client: httpx.Client) -> None:
    rest = client.get("/metadata").json()["rest"][0]
    assert {"code": "search-system"} in rest["interaction"]
    system = {p["name"]: p for p in rest["searchParam"]}
    assert {"_id", "_lastUpdated", "_tag", "_security", "_profile", "_source", "_type",
            "_list"} <= set(system)  # fmt: skip
    assert "_list" in {p["name"] for p in resources_of(rest)["Patient"]["searchParam"]}
    assert system["_tag"]["type"] == "token"
    assert "AuditEvent" in system["_profile"]["documentation"]  # its index leaves it out
    resources = {r["type"]: r for r in rest["resource"]}
    patient, observation = resources["Patient"], resources["Observation"]
    assert {"*", "Observation:subject", "Observation:patient", "Encounter:subject"} <= set(
        patient["searchRevInclude"]
    )
    assert "Observation:subject" not in resources["Organization"]["searchRevInclude"]
    assert {"*", "Observation:*", "Observation:subject"} <= set(observation["searchInclude"])


def resources_of(rest: dict[str, Any]) -> dict[str, Any]:
    return {r["type"]: r for r in rest["resource"]}


def test_declared_system_parameters_work(client: httpx.Client, world: World) -> None:
    """Each declared all-resource parameter is accepted by a system search (strictly)."""
    rest = client.get("/metadata").json()["rest"][0]
    loaded = world.load("refs", SCENARIOS)
    values = {"token": "x", "date": "2020", "uri": "http://example.org", "string": "x",
              "special": "x"}  # fmt: skip
    for param in rest["searchParam"]:
        if param["name"] == "_type":
            continue
        query = [(param["name"], values[param["type"]]), loaded.scope]
        response = client.get("", params=query, headers=STRICT)
        assert response.status_code == 200, (param, response.text)
    system = client.get(
        "", params=[("_type", "Patient,Location"), ("name", "smithy"), loaded.scope]
    )
    assert len(entries(system.json(), "match")) == 4


# =========================================================================== canonical includes

CTX = RequestContext.system("http://includes.test/fhir")
__all__ = ["service"]  # the fixture, shared with test_search_shape_cache


@pytest.mark.parametrize(
    ("query", "canonical_lookups"),
    [
        ("_include=Observation:subject", 0),  # a Reference: never holds a canonical
        ("_include=Observation:*", 0),  # none of Observation's reference parameters does
        ("_include=QuestionnaireResponse:questionnaire", 1),  # a canonical element
    ],
)
def test_forward_includes_look_for_canonicals_only_where_one_can_be(
    service: FhirService, query: str, canonical_lookups: int
) -> None:
    """A forward include reads the canonicals (reference rows with a url) of a parameter
    only if its element can hold one: it was one more statement per include and round for
    every parameter, even `subject`. The includes found are the same."""
    rtype = query.split("=")[1].split(":")[0]
    with service.unit_of_work(CTX, write=True) as uow:
        patient = service.create(uow, "Patient", {"resourceType": "Patient"}).version.id
        body: dict[str, Any] = {"resourceType": rtype, "status": "final",
                                "subject": {"reference": f"Patient/{patient}"}}  # fmt: skip
        if rtype == "Observation":
            body["code"] = {"text": "x"}
        else:
            body.update(status="completed", questionnaire="http://includes.test/Questionnaire/q")
        source = service.create(uow, rtype, body).version.id
    with service.unit_of_work(CTX, write=False) as uow, statements_sent(uow) as sent:
        params = SearchParams.parse_query(f"_id={source}&{query}", rtype)
        result = service.search(uow, rtype, params)
    assert [v.id for v in result.versions] == [source]
    if rtype == "Observation":
        assert [(v.resource_type, v.id) for v in result.included] == [("Patient", patient)]
    canonical_reads = [s for s in sent if "search_reference.url IS NOT NULL" in s]
    assert len(canonical_reads) == canonical_lookups, sent
