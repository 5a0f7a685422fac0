"""A search of several types (`GET /fhir?_type=A,B&...`) runs each criterion per type, so no
index subquery is correlated with the candidate row (sql.py `criterion_for_types`): written once
with the type as the outer row's column, a chained system search took seconds at a few
thousand resources (SQLite and PostgreSQL alike) and timed out in the full test suite.
The SQL's plan says so; SQLite words it plainly ("CORRELATED LIST SUBQUERY")."""

from __future__ import annotations

import re
import uuid
from typing import Any

import pytest
from sqlalchemy import Engine, event

from app.context import RequestContext
from app.fhir.search import SearchParams
from app.fhir.service import FhirService
from tests.test_search_shape_cache import service

CTX = RequestContext.system("http://system-plans.test/fhir")
__all__ = ["service"]  # the fixture, shared with test_search_shape_cache


@pytest.fixture(scope="module")
def family(service: FhirService) -> str:
    """A Patient with an Observation and an Encounter about them."""
    name = f"plans{uuid.uuid4().hex[:10]}"
    with service.unit_of_work(CTX, write=True) as uow:
        pid = service.create(
            uow, "Patient", {"resourceType": "Patient", "name": [{"family": name}]}
        ).version.id
        subject = {"reference": f"Patient/{pid}"}
        meta = {"tag": [{"system": "urn:system-plans", "code": name}]}  # this test's own
        observation = {"status": "final", "code": {"text": "x"}, "subject": subject, "meta": meta}
        encounter = {"status": "finished", "class": {"code": "AMB"}, "subject": subject,
                     "meta": meta}  # fmt: skip
        service.create(uow, "Observation", {"resourceType": "Observation", **observation})
        service.create(uow, "Encounter", {"resourceType": "Encounter", **encounter})
    return name


def searched(
    service: FhirService, engine: Engine, pairs: list[tuple[str, str]], types: list[str]
) -> tuple[list[str], str, Any]:
    """(the types found, the page statement's SQL, its parameters)."""
    statements: list[tuple[str, Any]] = []

    def grab(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT") and "FROM resource" in statement:
            statements.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", grab)
    try:
        with service.unit_of_work(CTX, write=False) as uow:
            params = SearchParams.parse(pairs, types[0], strict=True)
            result = service.search(uow, None, params, types=types)
    finally:
        event.remove(engine, "before_cursor_execute", grab)
    [(sql, parameters)] = [s for s in statements if "search_" in s[0]][:1]
    return sorted(v.resource_type for v in result.versions), sql, parameters


@pytest.mark.parametrize(
    "criterion",
    [("subject.name", "{name}"), ("subject:Patient.name", "{name}"),
     ("_has:Provenance:target:agent", "Practitioner/none"), ("subject:missing", "false")],
)  # fmt: skip
def test_a_search_of_several_types_has_no_correlated_index_subquery(
    service: FhirService, family: str, is_postgres: bool, criterion: tuple[str, str]
) -> None:
    engine = service.engine
    pairs = [
        (criterion[0], criterion[1].format(name=family)),
        ("_tag", f"urn:system-plans|{family}"),
    ]
    types, sql, parameters = searched(service, engine, pairs, ["Observation", "Encounter"])
    if not criterion[0].startswith("_has"):  # (no Provenance names that agent)
        assert types == ["Encounter", "Observation"]
    with engine.connect() as conn:
        if is_postgres:
            plan = "\n".join(r[0] for r in conn.exec_driver_sql("EXPLAIN " + sql, parameters))
            # a condition on a correlated subquery reads "(SubPlan n)", run per row; an
            # uncorrelated one "(hashed SubPlan n)", run once
            per_row = re.findall(r"\(SubPlan \d+\)", plan)
        else:
            plan = "\n".join(r[-1] for r in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql,
                                                                 parameters))  # fmt: skip
            per_row = [line for line in plan.splitlines() if "CORRELATED LIST" in line]
    assert not per_row, plan
