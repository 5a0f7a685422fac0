"""A demanding client's review of search against R4 search.html, table-driven (as in
test_search_params.py: each case names the labels a query must return; every other resource
of its scenario must not be returned; every query is ANDed with the scenario's ``_tag``)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import LiveServer
from tests.smart_helpers import register_client
from tests.test_search_params import (
    LOINC,
    UCUM,
    World,
    assert_case,
    assert_real_labels,
    case_params,
    entries,
    get_bundle,
    link,
    outcome_free,
    split_query,
    walk,
    world_of,
)

OBSCAT = "http://terminology.hl7.org/CodeSystem/observation-category"
V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"


def obs(**extra: Any) -> dict[str, Any]:
    return {"resourceType": "Observation", "status": "final", "code": {"text": "r"}, **extra}


def cat(*codings: tuple[str, str]) -> list[dict[str, Any]]:
    return [{"coding": [{"system": s, "code": c}]} for s, c in codings]


BP = {"coding": [{"system": LOINC, "code": "85354-9", "display": "Blood pressure"}]}
SYSTOLIC = {"coding": [{"system": LOINC, "code": "8480-6"}]}

SCENARIOS: dict[str, dict[str, dict[str, Any]]] = {
    # :missing on every parameter type
    "presence": {
        "pat": {"resourceType": "Patient", "name": [{"family": "Present"}]},
        "nameless": {"resourceType": "Patient", "gender": "male"},
        "full": obs(
            code=BP,
            identifier=[{"system": "urn:ids", "value": "full"}],
            category=cat((OBSCAT, "vital-signs")),
            subject={"reference": "Patient/{id:pat}"},
            effectiveDateTime="2024-05-01",
            valueQuantity={"value": 5, "unit": "mg", "system": UCUM, "code": "mg"},
            component=[
                {
                    "code": SYSTOLIC,
                    "valueQuantity": {
                        "value": 120,
                        "unit": "mmHg",
                        "system": UCUM,
                        "code": "mm[Hg]",
                    },
                }
            ],
        ),
        "bare": obs(),
        "textonly": obs(code={"text": "only text"}),
        "str": obs(code=SYSTOLIC, valueString="x"),
    },
    # :not on tokens: resources with no value, and with several
    "not": {
        "vs": obs(category=cat((OBSCAT, "vital-signs"))),
        "both": obs(category=cat((OBSCAT, "vital-signs"), (OBSCAT, "laboratory"))),
        "lab": obs(category=cat((OBSCAT, "laboratory"))),
        "none": obs(),
        "other": obs(category=cat(("urn:other", "vital-signs"))),
    },
    # prefixes on dates: each precision, with and without time zones, Periods with open ends
    "dates": {
        "day": obs(effectiveDateTime="2024-03-10"),
        "east": obs(effectiveDateTime="2024-03-10T23:30:00+02:00"),  # 21:30Z on the 10th
        "west": obs(effectiveDateTime="2024-03-10T23:30:00-05:00"),  # 04:30Z on the 11th
        "noon": obs(effectiveDateTime="2024-03-10T12:00:00Z"),
        "ms": obs(effectiveInstant="2024-03-10T12:00:00.500Z"),
        "open": obs(effectivePeriod={"start": "2024-03-10T10:00:00Z"}),
        "month": obs(effectiveDateTime="2024-03"),
        "year": obs(effectiveDateTime="2024"),
    },
    # number and quantity prefixes: the implicit range of eq / ne, exact comparisons otherwise
    "amounts": {
        label: obs(valueQuantity={"value": value, "unit": "mg", "system": UCUM, "code": "mg"})
        for label, value in (
            ("q4-4", 4.4),
            ("q4-5", 4.5),
            ("q5", 5),
            ("q5-49", 5.49),
            ("q5-5", 5.5),
            ("q5-6", 5.6),
            ("qneg", -5),
        )
    },
    # _list: the resources a List names in List.entry.item (R4 search.html#list)
    "lists": {
        "pa": {"resourceType": "Patient", "gender": "female"},
        "pb": {"resourceType": "Patient", "gender": "male"},
        "pc": {"resourceType": "Patient", "gender": "female"},
        "o1": obs(subject={"reference": "Patient/{id:pa}"}),
        "l1": {
            "resourceType": "List",
            "status": "current",
            "mode": "working",
            "entry": [
                {"item": {"reference": "Patient/{id:pa}"}},
                {"item": {"reference": "Patient/{id:pb}"}},
                {"item": {"reference": "Observation/{id:o1}"}},
            ],
        },
        "l2": {
            "resourceType": "List",
            "status": "current",
            "mode": "working",
            "entry": [{"item": {"reference": "Patient/{id:pc}"}}],
        },
        "empty": {"resourceType": "List", "status": "current", "mode": "working"},
    },
    # token :text on a Coding (meta.tag), :identifier and :[type] on references
    "refs": {
        "pat": {"resourceType": "Patient"},
        "grp": {"resourceType": "Group", "type": "person", "actual": True},
        "tagged": {
            "resourceType": "Patient",
            "meta": {"tag": [{"system": "urn:tags", "code": "t1", "display": "Research cohort"}]},
        },
        "o-pat": obs(subject={"reference": "Patient/{id:pat}"}),
        "o-grp": obs(subject={"reference": "Group/{id:grp}"}),
        "o-ident": obs(subject={"identifier": {"system": "urn:mrn", "value": "M-{m}"}}),
        "o-display": obs(subject={"display": "someone"}),
        "qr": {
            "resourceType": "QuestionnaireResponse",
            "status": "completed",
            "questionnaire": "http://example.org/Questionnaire/q1",
        },
    },
}

CASES: dict[str, list[tuple[str, str]]] = {
    "presence": [
        ("Patient?name:missing=true", "nameless"),
        ("Patient?name:missing=false", "pat"),
        ("Patient?family:missing=true", "nameless"),
        ("Patient?gender:missing=true", "pat"),
        # :not on a code element, with the system its required value set implies
        ("Patient?gender:not=male", "pat"),
        ("Patient?gender:not=http://hl7.org/fhir/administrative-gender|male", "pat"),
        ("Patient?gender:not=http://other.example.org|male", "pat nameless"),
        ("Observation?code:missing=true", ""),
        ("Observation?code:missing=false", "full bare textonly str"),
        ("Observation?identifier:missing=true", "bare textonly str"),
        ("Observation?category:missing=false", "full"),
        ("Observation?subject:missing=true", "bare textonly str"),
        ("Observation?patient:missing=false", "full"),
        ("Observation?date:missing=true", "bare textonly str"),
        ("Observation?value-quantity:missing=true", "bare textonly str"),
        ("Observation?value-quantity:missing=false", "full"),
        ("Observation?value-string:missing=false", "str"),
        ("Observation?component-code:missing=true", "bare textonly str"),
        ("Observation?component-value-quantity:missing=false", "full"),
        ("Observation?component-code-value-quantity:missing=true", "bare textonly str"),
        ("Observation?component-code-value-quantity:missing=false", "full"),
        ("Observation?code-value-quantity:missing=false", "full"),
        ("Observation?code-value-quantity:missing=true", "bare textonly str"),
        ("Observation?code-value-string:missing=false", "str"),
        ("Observation?combo-code-value-quantity:missing=false", "full"),
        ("Observation?combo-code:missing=true", ""),
    ],
    "not": [
        ("Observation?category:not=vital-signs", "lab none"),
        (f"Observation?category:not={OBSCAT}|vital-signs", "lab none other"),
        ("Observation?category:not=urn:other|", "vs both lab none"),
        ("Observation?category:not=laboratory", "vs none other"),
        ("Observation?category:not=vital-signs,laboratory", "none"),
        ("Observation?category:not=vital-signs&category:not=laboratory", "none"),
        ("Observation?category:not=vital-signs&category=laboratory", "lab"),
        ("Observation?category:not=nothing-such", "vs both lab none other"),
        ("Observation?status:not=final", ""),
        ("Observation?status:not=amended", "vs both lab none other"),
    ],
    "dates": [
        ("Observation?date=2024-03-10", "day east noon ms"),
        ("Observation?date=eq2024-03-10", "day east noon ms"),
        ("Observation?date=2024-03-11", "west"),
        ("Observation?date=2024-03", "day east west noon ms month"),
        ("Observation?date=2024", "day east west noon ms month year"),  # not the open Period
        ("Observation?date=2024-03-10T12:00Z", "noon ms"),
        ("Observation?date=2024-03-10T12:00:00Z", "noon ms"),
        ("Observation?date=2024-03-10T12:00:00.5Z", "ms"),
        ("Observation?date=2024-03-10T14:00:00+02:00", "noon ms"),  # the second holds .5
        ("Observation?date=2024-03-10T23:30:00+02:00", "east"),
        ("Observation?date=2024-03-10T23:30-05:00", "west"),
        ("Observation?date=2024-03-11T04:30:00Z", "west"),
        ("Observation?date=ne2024-03-10", "west open month year"),
        ("Observation?date=gt2024-03-10", "west open month year"),
        ("Observation?date=ge2024-03-11", "west open month year"),
        ("Observation?date=lt2024-03-10", "month year"),
        ("Observation?date=le2024-03-09", "month year"),
        ("Observation?date=sa2024-03-10", "west"),
        ("Observation?date=eb2024-03-10T12:00:00Z", ""),
        ("Observation?date=eb2024-03-11", "day east noon ms"),
        ("Observation?date=sa2024-03-10T11:00:00Z", "west noon ms east"),
        ("Observation?date=gt2024-03-10T12:00:00Z", "east west open day month year"),
        ("Observation?date=lt2024-03-10T12:00:00Z", "day open month year"),
        ("Observation?date=ge2024-03-10T12:00:00Z", "east west noon ms open day month year"),
        ("Observation?date=le2024-03-10T12:00:00Z", "day noon ms open month year"),
        ("Observation?date=ap2024-03-10T12:00:00Z", "day east west noon ms open month year"),
        ("Observation?date=ge2024-03-10&date=lt2024-03-11", "day east noon ms open month year"),
        ("Observation?date=2030", ""),
        ("Observation?date=gt2030", "open"),
    ],
    "amounts": [
        ("Observation?value-quantity=5", "q4-5 q5 q5-49"),  # [4.5, 5.5)
        ("Observation?value-quantity=eq5", "q4-5 q5 q5-49"),
        ("Observation?value-quantity=5.0", "q5"),  # [4.95, 5.05)
        ("Observation?value-quantity=ne5", "q4-4 q5-5 q5-6 qneg"),
        ("Observation?value-quantity=gt5", "q5-49 q5-5 q5-6"),  # exactly 5, R4 number notes
        ("Observation?value-quantity=ge5", "q5 q5-49 q5-5 q5-6"),
        ("Observation?value-quantity=lt5", "q4-4 q4-5 qneg"),
        ("Observation?value-quantity=le5", "q4-4 q4-5 q5 qneg"),
        ("Observation?value-quantity=sa5", "q5-49 q5-5 q5-6"),
        ("Observation?value-quantity=eb5", "q4-4 q4-5 qneg"),
        ("Observation?value-quantity=ap5", "q4-5 q5 q5-49 q5-5"),  # 10 %: [4.5, 5.5]
        ("Observation?value-quantity=ap-5", "qneg"),
        (f"Observation?value-quantity=5|{UCUM}|mg", "q4-5 q5 q5-49"),
        (f"Observation?value-quantity=5e-3|{UCUM}|g", "q4-5 q5 q5-49"),  # 1 figure: [4.5, 5.5) mg
        (f"Observation?value-quantity=ap5e-3|{UCUM}|g", "q4-5 q5 q5-49 q5-5"),
        (f"Observation?value-quantity=ge5.5|{UCUM}|mg", "q5-5 q5-6"),
        ("Observation?value-quantity=-5", "qneg"),
    ],
    "lists": [
        ("Patient?_list={id:l1}", "pa pb"),
        ("Observation?_list={id:l1}", "o1"),
        ("Patient?_list={id:l1},{id:l2}", "pa pb pc"),
        ("Patient?_list={id:l1}&_list={id:l2}", ""),
        ("Patient?_list={id:l1}&gender=female", "pa"),
        ("Patient?_list={id:empty}", ""),
        ("Patient?_list=no-such-list-{m}", ""),
        ("List?_id={id:l1}&_has:List:item:_id={id:l1}", ""),  # a List is not in itself
    ],
    "refs": [
        ("Patient?_tag:text=research", "tagged"),
        ("Patient?_tag:text=cohort", ""),
        ("Observation?subject:Patient={id:pat}", "o-pat"),
        ("Observation?subject:Group={id:grp}", "o-grp"),
        ("Observation?subject:Patient=Patient/{id:pat}", "o-pat"),  # the type said twice
        ("Observation?subject:Patient=Patient/{id:pat},{id:grp}", "o-pat"),
        ("Observation?subject:identifier=urn:mrn|M-{m}", "o-ident"),
        ("Observation?subject:identifier=urn:mrn|", "o-ident"),
        ("Observation?subject:missing=true", "o-display"),
        ("Observation?subject:missing=false", "o-pat o-grp o-ident"),
        ("QuestionnaireResponse?questionnaire=http://example.org/Questionnaire/q1", "qr"),
    ],
}


@pytest.fixture(scope="module")
def world(base_url: str, auth_headers: dict[str, str]) -> Iterator[World]:
    yield from world_of(base_url, auth_headers)


@pytest.mark.parametrize(("scenario", "query", "expected"), case_params(CASES))
def test_search_review(world: World, scenario: str, query: str, expected: str) -> None:
    assert_case(world, SCENARIOS, scenario, query, expected)


def test_every_case_names_real_labels() -> None:
    assert_real_labels(CASES, SCENARIOS)


# =========================================================================== clear refusals

STRICT = {"Prefer": "handling=strict"}

# What cannot be answered right is a 400 naming the parameter, never a wrong result:
# (path, key, value, Prefer header, issue code, expression)
REFUSALS = [
    # a value set cannot be expanded here: refused, not answered as if it matched nothing
    ("Observation", "code:in", "http://hl7.org/fhir/ValueSet/observation-codes", {},
     "not-supported", "code:in"),
    ("Observation", "code:not-in", "http://hl7.org/fhir/ValueSet/observation-codes", {},
     "not-supported", "code:not-in"),
    # token subsumption needs a terminology server
    ("Observation", "code:below", "http://snomed.info/sct|123", {}, "not-supported",
     "code:below"),
    ("Observation", "code:above", "http://snomed.info/sct|123", {}, "not-supported",
     "code:above"),
    ("Observation", "subject:below", "Patient/1", {}, "not-supported", "subject:below"),
    # R4 defines :contains for strings only
    ("ValueSet", "url:contains", "acme", {}, "not-supported", "url:contains"),
    # a canonical has no identifier of its own (R4 search.html#reference)
    ("QuestionnaireResponse", "questionnaire:identifier", "urn:x|1", {}, "not-supported",
     "questionnaire:identifier"),
    ("PlanDefinition", "definition:identifier", "x", {}, "not-supported",
     "definition:identifier"),
    # chaining is not supported with :identifier
    ("Observation", "subject:identifier.name", "x", {}, "invalid", "subject:identifier"),
    # parameters this server does not offer: 400 in strict handling (lenient: ignored and
    # reported, test_search_results.py)
    ("Patient", "_text", "x", STRICT, "invalid", "_text"),
    ("Patient", "_content", "x", STRICT, "invalid", "_content"),
    ("Patient", "_filter", "name eq x", STRICT, "invalid", "_filter"),
    ("Patient", "_query", "current", {}, "not-supported", "_query"),
    # malformed values: a clear 400, not a criterion that silently matches nothing
    ("Patient", "identifier:of-type", f"{V2_0203}|MR|", {}, "invalid", "identifier:of-type"),
    ("Patient", "identifier:of-type", "|MR|123", {}, "invalid", "identifier:of-type"),
    ("Observation", "code-value-quantity", "$5", {}, "invalid", "code-value-quantity"),
    ("Observation", "subject", "Patient/", {}, "invalid", "subject"),
    ("Observation", "subject", "/123", {}, "invalid", "subject"),
    ("Observation", "subject:Group", "Patient/123", {}, "invalid", "subject:Group"),
    ("Observation", "subject.name", "x", {}, None, None),  # (a chain, not a value: fine)
    ("RiskAssessment", "probability", "1_000", {}, "invalid", "probability"),
    ("Patient", "active", "maybe", {}, "invalid", "active"),
    ("Patient", "active:not", "TRUE", {}, "invalid", "active:not"),
    ("Patient", "active", "true,yes", {}, "invalid", "active"),
    ("Group", "actual", "|true", {}, "invalid", "actual"),
    ("Patient", "active", "true,false", {}, None, None),
    ("Group", "value", "x", {}, None, None),  # a CodeableConcept or a boolean
    ("Observation", "date", "2024-01-01T10:00:00+15:00", {}, "invalid", "date"),
    ("Observation", "date", "2024-01-01T10:00:00-14:30", {}, "invalid", "date"),
    ("Observation", "date", "2024-01-01T10:00:00+14:00", {}, None, None),
    ("Observation", "date", "2024-01-01T10:00:00-13:59", {}, None, None),
    ("Observation", "value-quantity", "5_0", {}, "invalid", "value-quantity"),
    # _list names a List by id; functional lists are not kept here
    ("AllergyIntolerance", "_list", "$current-allergies", {}, "not-supported", "_list"),
    ("Patient", "_list:exact", "1", {}, "invalid", "_list:exact"),
    ("Patient", "_list", "", {}, "invalid", "_list"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("path", "key", "value", "headers", "code", "expression"),
    [pytest.param(*r, id=f"{r[0]}?{r[1]}") for r in REFUSALS],
)
def test_refused_with_a_located_outcome(
    world: World,
    path: str,
    key: str,
    value: str,
    headers: dict[str, str],
    code: str | None,
    expression: str | None,
) -> None:
    response = world.http.get(f"/{path}", params=[(key, value)], headers=headers)
    if code is None:  # the control: well-formed, answered
        assert response.status_code == 200, response.text
        return
    assert response.status_code == 400, response.text
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    issue = outcome["issue"][0]
    assert (issue["code"], issue["expression"]) == (code, [expression]), issue


# =========================================================================== _list


def test_list_pages_and_system_search(world: World) -> None:
    """Paging links repeat `_list` as written; a system search takes it across types."""
    loaded = world.load("lists", SCENARIOS)
    labels = loaded.label_of()
    l1 = loaded.ids["l1"][1]
    pages = walk(world.http, "Patient", [("_list", l1), loaded.scope, ("_count", "1")])
    assert sorted(labels[m] for p in pages for m in entries(p, "match")) == ["pa", "pb"]
    assert all(f"_list={l1}" in (link(p, "self") or "") for p in pages)
    system = get_bundle(world.http, "", [("_type", "Patient,Observation"), ("_list", l1)])
    assert sorted(labels[m] for m in entries(system, "match")) == ["o1", "pa", "pb"]
    everything = get_bundle(world.http, "", [("_list", l1)])  # every type (R4: [base]?_list=42)
    assert sorted(labels[m] for m in entries(everything, "match")) == ["o1", "pa", "pb"]


def test_list_needs_the_scope_to_search_lists(world: World, live_server: LiveServer) -> None:
    """`_list` tests the List: a caller who may not search Lists is refused, as for `_has`
    (the List's entries would otherwise be read through it)."""
    loaded = world.load("lists", SCENARIOS)
    auth = live_server.app.state.auth
    outcomes = {}
    for scope in ("system/Patient.rs", "system/Patient.rs system/List.rs"):
        app = register_client(auth, "backend", scope, jwks={"keys": []})
        token = auth.local_token(app.name, scope)["access_token"]
        outcomes[scope] = world.http.get(
            "/Patient",
            params=[("_list", loaded.ids["l1"][1]), loaded.scope],
            headers={"Authorization": f"Bearer {token}"},
        )
    refused = outcomes["system/Patient.rs"]
    assert refused.status_code == 403, refused.text
    assert refused.json()["issue"][0]["expression"] == ["_list"]
    allowed = outcomes["system/Patient.rs system/List.rs"]
    assert allowed.status_code == 200, allowed.text
    assert len(entries(allowed.json(), "match")) == 2


# =========================================================================== result parameters

RESULTS: dict[str, dict[str, Any]] = {
    "pa": {"resourceType": "Patient", "gender": "female"},
    "pb": {"resourceType": "Patient", "gender": "male"},
    "o1": obs(subject={"reference": "Patient/{id:pa}"}),
    "o2": obs(subject={"reference": "Patient/{id:pb}"}, status="amended"),
}

# query, Bundle.total (None: absent), matches on the first page, included resources
RESULT_CASES = [
    ("Observation?_total=accurate&_count=1", 2, 1, ""),
    ("Observation?_total=estimate&_count=1", 2, 1, ""),  # counted exactly as well
    ("Observation?_total=none&_count=1", None, 1, ""),
    ("Observation?_count=1", None, 1, ""),  # not asked for, and not known from one page
    ("Observation", 2, 2, ""),  # everything on one page: the total is known, so given
    ("Observation?_count=0", 2, 0, ""),  # R4: _count=0 is _summary=count
    ("Observation?_summary=count&_include=Observation:subject", 2, 0, ""),
    ("Observation?_include=*", 2, 2, "pa pb"),
    ("Observation?_include=Observation:subject&_total=accurate&_count=1", 2, 1, "pa"),
    ("Observation?_sort=-status&_count=1&_include=Observation:subject", None, 1, "pa"),
    ("Patient?_revinclude=*&gender=male", 1, 1, "o2"),
]


@pytest.mark.parametrize(("query", "total", "matches", "included"), RESULT_CASES)
def test_result_parameters(
    world: World, query: str, total: int | None, matches: int, included: str
) -> None:
    loaded = world.load("results", {"results": RESULTS})
    labels = loaded.label_of()
    path, pairs = split_query(loaded.render(query))
    bundle = get_bundle(world.http, path, [*pairs, loaded.scope])
    outcome_free(bundle)
    assert bundle.get("total") == total
    assert len(entries(bundle, "match")) == matches
    assert sorted(labels[i] for i in entries(bundle, "include")) == included.split()


def test_elements_subset_the_matches_only(world: World) -> None:
    """_elements keeps the asked elements (and id, meta) of each match, marked SUBSETTED;
    included resources come whole (R4 search.html#elements)."""
    loaded = world.load("results", {"results": RESULTS})
    query = [("_elements", "status"), ("_include", "Observation:subject"), loaded.scope]
    bundle = get_bundle(world.http, "Observation", query)
    for entry in bundle["entry"]:
        resource = entry["resource"]
        tags = [t.get("code") for t in resource["meta"].get("tag", [])]
        if entry["search"]["mode"] == "match":
            assert "status" in resource and "subject" not in resource, resource
            assert "SUBSETTED" in tags
        else:
            assert resource["gender"] and "SUBSETTED" not in tags
