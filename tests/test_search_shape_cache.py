"""The search engine shares one SQL statement between searches of the same shape (engine.py
`_cached_statements`). These tests guard what makes that safe: values are parameters, never
part of the shared SQL; values that need different SQL (`S|v`, `|v`, `v`, `S|`; date
prefixes; :missing=true/false) make different shapes; a caller's row filter is never shared.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import ColumnElement, event

from app.context import RequestContext
from app.db import create_db_engine
from app.errors import InvalidRequest
from app.fhir.hooks import Pipeline
from app.fhir.search import SearchParams, engine
from app.fhir.search.criteria import plan, split
from app.fhir.search.params import parse_criterion
from app.fhir.service import FhirService

CTX = RequestContext.system("http://shape-cache.test/fhir")


@pytest.fixture(scope="module")
def service(database_url: str) -> Iterator[FhirService]:
    db = create_db_engine(database_url, pool_size=2)
    yield FhirService(db, Pipeline())
    db.dispose()


@pytest.fixture(scope="module")
def people(service: FhirService) -> dict[str, Any]:
    """Three Patients with identifiers of a system and values no other test uses."""
    system, v1, v2 = (f"urn:shape:{uuid.uuid4().hex}" for _ in range(3))
    bodies = {
        "p1": {"identifier": [{"system": system, "value": v1}], "birthDate": "1960-05-05",
               "gender": "female"},
        "p2": {"identifier": [{"system": system, "value": v2}], "birthDate": "1980-05-05"},
        "p3": {"identifier": [{"value": v1}], "birthDate": "1980-05-05"},
    }  # fmt: skip
    ids = {}
    with service.unit_of_work(CTX, write=True) as uow:
        for label, body in bodies.items():
            created = service.create(uow, "Patient", {"resourceType": "Patient", **body})
            ids[label] = created.version.id
    return {"S": system, "V1": v1, "V2": v2, "ids": ids, "all": ",".join(ids.values())}


def found(service: FhirService, query: str, row_filter: Any = None) -> set[str]:
    with service.unit_of_work(CTX, write=False) as uow:
        uow.row_filter = row_filter
        params = SearchParams.parse_query(query, "Patient")
        result = service.search(uow, "Patient", params)
    return {v.id for v in result.versions}


# query template -> the labels it must find; run in this order, so each search follows
# others with the same parameter names (the ones a shape key that ignored values would mix).
CASES = [
    ("identifier={S}|{V1}", {"p1"}),
    ("identifier={S}|{V2}", {"p2"}),
    ("identifier=|{V1}", {"p3"}),
    ("identifier={V1}", {"p1", "p3"}),
    ("identifier={S}|", {"p1", "p2"}),
    ("identifier:not={S}|{V1}&_id={all}", {"p2", "p3"}),
    ("_id={all}&birthdate=lt1970", {"p1"}),
    ("_id={all}&birthdate=ge1970", {"p2", "p3"}),
    ("_id={all}&birthdate=1980-05", {"p2", "p3"}),
    ("_id={all}&gender:missing=true", {"p2", "p3"}),
    ("_id={all}&gender:missing=false", {"p1"}),
    ("_id={p1}&identifier={S}|", {"p1"}),
    ("_id={p2}&identifier={S}|", {"p2"}),
]


def test_searches_of_one_shape_get_their_own_values(
    service: FhirService, people: dict[str, Any]
) -> None:
    labels = {v: k for k, v in people["ids"].items()}
    values = {**people, **people["ids"]}
    for template, expected in CASES + CASES[::-1]:
        query = template.format(**values)
        assert {labels.get(i, i) for i in found(service, query)} == expected, template


def test_a_shape_is_built_once(service: FhirService, people: dict[str, Any]) -> None:
    found(service, f"identifier={people['S']}|{people['V1']}&_count=7")
    before = engine._cached_statements.cache_info()
    assert found(service, f"identifier={people['S']}|{people['V2']}&_count=7") == {
        people["ids"]["p2"]
    }
    after = engine._cached_statements.cache_info()
    assert (after.hits, after.misses) == (before.hits + 1, before.misses)


class OnlyIds:
    """A row filter (as app.auth.enforcement makes them) allowing some ids."""

    def __init__(self, *ids: str) -> None:
        self.ids = list(ids)

    def sql(self, owner_type: Any, owner_id: Any) -> ColumnElement[bool]:
        return owner_id.in_(self.ids)  # type: ignore[no-any-return]


def test_a_row_filter_is_never_shared(service: FhirService, people: dict[str, Any]) -> None:
    ids, query = people["ids"], f"identifier={people['S']}|"
    before = engine._cached_statements.cache_info()
    assert found(service, query, OnlyIds(ids["p1"])) == {ids["p1"]}
    assert found(service, query, OnlyIds(ids["p2"])) == {ids["p2"]}
    assert found(service, query, OnlyIds()) == set()
    assert engine._cached_statements.cache_info() == before  # built per search, not cached
    assert found(service, query) == {ids["p1"], ids["p2"]}


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("identifier=a|b", "identifier=|b"),
        ("identifier=a|b", "identifier=b"),
        ("identifier=a|b", "identifier=a|"),
        ("identifier=a|b", "identifier:not=a|b"),
        ("birthdate=ge2000", "birthdate=lt2000"),
        ("birthdate=2000", "birthdate=ne2000"),
        ("gender:missing=true", "gender:missing=false"),
        ("general-practitioner=Practitioner/1", "general-practitioner=1"),
        ("general-practitioner=Practitioner/1", "general-practitioner=http://x.org/Practitioner/1"),
        ("name=abc", "name:contains=abc"),
        ("name=abc", "name:exact=abc"),
        ("identifier=a,b", "identifier=a"),
    ],
)
def test_values_needing_other_sql_make_other_shapes(first: str, second: str) -> None:
    def form(query: str) -> Any:
        key, _, value = query.partition("=")
        return split(plan(parse_criterion("Patient", key, value), "http://b/fhir"))[0]

    assert form(first) != form(second)


def test_same_sql_same_shape_and_values_in_slot_order() -> None:
    one = split(plan(parse_criterion("Patient", "birthdate", "ge2000"), ""))
    two = split(plan(parse_criterion("Patient", "birthdate", "ge1999-12"), ""))
    assert one[0] == two[0]
    assert one[1] != two[1] and len(one[1]) == len(two[1])


def test_searches_are_planned_for_their_values_never_from_a_prepared_statement(
    service: FhirService, people: dict[str, Any], is_postgres: bool
) -> None:
    """psycopg prepares a statement after five runs on a connection, and PostgreSQL may then
    plan it generically, without the values: for searches that plan was found fetching every
    match of a reference to sort them (storage.planned_for_values). Other statements may
    still be prepared."""
    if not is_postgres:
        pytest.skip("prepared statements and generic plans are PostgreSQL's")
    with service.unit_of_work(CTX, write=False) as uow:
        for _ in range(12):  # well past psycopg's threshold of five
            params = SearchParams.parse_query(f"identifier={people['S']}|{people['V1']}", "Patient")
            assert [v.id for v in service.search(uow, "Patient", params).versions] == [
                people["ids"]["p1"]
            ]
        statements = prepared_statements(uow)
        for _ in range(6):  # the same connection still prepares what it runs outside searches
            uow.conn.exec_driver_sql("SELECT count(*) FROM resource WHERE resource_type = %s",
                                     ("Patient",))  # fmt: skip
        after = prepared_statements(uow)
    searches = [s for s in statements if s.startswith("SELECT") and "search_token" in s]
    assert not searches, searches
    assert any("count(*) FROM resource" in s for s in after), after


def prepared_statements(uow: Any) -> list[str]:
    """What this session has prepared (its own connection's, in PostgreSQL's view)."""
    rows = uow.conn.exec_driver_sql("SELECT statement FROM pg_prepared_statements")
    return [str(row[0]).lstrip() for row in rows]


def test_many_searches_in_one_statement_each_get_their_own_values(
    service: FhirService, people: dict[str, Any]
) -> None:
    """`find_ids_many` (engine.first_ids) sends every search as one UNION ALL branch; each
    branch's values must be its own (several branches share a shape here), and a query that
    fails alone is reported in its place without spoiling the others."""
    labels = {v: k for k, v in people["ids"].items()}
    values = {**people, **people["ids"]}
    cases = [(template.format(**values), expected) for template, expected in CASES]
    queries = [("Patient", query) for query, _ in cases]
    queries.insert(3, ("Patient", "no-such-parameter=1"))
    queries.append(("Observation", f"subject=Patient/{people['ids']['p1']}"))  # another type
    with service.unit_of_work(CTX, write=False) as uow:
        with statements_sent(uow) as statements:
            results = service.find_ids_many(uow, queries, limit=10)
        alone = [
            service.find_ids(uow, rtype, query, limit=10)
            for rtype, query in queries
            if "no-such" not in query
        ]
    assert len(statements) == 1, statements
    error = results.pop(3)
    assert isinstance(error, InvalidRequest) and "no-such-parameter" in str(error)
    assert results[-1] == [] and alone[-1] == []
    for (query, expected), ids in zip(cases, results[:-1], strict=True):
        assert not isinstance(ids, Exception)
        assert {labels.get(i, i) for i in ids} == expected, query
    assert [sorted(ids) for ids in results] == [sorted(ids) for ids in alone]  # type: ignore[arg-type]


def test_many_searches_keep_each_ones_limit(service: FhirService, people: dict[str, Any]) -> None:
    query = f"identifier={people['S']}|"  # two matches
    with service.unit_of_work(CTX, write=False) as uow:
        one, both = service.find_ids_many(uow, [("Patient", query)] * 2, limit=1)
        assert one == both and len(one) == 1  # type: ignore[arg-type]
        (pair,) = service.find_ids_many(uow, [("Patient", query)], limit=2)
    assert sorted(pair) == sorted([people["ids"]["p1"], people["ids"]["p2"]])  # type: ignore[arg-type]


def test_identifier_lookups_may_be_prepared_other_batches_never(
    service: FhirService, people: dict[str, Any], is_postgres: bool
) -> None:
    """A batch of identifier lookups (what HL7 messages send) may become a prepared
    statement: an identifier names one resource, so a generic plan is the right one, and
    planning each branch cost more than running it. A batch with any other criterion is
    planned for its values like every search."""
    if not is_postgres:
        pytest.skip("prepared statements and generic plans are PostgreSQL's")
    by_identifier = [("Patient", f"identifier={people['S']}|{people['V1']}")] * 2
    mixed = [by_identifier[0], ("Patient", f"birthdate=1980-05-05&_id={people['all']}")]
    with service.unit_of_work(CTX, write=False) as uow:
        for _ in range(12):  # well past psycopg's threshold of five
            assert service.find_ids_many(uow, by_identifier) == [[people["ids"]["p1"]]] * 2
            found = service.find_ids_many(uow, mixed)
            assert sorted(found[1]) == sorted([people["ids"]["p2"], people["ids"]["p3"]])  # type: ignore[arg-type]
        batches = [s for s in prepared_statements(uow) if "UNION ALL" in s]
    assert len(batches) == 1 and "search_date" not in batches[0], batches


def test_many_more_searches_than_one_statement_takes(
    service: FhirService, people: dict[str, Any]
) -> None:
    """An HL7 message may match hundreds of identifiers (a device's OBX); SQLite refuses a
    UNION ALL of more than 500 parts, so they go in statements of engine.BATCH_BRANCHES."""
    one, two = f"identifier={people['S']}|{people['V1']}", f"identifier={people['S']}|"
    queries = [("Patient", one), ("Patient", two), ("Patient", "identifier=none|none")] * 200
    with service.unit_of_work(CTX, write=False) as uow, statements_sent(uow) as statements:
        found = service.find_ids_many(uow, queries, limit=10)
    ids = people["ids"]
    expected = [[ids["p1"]], sorted([ids["p1"], ids["p2"]]), []] * 200
    assert [sorted(f) for f in found] == expected  # type: ignore[arg-type]
    assert len(statements) == len(queries) // engine.BATCH_BRANCHES


@contextmanager
def statements_sent(uow: Any) -> Iterator[list[str]]:
    """The SQL statements the unit's connection sends meanwhile."""
    sent: list[str] = []

    def note(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        sent.append(statement)

    event.listen(uow.conn, "before_cursor_execute", note)
    try:
        yield sent
    finally:
        event.remove(uow.conn, "before_cursor_execute", note)
