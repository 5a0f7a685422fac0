"""Search result shaping, table-driven: _include / _revinclude, _sort, paging (also while
resources are being inserted), _total, _summary=count, system search, POST _search, and
lenient vs strict handling of unknown parameters.

Scenarios and templates work as in test_search_params.py (``{m}``, ``{id:label}``, ``{base}``).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest

from tests.test_search_params import (
    ENCOUNTER_CLASS,
    FHIR_JSON,
    SCOPE_SYSTEM,
    Loaded,
    World,
    entries,
    get_bundle,
    link,
    outcome_free,
    split_query,
    walk,
    world_of,
)
from tests.test_search_params import SCENARIOS as CRITERIA_SCENARIOS


@pytest.fixture(scope="module")
def world(base_url: str, auth_headers: dict[str, str]) -> Iterator[World]:
    yield from world_of(base_url, auth_headers)


def obs(**extra: Any) -> dict[str, Any]:
    return {"resourceType": "Observation", "status": "final", "code": {"text": "r"}, **extra}


SCENARIOS: dict[str, dict[str, dict[str, Any]]] = {
    "includes": {
        "org": {"resourceType": "Organization", "name": "Included Org"},
        "pa": {
            "resourceType": "Patient",
            "managingOrganization": {"reference": "Organization/{id:org}"},
        },
        "pb": {"resourceType": "Patient"},
        "pc": {"resourceType": "Patient"},  # referenced only from another server's URL
        "grp": {"resourceType": "Group", "type": "person", "actual": True},
        "o1": obs(subject={"reference": "Patient/{id:pa}"}),
        "o2": obs(
            subject={"reference": "Patient/{id:pa}"},
            hasMember=[{"reference": "Observation/{id:o1}"}],
        ),
        "o3": obs(subject={"reference": "{base}/Patient/{id:pb}"}),
        "o4": obs(subject={"reference": "http://other.example.org/fhir/Patient/{id:pc}"}),
        "o5": obs(subject={"reference": "Group/{id:grp}"}),
    },
    # Created in this order, so _lastUpdated order differs from _id order.
    "sorting": {
        "s3": {
            "resourceType": "Patient",
            "name": [{"family": "Adams"}],
            "birthDate": "1970-01-01",
            "gender": "male",
        },
        "s1": {
            "resourceType": "Patient",
            "name": [{"family": "Adams"}],
            "birthDate": "1990-05-01",
            "gender": "female",
        },
        "s5": {"resourceType": "Patient", "name": [{"given": ["Nofamily"]}], "birthDate": "2000"},
        "s2": {
            "resourceType": "Patient",
            "name": [{"family": "baker"}],
            "birthDate": "1985",
            "gender": "male",
        },
        "s4": {"resourceType": "Patient", "name": [{"family": "Émile"}], "gender": "female"},
    },
    "encounters": {
        "e1": {
            "resourceType": "Encounter",
            "status": "finished",
            "class": ENCOUNTER_CLASS,
            "period": {"start": "2024-01-01", "end": "2024-01-10"},
        },
        "e2": {
            "resourceType": "Encounter",
            "status": "in-progress",
            "class": ENCOUNTER_CLASS,
            "period": {"start": "2024-01-05"},
        },
        "e3": {
            "resourceType": "Encounter",
            "status": "finished",
            "class": ENCOUNTER_CLASS,
            "period": {"start": "2023-12-01", "end": "2023-12-02"},
        },
        "e4": {"resourceType": "Encounter", "status": "planned", "class": ENCOUNTER_CLASS},
    },
}


# =========================================================================== _include / _revinclude

INCLUDE_CASES = [
    # query, matches, included
    ("Observation?_include=Observation:subject", "o1 o2 o3 o4 o5", "pa pb grp"),
    ("Observation?_include=Observation:subject:Patient", "o1 o2 o3 o4 o5", "pa pb"),
    ("Observation?_include=Observation:subject:Group", "o1 o2 o3 o4 o5", "grp"),
    ("Observation?_include=Observation:patient", "o1 o2 o3 o4 o5", "pa pb"),
    (
        "Observation?_include=Observation:subject&_include:iterate=Patient:organization",
        "o1 o2 o3 o4 o5",
        "pa pb grp org",
    ),
    (  # without :iterate, Patient:organization applies to the matches only (none are Patients)
        "Observation?_include=Observation:subject&_include=Patient:organization",
        "o1 o2 o3 o4 o5",
        "pa pb grp",
    ),
    (
        "Observation?_id={id:o1}&_include=Observation:subject&_include:iterate=Patient:organization",
        "o1",
        "pa org",
    ),
    ("Observation?_id={id:o2}&_include=Observation:has-member", "o2", "o1"),
    # a match is never repeated as an include
    ("Observation?_id={id:o1},{id:o2}&_include=Observation:has-member", "o1 o2", ""),
    ("Observation?_id={id:o4}&_include=Observation:subject", "o4", ""),  # another server's
    ("Patient?_revinclude=Observation:subject", "pa pb pc", "o1 o2 o3"),
    ("Patient?_id={id:pb}&_revinclude=Observation:subject", "pb", "o3"),
    ("Patient?_revinclude=Observation:patient", "pa pb pc", "o1 o2 o3"),
    ("Group?_revinclude=Observation:subject", "grp", "o5"),
    (
        "Organization?_revinclude=Patient:organization&_revinclude:iterate=Observation:subject",
        "org",
        "pa o1 o2",
    ),
    (
        "Patient?_id={id:pa}&_revinclude=Observation:subject&_include=Patient:organization",
        "pa",
        "o1 o2 org",
    ),
]


@pytest.mark.parametrize(
    ("query", "matches", "included"), INCLUDE_CASES, ids=[c[0] for c in INCLUDE_CASES]
)
def test_include(world: World, query: str, matches: str, included: str) -> None:
    loaded = world.load("includes", SCENARIOS)
    path, pairs = split_query(loaded.render(query))
    bundle = get_bundle(world.http, path, [*pairs, loaded.scope])
    outcome_free(bundle)
    labels = loaded.label_of()
    full_urls = [e["fullUrl"] for e in bundle.get("entry", [])]
    assert len(full_urls) == len(set(full_urls)), "an entry appears twice"
    found = entries(bundle, "match")
    assert sorted(labels[m] for m in found) == sorted(matches.split())
    # includes are judged within the scenario (no other test's data can be referenced)
    assert sorted(labels.get(i, str(i)) for i in entries(bundle, "include")) == sorted(
        included.split()
    )


def test_include_follows_each_page(world: World) -> None:
    """Each page includes exactly the subjects of its own matches; links keep the _include."""
    loaded = world.load("includes", SCENARIOS)
    labels = loaded.label_of()
    subjects = {"o1": {"pa"}, "o2": {"pa"}, "o3": {"pb"}, "o4": set(), "o5": {"grp"}}
    pairs = [
        loaded.scope,
        ("_include", "Observation:subject"),
        ("_sort", "_id"),
        ("_count", "2"),
    ]
    pages = walk(world.http, "Observation", pairs)
    seen = []
    for page in pages:
        page_matches = [labels[m] for m in entries(page, "match")]
        expected = set().union(*(subjects[m] for m in page_matches))
        assert {labels[i] for i in entries(page, "include")} == expected
        seen += page_matches
    assert seen == ["o1", "o2", "o3", "o4", "o5"]


# =========================================================================== _sort

SORT_CASES = [
    ("family", "s1 s3 s2 s4 s5"),  # Adams (id tiebreak), baker, Émile; no family last
    ("-family", "s4 s2 s1 s3 s5"),
    ("family,birthdate", "s3 s1 s2 s4 s5"),
    ("family,-birthdate", "s1 s3 s2 s4 s5"),
    ("birthdate", "s3 s2 s1 s5 s4"),  # no birthDate last
    ("-birthdate", "s5 s1 s2 s3 s4"),  # still last when descending
    ("gender,family", "s1 s4 s3 s2 s5"),  # token
    ("-gender,-birthdate", "s2 s3 s1 s4 s5"),
    ("_lastUpdated", "s3 s1 s5 s2 s4"),
    ("-_lastUpdated", "s4 s2 s5 s1 s3"),
    ("_id", "s1 s2 s3 s4 s5"),
    ("-_id", "s5 s4 s3 s2 s1"),
    ("gender,-_lastUpdated", "s4 s1 s2 s3 s5"),
]


@pytest.mark.parametrize(("sort", "order"), SORT_CASES, ids=[c[0] for c in SORT_CASES])
def test_sort(world: World, sort: str, order: str) -> None:
    loaded = world.load("sorting", SCENARIOS)
    labels = loaded.label_of()
    bundle = get_bundle(world.http, "Patient", [loaded.scope, ("_sort", sort)])
    outcome_free(bundle)
    assert [labels[m] for m in entries(bundle, "match")] == order.split()
    # The same order, page by page, forwards ...
    pages = walk(world.http, "Patient", [loaded.scope, ("_sort", sort), ("_count", "2")])
    assert [labels[m] for p in pages for m in entries(p, "match")] == order.split()
    # ... and backwards through the previous links from the last page.
    back = [pages[-1]]
    while (url := link(back[-1], "previous")) is not None:
        assert len(back) <= len(pages)
        back.append(world.http.get(url).json())
    assert [entries(p, "match") for p in reversed(back)] == [entries(p, "match") for p in pages]


ENCOUNTER_SORTS = [
    ("date", "e3 e1 e2 e4"),  # by start; no period last
    ("-date", "e2 e1 e3 e4"),  # by end; an open end is the latest
    ("status,date", "e3 e1 e2 e4"),
]


@pytest.mark.parametrize(("sort", "order"), ENCOUNTER_SORTS, ids=[c[0] for c in ENCOUNTER_SORTS])
def test_sort_periods(world: World, sort: str, order: str) -> None:
    loaded = world.load("encounters", SCENARIOS)
    labels = loaded.label_of()
    bundle = get_bundle(world.http, "Encounter", [loaded.scope, ("_sort", sort)])
    assert [labels[m] for m in entries(bundle, "match")] == order.split()


# Other parameter types, over the criteria scenarios (created afresh here).
TYPED_SORTS = [
    ("numbers", "RiskAssessment", "probability", "r0-25 r49-4 r49-5 r50 r50-49 r50-5 rnone"),
    ("numbers", "RiskAssessment", "-probability", "r50-5 r50-49 r50 r49-5 r49-4 r0-25 rnone"),
    ("quantities", "Observation", "value-quantity", "kg mg milligram unitonly mmhg string"),
    ("quantities", "Observation", "-value-quantity,_id", "mmhg kg mg milligram unitonly string"),
    ("uris", "ValueSet", "url", "v12 v123 v123h v1234 vother void vnone"),
    ("uris", "ValueSet", "-url", "void vother v1234 v123h v123 v12 vnone"),
    ("dates", "Observation", "date", "year month utc day tz inst none"),
    ("dates", "Observation", "-date", "month day inst tz utc year none"),
    ("tokens", "Observation", "code", "temp hr local freetext"),
    ("tokens", "Observation", "-code", "local hr temp freetext"),
    ("tokens", "Observation", "status", "local freetext hr temp"),
    (
        "strings",
        "Patient",
        "address-city,-_id",
        "zoeller zoe upper text slash prefixonly pipe percent noname jones comma",
    ),
]


@pytest.mark.parametrize(
    ("scenario", "rtype", "sort", "order"), TYPED_SORTS, ids=[f"{c[1]}:{c[2]}" for c in TYPED_SORTS]
)
def test_sort_by_type(world: World, scenario: str, rtype: str, sort: str, order: str) -> None:
    loaded = world.load(scenario, CRITERIA_SCENARIOS)
    labels = loaded.label_of()
    bundle = get_bundle(world.http, rtype, [loaded.scope, ("_sort", sort)])
    outcome_free(bundle)
    assert [labels[m] for m in entries(bundle, "match")] == order.split()
    pages = walk(world.http, rtype, [loaded.scope, ("_sort", sort), ("_count", "2")])
    assert [labels[m] for p in pages for m in entries(p, "match")] == order.split()


def test_include_skips_deleted_and_total_counts_matches_only(world: World) -> None:
    marker = uuid.uuid4().hex[:12]
    loaded = world.create(
        f"deleted-{marker}",
        {
            "gone": {"resourceType": "Patient"},
            "kept": {"resourceType": "Patient"},
            "o-gone": obs(subject={"reference": "Patient/{id:gone}"}),
            "o-kept": obs(subject={"reference": "Patient/{id:kept}"}),
        },
    )
    assert world.http.delete(f"/Patient/{loaded.ids['gone'][1]}").status_code in (200, 204)
    labels = loaded.label_of()
    bundle = get_bundle(
        world.http,
        "Observation",
        [loaded.scope, ("_include", "Observation:subject"), ("_total", "accurate")],
    )
    assert sorted(labels[m] for m in entries(bundle, "match")) == ["o-gone", "o-kept"]
    assert [labels[i] for i in entries(bundle, "include")] == ["kept"]
    assert bundle["total"] == 2
    patients = get_bundle(
        world.http,
        "Patient",
        [loaded.scope, ("_revinclude", "Observation:subject"), ("_total", "accurate")],
    )
    assert [labels[m] for m in entries(patients, "match")] == ["kept"]
    assert [labels[i] for i in entries(patients, "include")] == ["o-kept"]
    assert patients["total"] == 1
    counted = get_bundle(
        world.http,
        "Patient",
        [loaded.scope, ("_revinclude", "Observation:subject"), ("_summary", "count")],
    )
    assert counted["total"] == 1 and "entry" not in counted


# =========================================================================== paging


def make_patients(http: httpx.Client, marker: str, families: list[str]) -> list[str]:
    ids = []
    for family in families:
        body = {
            "resourceType": "Patient",
            "meta": {"tag": [{"system": SCOPE_SYSTEM, "code": marker}]},
            "name": [{"family": family}],
            "birthDate": f"19{10 + len(ids) * 7 % 80:02d}-01-01",
        }
        response = http.post("/Patient", json=body, headers=FHIR_JSON)
        assert response.status_code == 201, response.text
        ids.append(response.json()["id"])
    return ids


PAGING_SORTS = ["", "_lastUpdated", "-_lastUpdated", "family", "-family,_id", "-birthdate"]


@pytest.mark.parametrize("sort", PAGING_SORTS)
def test_paging_walks_every_match_once(world: World, sort: str) -> None:
    marker = uuid.uuid4().hex[:12]
    families = ["Kim", "Lee", "kim", "Park", "Lee", "Abe", "Zed"]
    ids = make_patients(world.http, marker, families)
    scope = ("_tag", f"{SCOPE_SYSTEM}|{marker}")
    sort_pairs = [("_sort", sort)] if sort else []
    whole = get_bundle(world.http, "Patient", [scope, *sort_pairs])
    order = [i for _, i in entries(whole, "match")]
    assert sorted(order) == sorted(ids)
    pages = walk(world.http, "Patient", [scope, *sort_pairs, ("_count", "3")])
    assert [len(entries(p, "match")) for p in pages] == [3, 3, 1]
    assert [i for p in pages for _, i in entries(p, "match")] == order
    assert link(pages[0], "previous") is None
    assert link(pages[-1], "next") is None
    # the previous link of page 2 returns page 1, of page 3 returns page 2
    for later, earlier in ((1, 0), (2, 1)):
        url = link(pages[later], "previous")
        assert url is not None
        prior = world.http.get(url).json()
        assert entries(prior, "match") == entries(pages[earlier], "match")
    # links repeat the criteria, not any ignored parameter
    query = dict(parse_qsl(urlsplit(link(pages[0], "next") or "").query))
    assert query["_tag"] == f"{SCOPE_SYSTEM}|{marker}" and query["_count"] == "3"


@pytest.mark.parametrize("sort", PAGING_SORTS)
def test_paging_while_inserting(world: World, sort: str) -> None:
    """New matches inserted between page fetches: nothing twice, no pre-existing one skipped."""
    marker = uuid.uuid4().hex[:12]
    original = make_patients(world.http, marker, ["Mo", "Ng", "Oh", "Mo", "Li", "Xu"])
    scope = ("_tag", f"{SCOPE_SYSTEM}|{marker}")
    sort_pairs = [("_sort", sort)] if sort else []
    page = get_bundle(world.http, "Patient", [scope, *sort_pairs, ("_count", "2")])
    seen = [i for _, i in entries(page, "match")]
    inserted: list[str] = []
    rounds = 0
    while (url := link(page, "next")) is not None:
        rounds += 1
        assert rounds < 20
        if rounds <= 3:  # (ascending _lastUpdated would otherwise never run out of pages)
            inserted += make_patients(world.http, marker, ["Aa", "Mo", "Zz"][:rounds])
        response = world.http.get(url)
        assert response.status_code == 200
        page = response.json()
        seen += [i for _, i in entries(page, "match")]
    assert len(seen) == len(set(seen)), "a resource was returned twice"
    assert set(original) <= set(seen), "a pre-existing match was skipped"
    assert set(seen) <= set(original) | set(inserted)


def test_escapes_survive_paging_links(world: World) -> None:
    """An escaped comma is one value on every page, not an OR that page 2 reintroduces."""
    marker = uuid.uuid4().hex[:12]
    ids = make_patients(world.http, marker, ["Smith,Jones", "Smith,Jonesy", "Jones", "Smith"])
    scope = ("_tag", f"{SCOPE_SYSTEM}|{marker}")
    for family, expected in (("smith\\,jones", ids[:2]), ("smith\\,jones,jones", ids[:3])):
        pairs = [scope, ("family", family), ("_sort", "_id"), ("_count", "1")]
        pages = walk(world.http, "Patient", pairs)
        found = [i for p in pages for _, i in entries(p, "match")]
        assert sorted(found) == sorted(expected), family
        self_query = dict(parse_qsl(urlsplit(link(pages[-1], "self") or "").query))
        assert self_query["family"] == family


def test_total_and_summary_count(world: World) -> None:
    marker = uuid.uuid4().hex[:12]
    make_patients(world.http, marker, ["Tot"] * 5)
    scope = ("_tag", f"{SCOPE_SYSTEM}|{marker}")
    first = get_bundle(world.http, "Patient", [scope, ("_total", "accurate"), ("_count", "2")])
    assert first["total"] == 5 and len(entries(first, "match")) == 2
    second = world.http.get(link(first, "next") or "").json()
    assert second["total"] == 5, "the next link keeps _total"
    count = get_bundle(world.http, "Patient", [scope, ("_summary", "count")])
    assert count["total"] == 5
    assert not entries(count, "match")
    none = get_bundle(world.http, "Patient", [scope, ("family", "nobody"), ("_total", "accurate")])
    assert none["total"] == 0 and not entries(none, "match")


def test_count_zero_is_a_summary_count(world: World) -> None:
    """R4 search.html#count: `_count=0` is treated as `_summary=count`: Bundle.total and no
    entries, nor next/previous links (fhirpy and others count matches that way)."""
    marker = uuid.uuid4().hex[:12]
    make_patients(world.http, marker, ["Zero"] * 3)
    scope = ("_tag", f"{SCOPE_SYSTEM}|{marker}")
    bundle = get_bundle(world.http, "Patient", [scope, ("_count", "0")])
    assert bundle["total"] == 3
    assert not entries(bundle, "match")
    assert [ln["relation"] for ln in bundle["link"]] == ["self"]
    narrowed = get_bundle(world.http, "Patient", [scope, ("_count", "0"), ("_id", "nobody")])
    assert narrowed["total"] == 0


# =========================================================================== system search, POST


def test_system_search(world: World) -> None:
    loaded = world.load("includes", SCENARIOS)
    labels = loaded.label_of()

    def system(pairs: list[tuple[str, str]]) -> list[str]:
        pages = walk(world.http, "", pairs)
        for page in pages:
            outcome_free(page)
        found = [m for p in pages for m in entries(p, "match")]
        assert len(found) == len(set(found))
        return sorted(labels[m] for m in found)

    ids = ",".join(loaded.ids[label][1] for label in ("pa", "o1", "org"))
    assert system([("_type", "Patient,Observation"), ("_id", ids)]) == ["o1", "pa"]
    assert system([("_type", "Patient,Organization"), loaded.scope]) == sorted(
        ["org", "pa", "pb", "pc"]
    )
    assert system([loaded.scope]) == sorted(loaded.ids)  # every type
    # paging links keep _type
    paged = system(
        [("_type", "Observation,Group"), loaded.scope, ("_count", "2"), ("_sort", "_id")]
    )
    assert paged == sorted(["o1", "o2", "o3", "o4", "o5", "grp"])


def test_post_search_with_form_body(world: World) -> None:
    loaded = world.load("sorting", SCENARIOS)
    labels = loaded.label_of()
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    body = f"family=adams&_tag={SCOPE_SYSTEM}|{loaded.marker}&_sort=birthdate"
    response = world.http.post("/Patient/_search", content=body, headers=form)
    assert response.status_code == 200, response.text
    assert [labels[m] for m in entries(response.json(), "match")] == ["s3", "s1"]
    # criteria split between the URL and the body are ANDed
    response = world.http.post(
        "/Patient/_search", params=[loaded.scope], content="gender=female&_count=1", headers=form
    )
    bundle = response.json()
    assert [labels[m] for m in entries(bundle, "match")] == ["s1"]
    nxt = link(bundle, "next")
    assert nxt is not None and "gender=female" in nxt, "the next link is a GET with the criteria"
    assert [labels[m] for m in entries(world.http.get(nxt).json(), "match")] == ["s4"]


# =========================================================================== unknown parameters

UNKNOWN = [
    "unknownparam=1",
    "family.name=x",  # a string cannot be chained
    "_has:Observation:subject:nosuch=1",
    "organization.nosuch=1",
]  # an unknown modifier is never ignored: test_search_requests.py


@pytest.mark.parametrize("unknown", UNKNOWN)
def test_unknown_parameter_lenient_and_strict(world: World, unknown: str) -> None:
    loaded = world.load("sorting", SCENARIOS)
    labels = loaded.label_of()
    key, _, value = unknown.partition("=")
    pairs = [("family", "adams"), (key, value), loaded.scope]
    bundle = get_bundle(world.http, "Patient", pairs)
    assert sorted(labels[m] for m in entries(bundle, "match")) == ["s1", "s3"]
    outcomes = [e for e in bundle["entry"] if e["search"]["mode"] == "outcome"]
    assert len(outcomes) == 1
    assert outcomes[0]["resource"]["resourceType"] == "OperationOutcome"
    assert key in outcomes[0]["resource"]["issue"][0]["diagnostics"]
    self_query = dict(parse_qsl(urlsplit(link(bundle, "self") or "").query))
    assert key not in self_query and self_query.get("family") == "adams"
    strict = world.http.get("/Patient", params=pairs, headers={"Prefer": "handling=strict"})
    assert strict.status_code == 400, strict.text
    assert strict.json()["resourceType"] == "OperationOutcome"
    # strict with only known parameters is an ordinary search
    known = world.http.get(
        "/Patient",
        params=[("family", "adams"), loaded.scope],
        headers={"Prefer": "handling=strict"},
    )
    assert known.status_code == 200
    assert sorted(labels[m] for m in entries(known.json(), "match")) == ["s1", "s3"]


def test_render_keeps_literal_queries() -> None:
    """The harness itself: split_query keeps escapes and Loaded.render fills ids."""
    loaded = Loaded("x", "m1", "http://b", {"pa": ("Patient", "pa-m1")})
    assert split_query(loaded.render("Patient?_id={id:pa}&family=a\\,b")) == (
        "Patient",
        [("_id", "pa-m1"), ("family", "a\\,b")],
    )


def test_system_search_with_a_parameter_shared_by_every_type(client: httpx.Client) -> None:
    marker = uuid.uuid4().hex
    tag = {"system": "urn:test:system-search", "code": marker}
    pat = client.post(
        "/Patient",
        json={
            "resourceType": "Patient",
            "meta": {"tag": [tag]},
            "identifier": [{"system": "urn:ss", "value": marker}],
        },
        headers={"Content-Type": "application/fhir+json"},
    ).json()
    query = {"_type": "Patient,Practitioner", "identifier": f"urn:ss|{marker}"}
    bundle = client.get("", params=query).json()
    assert [e["resource"]["id"] for e in bundle["entry"] if e["search"]["mode"] == "match"] == [
        pat["id"]
    ]
    not_shared = client.get(
        "",
        params={"_type": "Patient,Observation", "gender": "female"},
        headers={"Prefer": "handling=strict"},
    )
    assert not_shared.status_code == 400


def test_composite_code_value_pairs_match_on_the_same_component(client: httpx.Client) -> None:
    marker = uuid.uuid4().hex
    tag = {"system": "urn:test:composite", "code": marker}

    def bp(systolic: int, diastolic: int) -> str:
        component = [
            {
                "code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]},
                "valueQuantity": {
                    "value": systolic,
                    "system": "http://unitsofmeasure.org",
                    "code": "mm[Hg]",
                },
            },
            {
                "code": {"coding": [{"system": "http://loinc.org", "code": "8462-4"}]},
                "valueQuantity": {
                    "value": diastolic,
                    "system": "http://unitsofmeasure.org",
                    "code": "mm[Hg]",
                },
            },
        ]
        body = {
            "resourceType": "Observation",
            "status": "final",
            "meta": {"tag": [tag]},
            "code": {"coding": [{"system": "http://loinc.org", "code": "85354-9"}]},
            "component": component,
            "effectiveDateTime": "2025-03-04",
        }
        response = client.post(
            "/Observation", json=body, headers={"Content-Type": "application/fhir+json"}
        )
        return response.json()["id"]

    high = bp(160, 70)
    low = bp(110, 95)  # diastolic above 90, systolic not above 140

    def ids(value: str) -> set[str]:
        bundle = client.get(
            "/Observation",
            params={"_tag": f"urn:test:composite|{marker}", "component-code-value-quantity": value},
        ).json()
        return {
            e["resource"]["id"] for e in bundle.get("entry", []) if e["search"]["mode"] == "match"
        }

    assert ids("http://loinc.org|8480-6$gt140") == {high}
    assert ids("8480-6$gt140") == {high}
    assert ids("http://loinc.org|8462-4$gt90") == {low}
    assert ids("8480-6$lt100") == set()  # 95 belongs to the *other* component
    assert ids("8480-6$gt100,8462-4$gt90") == {high, low}
    assert ids("8480-6$160||mm[Hg]") == {high}
    combo = client.get(
        "/Observation",
        params={"_tag": f"urn:test:composite|{marker}", "combo-code-value-quantity": "8462-4$95"},
    ).json()
    assert [e["resource"]["id"] for e in combo["entry"]] == [low]
    bad = client.get("/Observation", params={"component-code-value-quantity": "8480-6"})
    assert bad.status_code == 400


def _post(http: httpx.Client, body: dict[str, Any]) -> str:
    response = http.post(f"/{body['resourceType']}", json=body, headers=FHIR_JSON)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def test_reference_driven_pages_come_from_index_rows(world: World) -> None:
    """subject=... (+ other index criteria) in id order is paged on index rows before any
    resource is fetched (engine._page_of_ids): every match once, pages full, previous links
    exact, a deleted match gone, a resource matched by two of its references counted once."""
    http = world.http
    patient = _post(http, {"resourceType": "Patient"})
    doctor, nurse = (_post(http, {"resourceType": "Practitioner"}) for _ in range(2))
    subject = {"reference": f"Patient/{patient}"}
    both = [{"reference": f"Practitioner/{doctor}"}, {"reference": f"Practitioner/{nurse}"}]
    wanted, other = [], []
    for n in range(9):
        body = obs(
            subject=subject,
            status="final" if n % 3 else "amended",
            code={"coding": [{"system": "urn:test", "code": "hit" if n % 2 else "miss"}]},
            performer=both,
        )
        (wanted if n % 2 and n % 3 else other).append(_post(http, body))
    criteria = [("subject", f"Patient/{patient}"), ("code", "urn:test|hit"), ("status", "final")]
    pages = walk(http, "Observation", [*criteria, ("_count", "1")])
    found = [i for p in pages for _, i in entries(p, "match")]
    assert found == sorted(wanted), "in id order, each once"
    assert [len(entries(p, "match")) for p in pages] == [1] * len(wanted)
    back = [pages[-1]]
    while (url := link(back[-1], "previous")) is not None:
        assert len(back) <= len(pages)
        back.append(http.get(url).json())
    assert [entries(p, "match") for p in reversed(back)] == [entries(p, "match") for p in pages]

    assert http.delete(f"/Observation/{wanted[0]}").status_code in (200, 204)
    pages = walk(http, "Observation", [*criteria, ("_count", "2")])
    assert [i for p in pages for _, i in entries(p, "match")] == sorted(wanted[1:])

    everyone = sorted([*wanted[1:], *other])
    either = f"Practitioner/{doctor},Practitioner/{nurse}"  # two index rows per resource
    by_either = walk(http, "Observation", [("performer", either), ("_count", "3")])
    assert [len(entries(p, "match")) for p in by_either[:-1]] == [3] * (len(by_either) - 1)
    assert [i for p in by_either for _, i in entries(p, "match")] == everyone


@pytest.mark.parametrize("sort", ["", "_id", "-_lastUpdated"])
def test_system_search_pages_past_resources_of_two_types_sharing_an_id(
    world: World, sort: str
) -> None:
    """Patient/X and Organization/X share an id: with the id as the only tiebreaker, a page
    that ended on one skipped the other (the next page began after id X); the type breaks
    the tie too (cursor.tiebreakers), both walking forwards and back."""
    marker = uuid.uuid4().hex[:12]
    tag = {"tag": [{"system": SCOPE_SYSTEM, "code": marker}]}
    shared = f"shared-{marker}"
    for rtype, rid in (("Patient", shared), ("Organization", shared), ("Patient", f"a-{marker}"),
                       ("Organization", f"z-{marker}")):  # fmt: skip
        body = {"resourceType": rtype, "id": rid, "meta": tag}
        if rtype == "Organization":  # org-1: a name or an identifier
            body["name"] = rid
        response = world.http.put(f"/{rtype}/{rid}", json=body, headers=FHIR_JSON)
        assert response.status_code == 201, response.text
    pairs = [("_type", "Patient,Organization"), ("_tag", f"{SCOPE_SYSTEM}|{marker}")]
    pairs += [("_sort", sort)] if sort else []
    whole = entries(get_bundle(world.http, "", pairs), "match")
    assert len(whole) == 4
    for count in ("1", "2", "3"):
        pages = walk(world.http, "", [*pairs, ("_count", count)])
        assert [m for p in pages for m in entries(p, "match")] == whole, count
        back = [pages[-1]]
        while (url := link(back[-1], "previous")) is not None:
            back.append(world.http.get(url).json())
        assert [m for p in reversed(back) for m in entries(p, "match")] == whole, count
