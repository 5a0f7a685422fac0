"""What the native FHIRPath compiler used to leave to fhirpathpy (search) or refuse (the
invariants): decimal literals, ``{}``, ``+`` of strings and of decimals, and ``=``/``!=`` of
complex values; each compiled natively, with fhirpathpy's result on the same expression."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from app.fhir.search.fhirpath import compile_expression, is_native
from app.fhir.search.fhirpath.compiled import Scope
from app.fhir.search.fhirpath.compiler import compile_node
from app.fhir.search.fhirpath.fallback import Fallback
from app.fhir.search.fhirpath.parser import Unsupported, parse

PATIENT = {
    "resourceType": "Patient",
    "gender": "female",
    "name": [
        {"family": "Doe", "given": ["Ann"]},
        {"family": "Doe", "given": ["Ann"]},
        {"family": "Roe"},
    ],
    "address": [{"city": "Oslo", "period": {"start": "2020"}}],
    "contact": [{"address": {"city": "Oslo", "period": {"start": "2020"}}}],
}
OBSERVATION = {
    "resourceType": "Observation",
    "status": "final",
    "code": {"text": "weight"},
    "valueQuantity": {"value": Decimal("71.50"), "unit": "kg"},
    "component": [{"code": {"text": "a"}, "valueInteger": 3}],
}


def both(expression: str, resource: dict[str, Any]) -> tuple[list[Any], list[Any]]:
    """The native result and fhirpathpy's, the native one required to be native."""
    rtype = resource["resourceType"]
    assert is_native(expression, rtype), expression
    return compile_expression(expression, rtype)(resource), Fallback(expression, rtype)(resource)


CASES = [
    # decimals keep the literal's precision (N1 "Decimal"), add as decimals, compare by value
    ("1.5", [Decimal("1.5")]),
    ("1.50", [Decimal("1.50")]),
    ("1.50.toString()", ["1.50"]),
    ("1.5 + 2", [Decimal("3.5")]),
    ("1.50 + 1", [Decimal("2.50")]),
    ("0.1 + 0.2 = 0.3", [True]),
    ("1.0 = 1.00", [True]),
    ("2.0 = 2", [True]),
    ("1 < 1.5", [True]),
    ("1.5 >= 1.50", [True]),
    ("1.5 in (1.5 | 2)", [True]),
    ("3.14159265358979323846", [Decimal("3.14159265358979323846")]),
    # {} is the empty collection: empty operands propagate, logic is three-valued
    ("{}", []),
    ("{}.empty()", [True]),
    ("{}.count()", [0]),
    ("{} | 1", [1]),
    ("{} = {}", []),
    ("1 = {}", []),
    ("true and {}", []),
    ("false and {}", [False]),
    ("true or {}", [True]),
    ("iif({}, 1, 2)", [2]),
    ("1 + {}", []),
    # + of strings concatenates; an empty operand makes it empty (& counts it as '')
    ("'a' + 'b'", ["ab"]),
    ("'a' + {}", []),
    ("gender + '!'", ["female!"]),
    ("name[0].family + name[0].given", ["DoeAnn"]),
    ("name[2].given + 'x'", []),
    # complex values are equal when all their children are (N1 "Equality")
    ("name[0] = name[1]", [True]),
    ("name[0] != name[1]", [False]),
    ("name[0] = name[2]", [False]),
    ("name = name", [True]),
    ("name.given = name[0].given", [False]),
    ("name[0] = name[1].given", [False]),
    ("address[0] = contact[0].address", [True]),
    ("address.period = contact.address.period", [True]),
]


@pytest.mark.parametrize(("expression", "expected"), CASES, ids=[c[0] for c in CASES])
def test_native_results_are_fhirpathpys(expression: str, expected: list[Any]) -> None:
    native, reference = both(expression, PATIENT)
    assert native == reference == expected
    assert [type(v) for v in native] == [type(v) for v in reference]  # Decimal stays Decimal


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("(value as Quantity).value > 71.4", [True]),
        ("(value as Quantity).value = 71.5", [True]),  # 71.50 = 71.5: by value
        ("(value as Quantity).value + 1.0", [Decimal("72.50")]),
        ("(component[0].value as integer) + 0.5", [Decimal("3.5")]),
        ("code = code", [True]),
        ("component.code = code", [False]),
    ],
)
def test_on_an_observation(expression: str, expected: list[Any]) -> None:
    native, reference = both(expression, OBSERVATION)
    assert native == reference == expected


def test_in_an_invariant() -> None:
    # the invariants have no fhirpathpy fallback: these compile for them now
    scope = Scope(("Patient",), "Patient", context_types=("Patient",))
    for expression, expected in [
        ("name[0] = name[1]", [True]),
        ("(gender + 'x') = 'femalex'", [True]),
        ("name.count() + 0.5 > 3", [True]),
        ("{}.empty() and true", [True]),
    ]:
        compiled = compile_node(parse(expression), scope)
        assert compiled.fn([PATIENT], PATIENT) == expected, expression


@pytest.mark.parametrize(
    "expression",
    [
        "name[0] < name[1]",  # ordering complex values: an error in N1
        "value = value",  # Quantities (or not) after a choice: by units, not here
        "(name | gender) = name",  # unknown types after a union
        "gender + 1",  # a string and a number
        "name[0][1.5]",  # an index is an integer
    ],
)
def test_what_stays_refused(expression: str) -> None:
    scope = Scope(("Observation" if expression.startswith("value") else "Patient",), "Patient")
    with pytest.raises(Unsupported):
        compile_node(parse(expression), scope)
