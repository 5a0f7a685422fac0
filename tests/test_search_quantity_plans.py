"""Quantity searches are range scans of an index, on SQLite and PostgreSQL alike (docs/search.md,
"UCUM units"): what they match, and the plan that finds it.

- a composite whose second component is a quantity in UCUM units
  (`component-code-value-quantity=8480-6$gt16|http://unitsofmeasure.org|kPa`) scans
  ix_composite_canonical (migration 0020) on every column it compares; it used
  ix_composite_lookup up to the first code and read every row of that code.
- `value-quantity=5.4||mg` (the code or the unit text) is two range scans, of
  ix_quantity_lookup (the code) and ix_quantity_unit (the unit text where it is not the code;
  migration 0021); `code = x OR unit = x` read every value of the parameter."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import Engine, event

from app.context import RequestContext
from app.fhir.search import SearchParams
from app.fhir.service import FhirService
from tests.test_search_shape_cache import service

CTX = RequestContext.system("http://quantity-plans.test/fhir")
UCUM = "http://unitsofmeasure.org"
LOINC = "http://loinc.org"
TAG = "urn:quantity-plans"
__all__ = ["service"]  # the fixture, shared with test_search_shape_cache

# Enough rows of one first code that reading them all is not what a planner would choose when
# an index compares the canonical value too.
FILLER = 400


def _qty(value: str, code: str | None, unit: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"value": Decimal(value)}
    if code is not None:
        out.update(system=UCUM, code=code)
    if unit is not None:
        out["unit"] = unit
    return out


def _pressure(mark: str, systolic: dict[str, Any]) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "meta": {"tag": [{"system": TAG, "code": mark}]},
        "code": {"coding": [{"system": LOINC, "code": "85354-9"}]},
        "component": [
            {"code": {"coding": [{"system": LOINC, "code": mark}]}, "valueQuantity": systolic},
        ],
    }


@pytest.fixture(scope="module")
def pressures(service: FhirService) -> Iterator[tuple[str, dict[str, str]]]:
    """Systolic pressures (under a first code of their own) in several units, labelled, and
    FILLER more below them all (1 to 400 Pa)."""
    mark = f"qp{uuid.uuid4().hex[:10]}"
    labelled = {
        "120 mm[Hg]": _qty("120", "mm[Hg]"),
        "17 kPa": _qty("17", "kPa"),
        "16 kPa": _qty("16", "kPa"),
        "15000 Pa": _qty("15000", "Pa"),
        "17 no system": _qty("17", None, "kPa"),
        "17 Cel": _qty("17", "Cel"),  # a special unit: no canonical form
    }
    ids: dict[str, str] = {}
    with service.unit_of_work(CTX, write=True) as uow:
        for label, quantity in labelled.items():
            ids[label] = service.create(uow, "Observation", _pressure(mark, quantity)).version.id
        for n in range(FILLER):
            service.create(uow, "Observation", _pressure(mark, _qty(str(1 + n), "Pa")))
    _analyze(service.engine)
    yield mark, ids


def _analyze(engine: Engine) -> None:
    with engine.connect() as conn:
        conn.exec_driver_sql("ANALYZE")
        conn.commit()


def _search(service: FhirService, query: str) -> tuple[set[str], str, Any]:
    """The ids found (all pages: the count is the total), and the SQL of the count statement."""
    grabbed: list[tuple[str, Any]] = []

    def grab(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT COUNT("):
            grabbed.append((statement, parameters))

    engine = service.engine
    event.listen(engine, "before_cursor_execute", grab)
    try:
        with service.unit_of_work(CTX, write=False) as uow:
            params = SearchParams.parse_query(query + "&_total=accurate&_count=1000", "Observation")
            result = service.search(uow, "Observation", params)
    finally:
        event.remove(engine, "before_cursor_execute", grab)
    assert result.total == len(result.versions)
    [(sql, parameters)] = grabbed
    return {v.id for v in result.versions}, sql, parameters


def _plan(engine: Engine, sql: str, parameters: Any, is_postgres: bool) -> str:
    with engine.connect() as conn:
        if is_postgres:
            rows = conn.exec_driver_sql("EXPLAIN " + sql, parameters)
            return "\n".join(r[0] for r in rows)
        rows = conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql, parameters)
        return "\n".join(str(r[-1]) for r in rows)


# (search value after `<first code>$`, must match, must not match); 120 mm[Hg] is 15.999 kPa
COMPOSITE_CASES = [
    (f"gt16|{UCUM}|kPa", {"17 kPa"}, {"120 mm[Hg]", "16 kPa", "17 no system", "17 Cel"}),
    (f"gt15|{UCUM}|kPa", {"120 mm[Hg]", "17 kPa", "16 kPa"}, {"15000 Pa", "17 no system"}),
    (f"16|{UCUM}|kPa", {"16 kPa", "120 mm[Hg]"}, {"17 kPa", "15000 Pa"}),
    (f"15|{UCUM}|kPa", {"15000 Pa"}, {"16 kPa", "120 mm[Hg]"}),
    (f"lt15.5|{UCUM}|kPa", {"15000 Pa"}, {"16 kPa", "120 mm[Hg]", "17 Cel"}),
    (f"ap17|{UCUM}|kPa", {"17 kPa", "16 kPa", "120 mm[Hg]"}, {"15000 Pa", "17 no system"}),
    (f"17|{UCUM}|Cel", {"17 Cel"}, {"17 kPa", "17 no system"}),  # no conversion: as written
]


@pytest.mark.parametrize(("value", "must", "must_not"), COMPOSITE_CASES)
def test_a_ucum_composite_matches_across_units_by_an_index_range_scan(
    service: FhirService,
    pressures: tuple[str, dict[str, str]],
    is_postgres: bool,
    value: str,
    must: set[str],
    must_not: set[str],
) -> None:
    mark, ids = pressures
    found, sql, parameters = _search(service, f"component-code-value-quantity={mark}${value}")
    labels = {label for label, rid in ids.items() if rid in found}
    assert must <= labels and not (must_not & labels), labels
    filler = FILLER if value.startswith("lt") else 0  # (1 to 400 Pa)
    assert len(found) - len(labels) == filler
    if "Cel" in value or filler:
        return  # compared as written (ix_composite_lookup's search), or reads the filler too
    plan = _plan(service.engine, sql, parameters, is_postgres)
    assert "ix_composite_canonical" in plan, plan
    # every compared column is an index condition, the canonical value included
    if is_postgres:
        assert "c2_canonical_value" in plan.split("Index Cond:")[1].split("\n")[0], plan
    else:
        assert "c2_canonical_value" in plan, plan


@pytest.fixture(scope="module")
def amounts(service: FhirService) -> Iterator[tuple[str, dict[str, str]]]:
    """Quantities with codes and unit texts of their own (`<mark>c`, `<mark>u`, ...), labelled,
    and FILLER more with another unit text: rows a scan of the parameter would read."""
    mark = f"qa{uuid.uuid4().hex[:10]}"
    system = f"urn:{mark}"

    def qty(value: str, code: str | None, unit: str | None) -> dict[str, Any]:
        out: dict[str, Any] = {"value": Decimal(value)}
        if code is not None:
            out.update(system=system, code=mark + code)
        if unit is not None:
            out["unit"] = mark + unit
        return out

    labelled = {
        "code c, unit u": qty("5.4", "c", "u"),
        "code c": qty("5.4", "c", None),
        "unit u": qty("5.4", None, "u"),
        "code u, unit u": qty("5.4", "u", "u"),
        "7, code c, unit u": qty("7", "c", "u"),
        "code x, unit y": qty("5.4", "x", "y"),
    }
    ids: dict[str, str] = {}

    def observation(quantity: dict[str, Any]) -> dict[str, Any]:
        return {"resourceType": "Observation", "status": "final", "code": {"text": mark},
                "valueQuantity": quantity}  # fmt: skip

    with service.unit_of_work(CTX, write=True) as uow:
        for label, quantity in labelled.items():
            ids[label] = service.create(uow, "Observation", observation(quantity)).version.id
        for n in range(FILLER):
            service.create(uow, "Observation", observation(qty(str(5 + n / 1000), None, "f")))
    _analyze(service.engine)
    yield mark, ids


# (search value, with <S> for the system and <m> for the mark; must match, must not match)
UNIT_CASES = [
    ("5.4||<m>u", {"code c, unit u", "unit u", "code u, unit u"},
     {"code c", "7, code c, unit u", "code x, unit y"}),
    ("5.4||<m>c", {"code c, unit u", "code c"}, {"unit u", "code u, unit u", "code x, unit y"}),
    ("ge5||<m>y", {"code x, unit y"}, {"code c, unit u", "unit u"}),
    ("5.4||<m>z", set(), {"code c, unit u", "code c", "unit u", "code u, unit u"}),
    # with a system: the code, or the unit text of a quantity without a code
    ("5.4|<S>|<m>u", {"code u, unit u"}, {"code c, unit u", "unit u"}),
    ("5.4|<S>|<m>c", {"code c, unit u", "code c"}, {"unit u", "7, code c, unit u"}),
]  # fmt: skip


@pytest.mark.parametrize(("value", "must", "must_not"), UNIT_CASES)
def test_a_quantity_by_code_or_unit_text_is_two_index_range_scans(
    service: FhirService,
    amounts: tuple[str, dict[str, str]],
    is_postgres: bool,
    value: str,
    must: set[str],
    must_not: set[str],
) -> None:
    mark, ids = amounts
    searched = value.replace("<S>", f"urn:{mark}").replace("<m>", mark)
    found, sql, parameters = _search(service, f"value-quantity={searched}")
    labels = {label for label, rid in ids.items() if rid in found}
    assert must <= labels and not (must_not & labels), labels
    assert len(found) == len(labels)  # none of the filler (unit text <mark>f)
    if "||" not in value:
        return  # with a system: `code = x OR (code IS NULL AND unit = x)`, ix_quantity_lookup's
    plan = _plan(service.engine, sql, parameters, is_postgres)
    assert "ix_quantity_unit" in plan and "ix_quantity_lookup" in plan, plan
    assert ("BitmapOr" if is_postgres else "MULTI-INDEX OR") in plan, plan
