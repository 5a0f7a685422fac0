"""How a search request is read: paging links that repeat chains as written, chains across
several target types at any depth, POST _search (type and system level) meaning exactly what
GET means, and modifiers that are refused rather than ignored.

Scenarios work as in test_search_params.py (``{m}``, ``{id:label}``; every query is ANDed
with the scenario's ``_tag``).
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import httpx
import pytest

from tests.test_search_params import World, entries, get_bundle, link, outcome_free, walk, world_of

STRICT = {"Prefer": "handling=strict"}
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


@pytest.fixture(scope="module")
def world(base_url: str, auth_headers: dict[str, str]) -> Iterator[World]:
    yield from world_of(base_url, auth_headers)


def obs(subject: str, **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"text": "r"},
        "subject": {"reference": subject},
        **extra,
    }


SCENARIOS: dict[str, dict[str, dict[str, Any]]] = {
    "refs": {
        "pr": {"resourceType": "Practitioner", "name": [{"family": "House"}]},
        "role": {"resourceType": "PractitionerRole", "active": True},  # has no `name`
        "clinic": {"resourceType": "Organization", "name": "Housemann Clinic"},
        "pa": {
            "resourceType": "Patient",
            "name": [{"family": "Smithy"}],
            "gender": "female",
            "generalPractitioner": [{"reference": "Practitioner/{id:pr}"}],
        },
        "pb": {
            "resourceType": "Patient",
            "name": [{"family": "Smithy"}],
            "gender": "male",
            "generalPractitioner": [{"reference": "Organization/{id:clinic}"}],
        },
        "pc": {
            "resourceType": "Patient",
            "name": [{"family": "Smithy"}],
            "generalPractitioner": [{"reference": "PractitionerRole/{id:role}"}],
        },
        "pd": {"resourceType": "Patient", "name": [{"family": "Jones"}]},
        "loc": {"resourceType": "Location", "name": "Smithy Ward"},
        "o1": obs("Patient/{id:pa}", performer=[{"reference": "Practitioner/{id:pr}"}]),
        "o2": obs("Patient/{id:pb}"),
        "o3": obs("Patient/{id:pc}", performer=[{"reference": "Practitioner/{id:pr}"}]),
        "o4": obs("Patient/{id:pd}"),
        "o5": obs("Location/{id:loc}"),
        "o6": obs("Patient/{id:pa}"),
    },
}


def labels_of(world: World, bundle: dict[str, Any], mode: str = "match") -> list[str]:
    labels = world.load("refs", SCENARIOS).label_of()
    return sorted(labels[m] for m in entries(bundle, mode))


def query_keys(url: str | None) -> list[str]:
    return [k for k, _ in parse_qsl(urlsplit(url or "").query)]


# =========================================================================== chains: links, depth

PAGED_CHAINS = [
    # path, criterion, matches (walked one by one)
    ("Observation", ("subject.name", "smithy"), "o1 o2 o3 o5 o6"),  # Patient and Location
    ("Observation", ("patient.general-practitioner.name", "house"), "o1 o2 o6"),
    ("Patient", ("_has:Observation:subject:performer.name", "house"), "pa pc"),
    ("Observation", ("subject:Patient.general-practitioner.name", "house"), "o1 o2 o6"),
]


@pytest.mark.parametrize(("path", "criterion", "matches"), PAGED_CHAINS)
def test_chain_paging_links_repeat_the_chain_as_written(
    world: World, path: str, criterion: tuple[str, str], matches: str
) -> None:
    loaded = world.load("refs", SCENARIOS)
    pairs = [criterion, loaded.scope, ("_count", "1"), ("_sort", "_id")]
    pages = walk(world.http, path, pairs)
    found = []
    for page in pages:
        outcome_free(page)  # page 2 on: no criterion ignored
        for relation in ("self", "next"):
            url = link(page, relation)
            if url is not None:
                assert criterion[0] in query_keys(url), url
                assert dict(parse_qsl(urlsplit(url).query))[criterion[0]] == criterion[1]
        found += labels_of(world, page)
    assert sorted(found) == sorted(matches.split())
    assert len(pages) > 1
    # every link is a valid search even when unknown parameters are refused
    nxt = world.http.get(link(pages[0], "next") or "", headers=STRICT)
    assert nxt.status_code == 200, nxt.text


def test_system_search_chain_paging_links(world: World) -> None:
    loaded = world.load("refs", SCENARIOS)
    criterion = ("subject.name", "smithy")
    pairs = [("_type", "Observation,Encounter"), criterion, loaded.scope, ("_count", "2")]
    pages = walk(world.http, "", pairs)
    assert len(pages) == 3
    for page in pages:
        outcome_free(page)
        assert criterion in parse_qsl(urlsplit(link(page, "self")).query)
    assert sorted(m for p in pages for m in labels_of(world, p)) == ["o1", "o2", "o3", "o5", "o6"]


CHAIN_CASES = [
    # the inner link names no type: Practitioner and Organization have `name`, PractitionerRole not
    ("Observation?patient.general-practitioner.name=house", "o1 o2 o6"),
    ("Observation?subject.general-practitioner.name=house", "o1 o2 o6"),  # only Patient has it
    ("Observation?patient.general-practitioner:Practitioner.name=house", "o1 o6"),
    ("Observation?patient.general-practitioner:Organization.name=house", "o2"),
    ("Observation?patient.general-practitioner.active=true", "o3"),  # only the role is active
    ("Patient?general-practitioner.name=housemann", "pb"),
    ("Patient?_has:Observation:subject:performer.name=house", "pa pc"),
    ("Observation?subject.gender=female", "o1 o6"),  # only Patient has gender
]


@pytest.mark.parametrize(("query", "expected"), CHAIN_CASES)
def test_chains_search_every_target_type_that_has_the_parameter(
    world: World, query: str, expected: str
) -> None:
    loaded = world.load("refs", SCENARIOS)
    path, _, rest = loaded.render(query).partition("?")
    key, _, value = rest.partition("=")
    bundle = get_bundle(world.http, path, [(key, value), loaded.scope], headers=STRICT)
    assert labels_of(world, bundle) == sorted(expected.split())


def test_chain_no_target_type_has_is_unknown(world: World) -> None:
    loaded = world.load("refs", SCENARIOS)
    pairs = [("patient.general-practitioner.nosuch", "x"), loaded.scope]
    assert world.http.get("/Observation", params=pairs, headers=STRICT).status_code == 400
    lenient = get_bundle(world.http, "Observation", pairs)
    outcomes = [e for e in lenient["entry"] if e["search"]["mode"] == "outcome"]
    assert "patient.general-practitioner.nosuch" in str(outcomes)


# =========================================================================== modifiers

BAD_MODIFIERS = [
    # path, key, value, issue code, expression
    ("Patient", "name:foo", "smithy", "invalid", "name:foo"),
    ("Patient", "family:nosuchmodifier", "x", "invalid", "family:nosuchmodifier"),
    ("Patient", "_id:text", "x", "not-supported", "_id:text"),  # means nothing on an id
    ("Patient", "name:in", "x", "not-supported", "name:in"),  # FHIR's, not supported here
    # :of-type is defined for Identifier elements only (a code, a CodeableConcept: refused)
    ("Patient", "gender:of-type", "urn:x|MR|male", "not-supported", "gender:of-type"),
    ("Observation", "code:of-type", "urn:x|MR|c", "not-supported", "code:of-type"),
    (
        "Observation",
        "subject.gender:of-type",
        "urn:x|MR|c",
        "not-supported",
        "subject.gender:of-type",
    ),
    ("Observation", "subject:Foo", "x", "invalid", "subject:Foo"),  # not a type
    ("Observation", "subject:Organization", "x", "invalid", "subject:Organization"),
    ("Observation", "subject:Organization.name", "x", "invalid", "subject:Organization"),
    ("Observation", "subject.name:foo", "x", "invalid", "subject.name:foo"),
    (
        "Observation",
        "patient.general-practitioner.name:in",
        "x",
        "not-supported",
        "patient.general-practitioner.name:in",
    ),  # fmt: skip
    (
        "Patient",
        "_has:Observation:subject:code:foo",
        "x",
        "invalid",
        "_has:Observation:subject:code:foo",
    ),  # fmt: skip
    # _has through a reference that cannot refer to the searched type (Observation.subject:
    # Patient, Group, Device, Location): ignored, it let every resource through
    ("Observation", "_has:Observation:subject:code", "x", "invalid", "_has:Observation:subject"),
    (
        "Patient",
        "_has:Observation:patient:_has:Observation:subject:code",
        "x",
        "invalid",
        "_has:Observation:patient:_has:Observation:subject",
    ),  # fmt: skip
]


@pytest.mark.parametrize(("path", "key", "value", "code", "expression"), BAD_MODIFIERS)
@pytest.mark.parametrize("prefer", [{}, STRICT], ids=["lenient", "strict"])
def test_unknown_or_invalid_modifier_is_refused(
    world: World, path: str, key: str, value: str, code: str, expression: str,
    prefer: dict[str, str],
) -> None:  # fmt: skip
    loaded = world.load("refs", SCENARIOS)
    response = world.http.get(f"/{path}", params=[(key, value), loaded.scope], headers=prefer)
    assert response.status_code == 400, response.text
    issue = response.json()["issue"][0]
    assert (issue["code"], issue["expression"]) == (code, [expression])


def test_system_search_refuses_an_unknown_modifier(world: World) -> None:
    loaded = world.load("refs", SCENARIOS)
    pairs = [("_type", "Patient,Practitioner"), ("name:foo", "house"), loaded.scope]
    assert world.http.get("", params=pairs).status_code == 400


@pytest.mark.parametrize("types", ["Bogus", "Patient,Bogus"])
def test_system_search_with_an_unknown_type_in_type_is_400(world: World, types: str) -> None:
    """An unknown `_type` value is a bad parameter value, not a missing endpoint (404 is for
    an unknown type in the path): GET and POST _search alike."""
    for response in (world.http.get("", params={"_type": types}),
                     post_search(world, "", f"_type={types}")):  # fmt: skip
        assert response.status_code == 400, response.text
        [issue] = response.json()["issue"]
        assert issue["expression"] == ["_type"] and "'Bogus'" in issue["diagnostics"]


def test_reference_type_modifier_of_a_real_target(world: World) -> None:
    loaded = world.load("refs", SCENARIOS)
    pairs = [("subject:Patient", loaded.ids["pa"][1]), loaded.scope]
    bundle = get_bundle(world.http, "Observation", pairs, headers=STRICT)
    assert labels_of(world, bundle) == ["o1", "o6"]


# =========================================================================== POST _search


def post_search(world: World, path: str, body: str, **kw: Any) -> httpx.Response:
    return world.http.post(f"{path}/_search", content=body, headers=FORM, **kw)


def test_post_search_applies_elements_and_summary_from_the_body(world: World) -> None:
    loaded = world.load("refs", SCENARIOS)
    pa = loaded.ids["pa"][1]
    response = post_search(world, "/Patient", f"_id={pa}&_elements=gender")
    assert response.status_code == 200, response.text
    (entry,) = response.json()["entry"]
    resource = entry["resource"]
    assert sorted(resource) == ["gender", "id", "meta", "resourceType"]
    assert "SUBSETTED" in [t["code"] for t in resource["meta"]["tag"]]
    summary = post_search(world, "/Patient", f"_id={pa}&_summary=true").json()
    assert "generalPractitioner" not in summary["entry"][0]["resource"]  # not a summary element
    assert "name" in summary["entry"][0]["resource"]
    # the URL and the form together, as for the criteria
    split = post_search(world, "/Patient", "_elements=gender", params={"_id": pa}).json()
    assert sorted(split["entry"][0]["resource"]) == ["gender", "id", "meta", "resourceType"]


def test_post_search_refuses_what_get_refuses(world: World) -> None:
    loaded = world.load("refs", SCENARIOS)
    pa = loaded.ids["pa"][1]
    assert world.http.get("/Patient", params={"_id": pa, "_summary": "bogus"}).status_code == 400
    response = post_search(world, "/Patient", f"_id={pa}&_summary=bogus")
    assert response.status_code == 400, response.text
    assert response.json()["issue"][0]["expression"] == ["_summary"]


def test_post_search_at_the_base_is_a_system_search(world: World) -> None:
    loaded = world.load("refs", SCENARIOS)
    tag = loaded.scope[1]
    response = post_search(world, "", f"_type=Patient,Location&name=smithy&_tag={tag}&_count=2")
    assert response.status_code == 200, response.text
    first = response.json()
    pages = [first]
    while (url := link(pages[-1], "next")) is not None:
        pages.append(world.http.get(url).json())  # next links are GET [base]?_type=...
    assert sorted(m for p in pages for m in labels_of(world, p)) == ["loc", "pa", "pb", "pc"]
    assert "_type" in query_keys(link(first, "self"))
    assert world.http.get("/_search", params={"_type": "Patient"}).status_code == 405


def test_post_search_needs_a_form(world: World) -> None:
    loaded = world.load("refs", SCENARIOS)
    for content_type in ("application/json", "application/fhir+json", "text/plain"):
        response = world.http.post(
            "/Patient/_search",
            content=b'{"name": "smithy"}',
            headers={"Content-Type": content_type},
        )
        assert response.status_code == 415, (content_type, response.text)
        assert response.json()["resourceType"] == "OperationOutcome"
    json_at_base = world.http.post(
        "/_search", content=b'{"_type": "Patient"}', headers={"Content-Type": "application/json"}
    )
    assert json_at_base.status_code == 415
    # no body: the URL's parameters alone, whatever the content type says
    empty = world.http.post(
        "/Patient/_search",
        params=[("name", "jones"), loaded.scope],
        headers={"Content-Type": "application/json"},
    )
    assert empty.status_code == 200, empty.text
    assert labels_of(world, empty.json()) == ["pd"]


# =========================================================================== size


def test_a_value_list_as_long_as_a_search_takes_is_answered(world: World) -> None:
    """999 alternatives of one parameter and the scenario's tag (1,000 values: as many as a
    search takes; a value set's codes, a list of patients): SQLite refused the flat
    `a OR b OR ...` of that many (expression tree deeper than 1,000), a 500. Each kind of
    condition: token, token with system, string, date, reference, quantity, _has."""
    loaded = world.load("refs", SCENARIOS)
    pa = loaded.ids["pa"][1]
    cases = [
        ("/Patient", "gender", [f"nosuch{i}" for i in range(998)] + ["female"], ["pa"]),
        ("/Patient", "identifier", [f"urn:x|{i}" for i in range(999)], []),
        ("/Patient", "name", [f"nosuch{i}" for i in range(998)] + ["smithy"], ["pa", "pb", "pc"]),
        ("/Patient", "birthdate", [f"ge1900-01-{i % 28 + 1:02d}" for i in range(999)], []),
        ("/Observation", "value-quantity", [f"{i}||mg" for i in range(999)], []),
        ("/Patient", "_has:Observation:subject:code", [f"c{i}" for i in range(999)], []),
    ]
    for path, key, values, expected in cases:
        response = post_search(world, path, urlencode([(key, ",".join(values)), loaded.scope]))
        assert response.status_code == 200, (key, response.text[:300])
        if path == "/Patient":
            assert labels_of(world, response.json()) == expected, key
    reference = [f"Patient/nosuch{i}" for i in range(998)] + [f"Patient/{pa}"]
    response = post_search(
        world, "/Observation", urlencode([("subject", ",".join(reference)), loaded.scope])
    )
    assert response.status_code == 200, response.text[:300]


# 5 links, one type each: 2 ** 5 = 32 branches (stored and contained at every link)
DEEPEST = "organization.partof.partof.partof.partof.name"
HAS_DEEPEST = "_has:Organization:partof:" * 4 + "_has:Patient:organization:name"


def test_a_chain_as_deep_as_a_search_takes_is_answered(world: World) -> None:
    loaded = world.load("refs", SCENARIOS)
    for path, key in (("/Patient", DEEPEST), ("/Organization", HAS_DEEPEST)):
        response = post_search(world, path, urlencode([(key, "smithy"), loaded.scope]))
        assert response.status_code == 200, (key, response.text[:300])
        assert not entries(response.json(), "match")


TOO_DEEP = DEEPEST.replace("organization.", "organization.partof.")
HAS_TOO_DEEP = "_has:Organization:partof:" + HAS_DEEPEST


@pytest.mark.parametrize(
    ("path", "pairs", "expression"),
    [
        ("Patient", [("gender", ",".join(["male"] * 1001))], "gender"),
        ("Patient", [("name", ",".join(["x"] * 600)), ("family", ",".join(["y"] * 401))], "family"),
        ("Patient", [("_tag", f"urn:t|{i}") for i in range(65)], "_tag"),
        ("Patient", [(DEEPEST, "x"), (DEEPEST, "y"), ("gender", "male")], "gender"),  # 32+32+1
        ("Patient", [(TOO_DEEP, "x")], TOO_DEEP),
        ("Organization", [(HAS_TOO_DEEP, "x")], HAS_TOO_DEEP),
        ("Patient", [(DEEPEST, ",".join(["x"] * 32))], DEEPEST),  # once per branch: 32 * 32
        ("Patient", [("_sort", ",".join(["birthdate"] * 11))], "_sort"),
    ],
    ids=[
        "values",
        "values-in-all",
        "criteria",
        "chain-branches",
        "chain-depth",
        "has-depth",
        "chain-values",
        "sort-keys",
    ],  # fmt: skip
)
@pytest.mark.parametrize("prefer", [{}, STRICT], ids=["lenient", "strict"])
def test_a_search_too_large_is_refused(
    world: World, path: str, pairs: list[tuple[str, str]], expression: str,
    prefer: dict[str, str],
) -> None:  # fmt: skip
    """Beyond limits.py's bounds (64 branches, 5 links, 1,000 values, 10 sort keys): 400
    too-costly, located in the parameter that crossed the bound; never a 500, a minute's work
    or a server process of several GB (a chain ten links deep: 1,024 subqueries)."""
    response = world.http.post(
        f"/{path}/_search", content=urlencode(pairs), headers={**FORM, **prefer}
    )
    assert response.status_code == 400, response.text[:300]
    issue = response.json()["issue"][0]
    assert (issue["code"], issue["expression"]) == ("too-costly", [expression])


# =========================================================================== NUL


NUL_PAGE = base64.urlsafe_b64encode(b'{"dir": "next", "at": ["b\\u0000"]}').decode().rstrip("=")


@pytest.mark.parametrize(
    ("path", "pairs", "expression"),
    [
        ("/Patient", [("name", "a\x00b")], "name"),
        ("/Patient", [("_id", "a\x00b")], "_id"),
        ("/Patient", [("identifier", "urn:x|a\x00b")], "identifier"),
        ("/Observation", [("subject:Patient.name", "a\x00b")], "subject:Patient.name"),
        (
            "/Patient",
            [("_has:Observation:subject:code", "a\x00b")],
            "_has:Observation:subject:code",
        ),
        ("/Patient", [("na\x00me", "x")], "na%00me"),
        ("/Patient", [("_page", NUL_PAGE)], "_page"),
        ("/Patient/a%00b", [], "Patient/a%00b"),
        ("/Patient/a%00b/_history", [], "Patient/a%00b/_history"),
    ],
    ids=["string", "id", "token", "chain", "has", "key", "page", "read", "history"],
)
def test_a_nul_character_is_a_bad_request(
    world: World, path: str, pairs: list[tuple[str, str]], expression: str
) -> None:
    """%00 in a search value, a parameter name, a paging token or an id: PostgreSQL cannot
    take text holding NUL, and each was a 500 there; no FHIR value holds one (writes refuse
    control characters), so it is a 400 naming where it was."""
    response = world.http.get(path, params=pairs)
    assert response.status_code == 400, response.text[:300]
    issue = response.json()["issue"][0]
    assert issue["expression"] == [expression]
    assert "\x00" not in response.text
