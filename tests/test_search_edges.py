"""Search edge cases of the session-13 second probe: canonically equivalent Unicode in
:exact, canonical references searched with and without their version, `_elements` and
included resources, `_query` and `_summary=text` with includes refused.

Scenarios work as in test_search_params.py (``{id:label}``; every query is ANDed with the
scenario's ``_tag``).
"""

from __future__ import annotations

import base64
import json
import random
import string
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from tests.test_search_params import (
    World,
    case_params,
    entries,
    get_bundle,
    outcome_free,
    split_query,
    walk,
    world_of,
)

STRICT = {"Prefer": "handling=strict"}
NFC_RENEE = "Ren\u00e9e"  # é precomposed
NFD_RENEE = "Rene\u0301e"  # e + combining acute accent
GENDER = "http://hl7.org/fhir/administrative-gender"
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


# Longer than a PostgreSQL btree index entry holds (2,704 bytes), and incompressible.
_LONG = random.Random(13)
LONG_NAME = "".join(_LONG.choice(string.ascii_letters) for _ in range(6000))
LONG_VALUE = "".join(_LONG.choice(string.ascii_letters + "é€") for _ in range(3000))
LONG_URL = "http://example.org/fhir/ValueSet/" + "".join(_LONG.choices("abcdefgh", k=4000))

SCENARIOS: dict[str, dict[str, dict[str, Any]]] = {
    "unicode": {
        "nfc": {"resourceType": "Patient", "name": [{"family": NFC_RENEE}]},
        "nfd": {"resourceType": "Patient", "name": [{"family": NFD_RENEE}]},
        "plain": {"resourceType": "Patient", "name": [{"family": "Renee"}]},
    },
    "shaping": {
        "org": {"resourceType": "Organization", "name": "Edge Clinic", "active": True},
        "pat": {
            "resourceType": "Patient",
            "gender": "female",
            "name": [{"family": "Edgeworth"}],
            "managingOrganization": {"reference": "Organization/{id:org}"},
        },
    },
    "codes": {
        "male": {"resourceType": "Patient", "gender": "male"},
        "female": {"resourceType": "Patient", "gender": "female"},
        "none": {"resourceType": "Patient"},
    },
    "long": {
        "person": {
            "resourceType": "Patient",
            "name": [{"family": LONG_NAME}],
            "identifier": [{"system": "http://example.org/long", "value": LONG_VALUE}],
        },
        "other": {"resourceType": "Patient", "name": [{"family": LONG_NAME[:100]}]},
        "valueset": {"resourceType": "ValueSet", "status": "draft", "url": LONG_URL},
    },
    "by-url": {  # a url of this scenario's own, so no other resource names it
        "q2": {
            "resourceType": "Questionnaire",
            "status": "active",
            "url": "http://example.org/fhir/Questionnaire/by-url-{id:q2}",
            "version": "2.0",
        },
        "q3": {
            "resourceType": "Questionnaire",
            "status": "active",
            "url": "http://example.org/fhir/Questionnaire/by-url-{id:q2}",
            "version": "3.0",
        },
        "r2": answers("http://example.org/fhir/Questionnaire/by-url-{id:q2}|2.0"),
        "rbare": answers("http://example.org/fhir/Questionnaire/by-url-{id:q2}"),
    },
    # number precision from the digits written, in exponent forms too (docs/search.md)
    "exponents": {
        f"f{label}": {
            "resourceType": "ChargeItem",
            "status": "billable",
            "code": {"text": "exponent"},
            "subject": {"reference": "Patient/exponent"},
            "factorOverride": value,
        }
        for label, value in (
            ("49", 49),
            ("50", 50),
            ("96", 96),
            ("104", 104),
            ("149", 149),
            ("151", 151),
        )  # fmt: skip
    },
    # Money: its currency is a code of urn:iso:std:iso:4217
    "money": {
        label: {
            "resourceType": "ChargeItem",
            "status": "billable",
            "code": {"text": "money"},
            "subject": {"reference": "Patient/money"},
            "priceOverride": {"value": value, "currency": currency},
        }
        for label, value, currency in (
            ("eur", 12.5, "EUR"),
            ("usd", 12.5, "USD"),
            ("eur40", 40, "EUR"),
        )
    },
    # a sort by a number puts those without one last: pages must go on past them
    "unpriced": {
        label: {
            "resourceType": "ChargeItem",
            "status": "billable",
            "code": {"text": "unpriced"},
            "subject": {"reference": "Patient/unpriced"},
            **({"priceOverride": {"value": value, "currency": "EUR"}} if value else {}),
        }
        for label, value in (("five", 5), ("none1", None), ("two", 2), ("none2", None))
    },
    # a leap second: valid FHIR (seconds 00-60), no Python datetime
    "leap": {
        label: {
            "resourceType": "Observation",
            "status": "final",
            "code": {"text": "leap"},
            "effectiveDateTime": value,
        }
        for label, value in (("leap", "2016-12-31T23:59:60Z"), ("after", "2017-01-01T00:00:00Z"))
    },
    # the last dates FHIR can write (a year is 4 digits): their end is no Python datetime
    "far-dates": {
        label: {
            "resourceType": "Observation",
            "status": "final",
            "code": {"text": "far"},
            "effectiveDateTime": value,
        }
        for label, value in (
            ("y9999", "9999"),
            ("m9999", "9999-12"),
            ("d9999", "9999-12-31"),
            ("t9999", "9999-12-31T23:59:59Z"),
            ("y2024", "2024"),
        )  # fmt: skip
    },
    # a searched prefix ending in U+10FFFF (no character follows it) or U+D7FF (what
    # follows is a surrogate, which no database takes): both were a 500
    "last-characters": {
        label: {"resourceType": "Patient", "name": [{"family": family}]}
        for label, family in (
            ("last", "Zoë\U0010ffff"),
            ("zoe", "Zoë"),
            ("last-x", "Zoë\U0010ffffx"),
            ("d7ff", "Ha\ud7ff"),
            ("e000", "Ha\ue000"),
        )  # fmt: skip
    },
    "canonical": {
        "v2": answers(f"{QUESTIONNAIRE}|2.0"),
        "v3": answers(f"{QUESTIONNAIRE}|3.0"),
        "bare": answers(QUESTIONNAIRE),
        "other": answers(f"{QUESTIONNAIRE}-2|2.0"),
    },
}

CASES: dict[str, list[tuple[str, str]]] = {
    "exponents": [
        # "Values that equal 100, to 1 significant figures precision": [50, 150)
        ("ChargeItem?factor-override=1e2", "f50 f96 f104 f149"),
        ("ChargeItem?factor-override=1E2", "f50 f96 f104 f149"),
        ("ChargeItem?factor-override=1.0e2", "f96 f104"),  # 2 figures: [95, 105)
        ("ChargeItem?factor-override=1.5e2", "f149 f151"),  # [145, 155)
        ("ChargeItem?factor-override=10e1", "f96 f104"),  # 2 figures too
        ("ChargeItem?factor-override=ne1e2", "f49 f151"),
        ("ChargeItem?factor-override=gt1e2", "f104 f149 f151"),  # prefixes: exactly 100
        ("ChargeItem?factor-override=le1.04e2", "f49 f50 f96 f104"),
        ("ChargeItem?factor-override=5e-1", ""),
        # beyond what the index holds: no 500, and no match
        ("ChargeItem?factor-override=1e9999999", ""),
        ("ChargeItem?factor-override=1e-999999", ""),
        ("ChargeItem?factor-override=lt1e999999", "f49 f50 f96 f104 f149 f151"),
        ("ChargeItem?factor-override=gt-1e999999", "f49 f50 f96 f104 f149 f151"),
    ],
    "unicode": [
        # the same text whichever way é is encoded, in the resource or in the query
        (f"Patient?family:exact={NFC_RENEE}", "nfc nfd"),
        (f"Patient?family:exact={NFD_RENEE}", "nfc nfd"),
        ("Patient?family:exact=Renee", "plain"),  # accents still count
        (f"Patient?family={NFD_RENEE}", "nfc nfd plain"),
    ],
    "codes": [
        # a code element's system is the one its value set implies (R4 search, token)
        (f"Patient?gender={GENDER}|male", "male"),
        (f"Patient?gender={GENDER}|male,{GENDER}|female", "male female"),
        (f"Patient?gender:not={GENDER}|male", "female none"),
        ("Patient?gender=http://example.org/other|male", ""),
        ("Patient?gender=|male", "male"),
        ("Patient?gender=male", "male"),
    ],
    "long": [
        # values longer than an index entry are stored and found (compared on their start)
        (f"Patient?family:exact={LONG_NAME}", "person"),
        (f"Patient?family={LONG_NAME}", "person"),
        (f"Patient?family={LONG_NAME[:2500]}", "person"),
        (f"Patient?family={LONG_NAME[:100]}", "person other"),
        (f"Patient?identifier=http://example.org/long|{LONG_VALUE}", "person"),
        (f"Patient?identifier={LONG_VALUE}", "person"),
        (f"ValueSet?url={LONG_URL}", "valueset"),
    ],
    "money": [
        ("ChargeItem?price-override=12.5|urn:iso:std:iso:4217|EUR", "eur"),
        ("ChargeItem?price-override=12.5||EUR", "eur"),
        ("ChargeItem?price-override=gt10|urn:iso:std:iso:4217|EUR", "eur eur40"),
        ("ChargeItem?price-override=gt10|urn:iso:std:iso:4217|", "eur usd eur40"),
        ("ChargeItem?price-override=12.5|http://unitsofmeasure.org|EUR", ""),
        ("ChargeItem?price-override=12.5", "eur usd"),
    ],
    "leap": [
        ("Observation?date=2016-12-31", "leap"),
        ("Observation?date=2016-12-31T23:59:60Z", "leap"),
        ("Observation?date=2016-12-31T18:59:60-05:00", "leap"),
        ("Observation?date=lt2017", "leap"),
        ("Observation?date=2017", "after"),
        ("Observation?date:missing=true", ""),
    ],
    "far-dates": [
        ("Observation?date=9999", "y9999 m9999 d9999 t9999"),
        ("Observation?date=9999-12", "m9999 d9999 t9999"),
        ("Observation?date=9999-12-31", "d9999 t9999"),
        ("Observation?date=lt9999", "y2024"),
        ("Observation?date=ge9999-12", "m9999 d9999 t9999"),  # 9999 ends when 9999-12 does
        ("Observation?date=sa2024", "y9999 m9999 d9999 t9999"),
        ("Observation?date:missing=true", ""),
    ],
    "last-characters": [
        ("Patient?family=zoe\U0010ffff", "last last-x"),
        ("Patient?family=Zoë\U0010ffffx", "last-x"),
        ("Patient?family=zoe", "last zoe last-x"),
        ("Patient?family=ha\ud7ff", "d7ff"),
        ("Patient?family=ha", "d7ff e000"),
        ("Patient?family:contains=\U0010ffff", "last last-x"),
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


@pytest.mark.parametrize(("scenario", "query", "expected"), case_params(CASES))
def test_search_edge_criteria(world: World, scenario: str, query: str, expected: str) -> None:
    loaded = world.load(scenario, SCENARIOS)
    path, pairs = split_query(loaded.render(query))
    bundle = get_bundle(world.http, path, [*pairs, loaded.scope, ("_count", "100")])
    outcome_free(bundle)
    labels = loaded.label_of()
    found = sorted(labels[m] for m in entries(bundle, "match"))
    assert found == sorted(expected.split()), query


def test_elements_leave_included_resources_whole(world: World) -> None:
    """R4 search, _elements: "The list of elements does not apply to included resources"."""
    loaded = world.load("shaping", SCENARIOS)
    pairs = [("_elements", "gender"), ("_include", "Patient:organization"), loaded.scope]
    bundle = get_bundle(world.http, "Patient", pairs)
    (match,) = [e["resource"] for e in bundle["entry"] if e["search"]["mode"] == "match"]
    (included,) = [e["resource"] for e in bundle["entry"] if e["search"]["mode"] == "include"]
    assert sorted(match) == ["gender", "id", "meta", "resourceType"]
    assert (included["name"], included["active"]) == ("Edge Clinic", True)
    assert "SUBSETTED" not in [t["code"] for t in included["meta"].get("tag", [])]
    # _summary still applies to every resource of the page
    summary = get_bundle(world.http, "Patient", [*pairs[1:], ("_summary", "data")])
    assert all("text" not in e["resource"] for e in summary["entry"])


@pytest.mark.parametrize("prefer", [{}, STRICT], ids=["lenient", "strict"])
def test_named_query_is_refused(world: World, prefer: dict[str, str]) -> None:
    """R4 search, _query: servers SHALL refuse a search whose _query they do not recognize
    (this server recognizes none), so it is not merely ignored in lenient handling."""
    loaded = world.load("shaping", SCENARIOS)
    pairs = [("_query", "current-problems"), loaded.scope]
    for path in ("/Patient", ""):
        response = world.http.get(path, params=[*pairs, ("_type", "Patient")], headers=prefer)
        assert response.status_code == 400, response.text
        issue = response.json()["issue"][0]
        assert (issue["code"], issue["expression"]) == ("not-supported", ["_query"])


@pytest.mark.parametrize("include", ["_include", "_revinclude"])
def test_summary_text_with_includes_is_refused(world: World, include: str) -> None:
    """R4 search, _summary: "_include and _revinclude cannot be mixed with _summary=text"."""
    loaded = world.load("shaping", SCENARIOS)
    value = "Patient:organization" if include == "_include" else "Observation:subject"
    pairs = [("_summary", "text"), (include, value), loaded.scope]
    response = world.http.get("/Patient", params=pairs)
    assert response.status_code == 400, response.text
    assert response.json()["issue"][0]["expression"] == [include]
    alone = get_bundle(world.http, "Patient", [("_summary", "text"), loaded.scope])
    assert len(entries(alone, "match")) == 1


BAD_VALUES = [
    ("Patient", "birthdate", "2000-13-45", "birthdate"),
    ("Patient", "birthdate", "ge", "birthdate"),
    ("Patient", "_lastUpdated", "xx", "_lastUpdated"),
    ("Observation", "value-quantity", "abc", "value-quantity"),
    ("Observation", "code-value-quantity", "8480-6", "code-value-quantity"),
    ("Observation", "subject:Patient.birthdate", "1980-02-30", "subject:Patient.birthdate"),
    ("Observation", "_sort", "-", "_sort"),
    ("Observation", "_sort", "date,nosuch", "_sort"),
    # `|` alone names neither a system nor a code (it matched every row without a system)
    ("Observation", "code", "|", "code"),
    ("Patient", "identifier", "x,|", "identifier"),
    ("Observation", "subject:Patient.identifier", "|", "subject:Patient.identifier"),
    ("Observation", "subject:identifier", "|", "subject:identifier"),
    # nothing left once folded (it matched every name, as if the criterion were absent)
    ("Patient", "name", " ", "name"),
    ("Patient", "family:contains", "  ", "family:contains"),
    ("Patient", "given", "\u0301", "given"),  # a combining accent alone
    ("Observation", "code:text", " ", "code:text"),
]


@pytest.mark.parametrize(("path", "key", "value", "expression"), BAD_VALUES)
def test_a_value_that_cannot_be_searched_is_located(
    world: World, path: str, key: str, value: str, expression: str
) -> None:
    """A 400 for a bad value names the query parameter it came from."""
    loaded = world.load("shaping", SCENARIOS)
    response = world.http.get(f"/{path}", params=[(key, value), loaded.scope])
    assert response.status_code == 400, response.text
    assert response.json()["issue"][0]["expression"] == [expression]


def _cursor(value: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


FORGED_CURSORS = [
    ({}, {"dir": "next", "at": [1]}),  # the id is text
    ({}, {"dir": "next", "at": [None]}),
    ({}, {"dir": "next", "at": [{"a": 1}]}),
    ({}, {"dir": "sideways", "at": ["a"]}),
    ({"_sort": "birthdate"}, {"dir": "next", "at": ["x", "a"]}),  # a date is an integer
    ({"_sort": "birthdate"}, {"dir": "next", "at": [True, "a"]}),
    ({"_sort": "-_lastUpdated"}, {"dir": "prev", "at": ["zz", "a"]}),
    ({"_sort": "family"}, {"dir": "next", "at": [5, "a"]}),
    ({"_sort": "family"}, {"dir": "next", "at": ["a"]}),  # one key short
    # beyond a bigint (PostgreSQL: a 500) or the index's numeric bounds
    ({"_sort": "birthdate"}, {"dir": "next", "at": [10**30, "a"]}),
    ({"_sort": "-_lastUpdated"}, {"dir": "next", "at": [-(10**30), "a"]}),
    ({"_sort": "price-override"}, {"dir": "next", "at": [{"decimal": "1e999999"}, "a"]}),
    ({"_sort": "price-override"}, {"dir": "next", "at": [{"decimal": "-1e-999999"}, "a"]}),
]


@pytest.mark.parametrize(("sort", "forged"), FORGED_CURSORS)
def test_a_forged_cursor_is_refused(
    world: World, sort: dict[str, str], forged: dict[str, Any]
) -> None:
    """_page is the client's to send back: one that no search wrote is a 400, not a 500."""
    path = "/ChargeItem" if sort.get("_sort") == "price-override" else "/Patient"
    loaded = world.load("money" if path == "/ChargeItem" else "shaping", SCENARIOS)
    pairs = [*sort.items(), loaded.scope, ("_page", _cursor(forged))]
    response = world.http.get(path, params=pairs)
    assert response.status_code == 400, response.text
    assert response.json()["issue"][0]["expression"] == ["_page"]


def test_a_token_sorted_search_pages_through_its_cursors(world: World) -> None:
    """The cursors this server writes still read back (the missing value's sentinel too)."""
    loaded = world.load("codes", SCENARIOS)
    pairs = [("_sort", "-gender"), ("_count", "1"), loaded.scope]
    pages = walk(world.http, "Patient", pairs)
    assert [labels for page in pages for labels in entries(page, "match")] == [
        loaded.ids[label] for label in ("male", "female", "none")
    ]


@pytest.mark.parametrize("sort", ["price-override", "-price-override"])
def test_a_number_sorted_search_pages_past_resources_without_one(world: World, sort: str) -> None:
    """A page that ended on a resource without the sorted number had the missing value's
    sentinel (beyond the index's bounds) in its next link, which was refused as a forged
    cursor: a 400 on following the link, on both databases."""
    loaded = world.load("unpriced", SCENARIOS)
    pages = walk(world.http, "ChargeItem", [("_sort", sort), ("_count", "1"), loaded.scope])
    labels = loaded.label_of()
    found = [labels[key] for page in pages for key in entries(page, "match")]
    priced = ["two", "five"] if sort == "price-override" else ["five", "two"]
    assert found[:2] == priced and sorted(found[2:]) == ["none1", "none2"]


CANONICAL_INCLUDES = [
    # a versioned canonical: that version; an unversioned one: every version
    ("QuestionnaireResponse?_id={id:r2}&_include=QuestionnaireResponse:questionnaire", "q2"),
    ("QuestionnaireResponse?_id={id:rbare}&_include=QuestionnaireResponse:questionnaire", "q2 q3"),
    ("QuestionnaireResponse?_id={id:rbare}&_include=*", "q2 q3"),
    ("Questionnaire?_id={id:q2}&_revinclude=QuestionnaireResponse:questionnaire", "r2 rbare"),
    ("Questionnaire?_id={id:q3}&_revinclude=QuestionnaireResponse:questionnaire", "rbare"),
    ("Questionnaire?_id={id:q3}&_revinclude=*", "rbare"),
]


@pytest.mark.parametrize(("query", "included"), CANONICAL_INCLUDES)
def test_includes_follow_canonical_references(world: World, query: str, included: str) -> None:
    """A canonical names a resource by url (and version), not by an address of ours."""
    loaded = world.load("by-url", SCENARIOS)
    path, pairs = split_query(loaded.render(query))
    bundle = get_bundle(world.http, path, pairs)
    labels = loaded.label_of()
    found = sorted(labels.get(key, str(key)) for key in entries(bundle, "include"))
    assert found == sorted(included.split()), query


@pytest.mark.parametrize("value", ["1e999999", "-1e999999", "1e-999999", "1e9999999"])
def test_numbers_beyond_the_index_are_stored_and_searched(world: World, value: str) -> None:
    """A decimal larger (or nearer zero) than PostgreSQL's numeric holds was a 500 on write
    and on search; it is indexed within the index's bounds (docs/search.md)."""
    loaded = world.load("exponents", SCENARIOS)
    system, code = loaded.scope[1].split("|")
    resource = {"resourceType": "ChargeItem", "status": "billable", "code": {"text": "huge"},
                "subject": {"reference": "Patient/exponent"}, "factorOverride": "N",
                "meta": {"tag": [{"system": system, "code": code}]}}  # fmt: skip
    body = json.dumps(resource).replace('"N"', value)  # a JSON number Python cannot write
    created = world.http.post(
        "/ChargeItem", content=body, headers={"Content-Type": "application/fhir+json"}
    )
    assert created.status_code == 201, created.text
    rid = created.json()["id"]
    sign = "-" if value.startswith("-") else ""
    tiny = "e-" in value
    query = f"gt{sign}0" if tiny else (f"lt{sign}1e9" if sign else "gt1e9")
    pairs = [("factor-override", query), ("_id", rid), loaded.scope]
    assert entries(get_bundle(world.http, "ChargeItem", pairs), "match") == [("ChargeItem", rid)]


def test_a_reference_under_our_base_in_another_case_is_not_ours(world: World) -> None:
    """A URL's path has case (RFC 3986): `…/FHIR/Patient/1` is not our Patient/1 under
    `…/fhir`. SQLite's LIKE ignores case, so on SQLite such a reference was found by
    `subject=Patient/1` (and revincluded, and counted in Patient/1's compartment)."""
    assert world.base.endswith("/fhir")
    other_case = world.base[: -len("fhir")] + "FHIR"
    patient_id = world.http.post("/Patient", json={"resourceType": "Patient"}).json()["id"]
    created = {}
    for label, base in (("ours", world.base), ("other-case", other_case)):
        body = {"resourceType": "Observation", "status": "final", "code": {"text": "case"},
                "subject": {"reference": f"{base}/Patient/{patient_id}"}}  # fmt: skip
        created[("Observation", world.http.post("/Observation", json=body).json()["id"])] = label
    found = get_bundle(world.http, "Observation", [("subject", f"Patient/{patient_id}")])
    assert [created[m] for m in entries(found, "match")] == ["ours"]
    pairs = [("_id", patient_id), ("_revinclude", "Observation:subject")]
    included = get_bundle(world.http, "Patient", pairs)
    assert [created[m] for m in entries(included, "include")] == ["ours"]
    compartment = get_bundle(world.http, f"Patient/{patient_id}/Observation", [])
    assert [created[m] for m in entries(compartment, "match")] == ["ours"]


ICU_EN_US = "en-US-x-icu"


def test_a_url_prefix_is_found_whatever_the_collation(
    world: World, database_url: str, is_postgres: bool
) -> None:
    """`questionnaire=<url>` finds `<url>|<version>`, and another server's `…/Patient/1` its
    `…/Patient/1/_history/2`: by a range over `search_reference.url`, which keeps the
    database's collation, and under any but C (PostgreSQL's default is the system locale,
    en_US.utf8 in its Docker image) `url|2.0` is outside [`url|`, `url}`): both were
    missed. The test database is C, so the column takes an en-US collation here."""
    if not is_postgres:
        pytest.skip("collations are PostgreSQL's")
    loaded = world.load("canonical", SCENARIOS)
    other = f"http://other.example.org/fhir/Patient/{loaded.marker}"
    body = {"resourceType": "Observation", "status": "final", "code": {"text": "elsewhere"},
            "subject": {"reference": f"{other}/_history/2"}}  # fmt: skip
    observation = world.http.post("/Observation", json=body).json()["id"]
    engine = create_engine(database_url)
    try:
        with engine.begin() as conn:
            if not conn.execute(text("SELECT 1 FROM pg_collation WHERE collname = :c"),
                                {"c": ICU_EN_US}).first():  # fmt: skip
                pytest.skip(f"this PostgreSQL has no {ICU_EN_US} collation")
            conn.execute(
                text(
                    f'ALTER TABLE search_reference ALTER COLUMN url TYPE text COLLATE "{ICU_EN_US}"'
                )
            )
        query = f"QuestionnaireResponse?questionnaire={QUESTIONNAIRE}"
        path, pairs = split_query(loaded.render(query))
        found = entries(get_bundle(world.http, path, [*pairs, loaded.scope]), "match")
        labels = loaded.label_of()
        assert sorted(labels[key] for key in found) == ["bare", "v2", "v3"]
        found = entries(get_bundle(world.http, "Observation", [("subject", other)]), "match")
        assert found == [("Observation", observation)]
    finally:
        with engine.begin() as conn:
            conn.execute(
                text('ALTER TABLE search_reference ALTER COLUMN url TYPE text COLLATE "default"')
            )
        engine.dispose()
