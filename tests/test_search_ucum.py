"""Quantity search across comparable UCUM units (issue #3): the index keeps each UCUM quantity
also in base units (values.canonical_quantity), and a search in UCUM units compares there,
with the prefix's precision taken in the unit written. Table-driven: every case names the
whole set it must return, so it proves what must not match as well."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, update

from app.fhir.tables import search_composite, search_quantity
from tests.helpers import FHIR_JSON, unique

UCUM = "http://unitsofmeasure.org"
TAG = "urn:test:ucum"
LOINC = "http://loinc.org"


def _quantity(value: float | str, code: str, system: str | None = UCUM) -> dict[str, Any]:
    quantity: dict[str, Any] = {"value": value, "unit": code}
    if system is not None:  # a code needs a system (qty-3)
        quantity.update(system=system, code=code)
    return quantity


VALUES: dict[str, dict[str, Any]] = {
    "g0054": _quantity(0.0054, "g"),
    "mg54": _quantity(5.4, "mg"),
    "mg535": _quantity(5.35, "mg"),  # the low end of eq5.4 mg: in
    "mg545": _quantity(5.45, "mg"),  # its high end: out
    "ug5400": _quantity(5400, "ug"),
    "g500": _quantity(500, "g"),
    "kg2": _quantity(2, "kg"),
    "lb1": _quantity(1, "[lb_av]"),  # 453.59237 g
    "mgdl": _quantity(100, "mg/dL"),  # = 1 g/L
    "gl": _quantity(1, "g/L"),
    "cells3": _quantity(5, "10*3/uL"),  # = 5 10*9/L
    "cells9": _quantity(5, "10*9/L"),
    "iu": _quantity(2, "[IU]/mL"),  # = 2 k[IU]/L; [IU] compares with itself only
    "cel": _quantity(37, "Cel"),  # affine: indexed as written only
    "nosys": _quantity(5.4, "mg", system=None),  # the unit alone
    "uncoded": {"value": 5.4, "unit": "mg", "system": UCUM},  # the unit for the code
    "other": _quantity(5.4, "mg", system="http://example.org/units"),
}

MASSES = "g0054 mg54 uncoded mg535 mg545 ug5400 g500 kg2 lb1"
CASES: list[tuple[str, str]] = [
    (f"5.4|{UCUM}|mg", "g0054 mg54 uncoded mg535 ug5400"),  # [5.35, 5.45) mg
    (f"eq5.4|{UCUM}|mg", "g0054 mg54 uncoded mg535 ug5400"),
    (f"5.40|{UCUM}|mg", "g0054 mg54 uncoded ug5400"),  # [5.395, 5.405) mg
    (f"0.0054|{UCUM}|g", "g0054 mg54 uncoded mg535 ug5400"),  # [0.00535, 0.00545) g
    (f"5400|{UCUM}|ug", "g0054 mg54 uncoded ug5400"),  # [5399.5, 5400.5) ug
    (f"ne5.4|{UCUM}|mg", "mg545 g500 kg2 lb1"),  # comparable units only, as before
    (f"lt1|{UCUM}|kg", "g0054 mg54 uncoded mg535 mg545 ug5400 g500 lb1"),
    (f"gt1|{UCUM}|kg", "kg2"),
    (f"ge2000|{UCUM}|g", "kg2"),  # 2 kg is 2000 g: ge takes the number exactly
    (f"gt2000|{UCUM}|g", ""),
    (f"le500|{UCUM}|g", "g0054 mg54 uncoded mg535 mg545 ug5400 g500 lb1"),
    (f"lt500|{UCUM}|g", "g0054 mg54 uncoded mg535 mg545 ug5400 lb1"),
    (f"sa1|{UCUM}|[lb_av]", "g500 kg2"),
    (f"eb1|{UCUM}|[lb_av]", "g0054 mg54 uncoded mg535 mg545 ug5400"),
    (f"ap500|{UCUM}|g", "g500 lb1"),  # [450, 550] g
    (f"ap1|{UCUM}|[lb_av]", "lb1"),  # [408.2, 498.95] g
    (f"gt0|{UCUM}|kg", MASSES),
    (f"1|{UCUM}|g/L", "mgdl gl"),  # [0.5, 1.5) g/L
    (f"100|{UCUM}|mg/dL", "mgdl gl"),
    (f"0.1|{UCUM}|g/dL", "mgdl gl"),
    (f"5|{UCUM}|10*9/L", "cells3 cells9"),
    (f"5|{UCUM}|10*3/uL", "cells3 cells9"),
    (f"2|{UCUM}|k[IU]/L", "iu"),
    (f"2|{UCUM}|mg/mL", ""),  # [IU] is no mass
    (f"37|{UCUM}|Cel", "cel"),  # not convertible: system and code, as before
    (f"310|{UCUM}|K", ""),  # ... so Cel is not converted to K either
    (f"5.4|{UCUM}|m..g", ""),  # not a UCUM code: as before (no row has it)
    # without the UCUM system: exactly as before
    ("5.4||mg", "mg54 uncoded mg535 nosys other"),
    ("5.4", "mg54 uncoded mg535 nosys other"),
    ("0.0054||g", "g0054"),
    ("5.4|http://example.org/units|mg", "other"),
    ("lt1||kg", ""),
]


@pytest.fixture(scope="module")
def marker(base_url: str, auth_headers: dict[str, str]) -> str:
    mark = unique("ucum")
    with httpx.Client(base_url=base_url, headers=auth_headers, timeout=30) as http:
        for label, quantity in VALUES.items():
            body = {
                "resourceType": "Observation",
                "id": f"{label}-{mark}",
                "status": "final",
                "meta": {"tag": [{"system": TAG, "code": mark}]},
                "code": {"coding": [{"system": LOINC, "code": "2345-7"}]},
                "valueQuantity": quantity,
            }
            response = http.put(f"/Observation/{body['id']}", json=body, headers=FHIR_JSON)
            assert response.status_code in (200, 201), response.text
    return mark


def _labels(client: httpx.Client, mark: str, **params: str) -> list[str]:
    bundle = client.get("/Observation", params={"_tag": f"{TAG}|{mark}", **params}).json()
    assert bundle.get("resourceType") == "Bundle", bundle
    return [e["resource"]["id"].rsplit("-ucum-", 1)[0] for e in bundle.get("entry", [])]


@pytest.mark.parametrize(("query", "expected"), CASES, ids=[c[0] for c in CASES])
def test_quantity_search_across_units(
    client: httpx.Client, marker: str, query: str, expected: str
) -> None:
    found = _labels(client, marker, **{"value-quantity": query})
    assert sorted(found) == sorted(expected.split()), query


def test_sorting_by_quantity_is_by_the_value_as_written(client: httpx.Client, marker: str) -> None:
    """`_sort` reads the value column as before: the canonical form is for matching only."""
    mass = {"value-quantity": f"gt0|{UCUM}|g", "_sort": "value-quantity"}
    assert _labels(client, marker, **mass) == [
        "g0054", "lb1", "kg2", "mg535", "mg54", "uncoded", "mg545", "g500", "ug5400",
    ]  # fmt: skip
    mass["_sort"] = "-value-quantity"
    assert _labels(client, marker, **mass)[:2] == ["ug5400", "g500"]


def _blood_pressure(
    mark: str, systolic: dict[str, Any], diastolic: dict[str, Any]
) -> dict[str, Any]:
    return _observation(
        mark,
        code="85354-9",
        component=[
            {"code": {"coding": [{"system": LOINC, "code": "8480-6"}]}, "valueQuantity": systolic},
            {"code": {"coding": [{"system": LOINC, "code": "8462-4"}]}, "valueQuantity": diastolic},
        ],
    )


def _observation(mark: str, code: str, **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "meta": {"tag": [{"system": TAG, "code": mark}]},
        "code": {"coding": [{"system": LOINC, "code": code}]},
        **extra,
    }


def test_composite_quantities_compare_across_units(client: httpx.Client) -> None:
    mark = unique("ucumc")

    def post(body: dict[str, Any]) -> str:
        response = client.post("/Observation", json=body, headers=FHIR_JSON)
        assert response.status_code == 201, response.text
        return str(response.json()["id"])

    mmhg = post(_blood_pressure(mark, _quantity(120, "mm[Hg]"), _quantity(80, "mm[Hg]")))
    kpa = post(_blood_pressure(mark, _quantity(17, "kPa"), _quantity(10, "kPa")))
    glucose = post(_observation(mark, "2339-0", valueQuantity=_quantity(100, "mg/dL")))

    def ids(param: str, value: str) -> set[str]:
        bundle = client.get("/Observation", params={"_tag": f"{TAG}|{mark}", param: value}).json()
        return {e["resource"]["id"] for e in bundle.get("entry", [])}

    component = "component-code-value-quantity"
    assert ids(component, f"8480-6$gt16|{UCUM}|kPa") == {kpa}  # 120 mm[Hg] is 15.999 kPa
    assert ids(component, f"8480-6$gt15|{UCUM}|kPa") == {mmhg, kpa}
    assert ids(component, f"8462-4$lt78|{UCUM}|mm[Hg]") == {kpa}  # 10 kPa is 75.006 mm[Hg]
    assert ids(component, f"8480-6$lt78|{UCUM}|mm[Hg]") == set()  # 75 is the diastolic
    assert ids(component, f"{LOINC}|8480-6$120|{UCUM}|mm[Hg]") == {mmhg}
    assert ids(component, "8480-6$120||mm[Hg]") == {mmhg}  # without the system: as before
    assert ids(component, "8480-6$16||kPa") == set()
    assert ids("code-value-quantity", f"2339-0$1|{UCUM}|g/L") == {glucose}
    assert ids("code-value-quantity", f"2339-0$gt1|{UCUM}|g/L") == set()
    assert ids("code-value-quantity", f"8480-6$1|{UCUM}|g/L") == set()


def test_reindex_fills_the_canonical_form_of_rows_written_before(
    client: httpx.Client, database_url: str
) -> None:
    """Rows written before migration 0019 have no canonical form: a search in another unit
    misses them until `medisentinel reindex` fills it in."""
    mark = unique("ucumr")
    body = _observation(mark, "2345-7", valueQuantity=_quantity(5.4, "mg"))
    response = client.post("/Observation", json=body, headers=FHIR_JSON)
    assert response.status_code == 201, response.text
    rid = response.json()["id"]
    query = {"_tag": f"{TAG}|{mark}", "value-quantity": f"0.0054|{UCUM}|g"}
    found = client.get("/Observation", params=query).json()["entry"]
    assert [e["resource"]["id"] for e in found] == [rid]
    engine = create_engine(database_url)
    with engine.begin() as conn:  # as the migration leaves an older row
        conn.execute(
            update(search_quantity)
            .where(search_quantity.c.resource_id == rid)
            .values(canonical_value=None, canonical_code=None)
        )
        conn.execute(
            update(search_composite)
            .where(search_composite.c.resource_id == rid)
            .values(c2_canonical_value=None, c2_canonical_code=None)
        )
    engine.dispose()
    assert "entry" not in client.get("/Observation", params=query).json()
    same_unit = {"_tag": f"{TAG}|{mark}", "value-quantity": "5.4||mg"}
    assert len(client.get("/Observation", params=same_unit).json()["entry"]) == 1
    env = {**os.environ, "MEDISENTINEL_DATABASE_URL": database_url}
    result = subprocess.run(
        [sys.executable, "-m", "app.cli", "reindex", "Observation"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    found = client.get("/Observation", params=query).json()["entry"]
    assert [e["resource"]["id"] for e in found] == [rid]


@pytest.mark.parametrize(
    "value", [f"abc|{UCUM}|mg", f"ltx|{UCUM}|kg", f"5|{UCUM}|mg|g", f"1e|{UCUM}|mg"]
)
def test_a_bad_quantity_in_ucum_units_is_a_400(client: httpx.Client, value: str) -> None:
    response = client.get("/Observation", params={"value-quantity": value})
    assert response.status_code == 400, response.text
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["expression"] == ["value-quantity"]
