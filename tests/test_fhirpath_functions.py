"""The FHIRPath N1 functions and operators the R4 invariants need beyond search
(app/fhir/search/fhirpath/functions.py): ``&``, ``contains``, ``combine()``, ``children()``,
``descendants()``, ``tail()``, ``toString()``, ``replaceMatches()``, ``iif()``, ``is`` of any
type, a path after a union or descendants(), and ``%context``, each against N1's semantics
(empty propagation, collections) on the compiled closures themselves."""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Any

import pytest

from app.fhir import constraints
from app.fhir.jsonio import loads
from app.fhir.search.fhirpath.compiled import Scope
from app.fhir.search.fhirpath.compiler import compile_node
from app.fhir.search.fhirpath.evaluation import with_context
from app.fhir.search.fhirpath.parser import Unsupported, parse

PATIENT = {
    "resourceType": "Patient",
    "name": [
        {"family": "Doe", "given": ["Ann", "Bo"]},
        {"family": "Roe"},
    ],
    "_gender": {"extension": [{"url": "http://example.org/x", "valueString": "hidden"}]},
    "contact": [{"name": {"family": "Kin"}}],
}
QUESTIONNAIRE = {
    "resourceType": "Questionnaire",
    "status": "draft",
    "item": [
        {"linkId": "1", "type": "group", "item": [{"linkId": "1.1", "type": "string"}]},
        {"linkId": "2", "type": "boolean"},
    ],
}


def run(expression: str, node: Any, base: str | None = None) -> list[Any]:
    """``expression`` on ``node`` as an invariant of its type is evaluated."""
    base = base or node["resourceType"]
    scope = Scope((base,), base.split(".")[0], context_types=(base,))
    fn = with_context(compile_node(parse(expression), scope).fn)
    return fn([node], node)


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("name[0].family & '-' & name[1].family", ["Doe-Roe"]),
        ("name[1].given & 'x'", ["x"]),  # an empty operand is ''
        ("name[1].given & name[1].given", [""]),
        ("name.family & 'x'", []),  # two items: an error in N1, unknown here
    ],
)
def test_concat(expression: str, expected: list[Any]) -> None:
    assert run(expression, PATIENT) == expected


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("name.given contains 'Bo'", [True]),
        ("name.given contains 'Cy'", [False]),
        ("name[1].given contains 'Bo'", [False]),  # an empty collection contains nothing
        ("name.given contains name[1].given", []),  # an empty item: empty
        ("name.given contains name.family", []),  # several items: unknown
    ],
)
def test_contains_operator(expression: str, expected: list[Any]) -> None:
    assert run(expression, PATIENT) == expected


def test_contains_is_still_the_string_function_after_a_dot() -> None:
    assert run("name[0].family.contains('o')", PATIENT) == [True]


def test_combine_keeps_duplicates_and_evaluates_its_argument_on_this() -> None:
    assert run("name.family.combine(name.family)", PATIENT) == ["Doe", "Roe", "Doe", "Roe"]
    # the argument is not evaluated on the focus (the given names have no 'family')
    assert run("name.given.combine(contact.name.family)", PATIENT) == ["Ann", "Bo", "Kin"]
    assert run("name[1].given.combine(name[0].family)", PATIENT) == ["Doe"]  # empty focus
    assert run("name.given.combine($this.name[1].given).count()", PATIENT) == [2]


def test_children_are_one_level_and_no_resource_type() -> None:
    found = run("name[0].children()", PATIENT)
    assert found == ["Doe", "Ann", "Bo"]
    assert "Patient" not in run("children()", PATIENT)
    assert run("name[1].given.children()", PATIENT) == []


def test_descendants_reach_every_level_and_primitive_extensions() -> None:
    assert sorted(run("descendants().linkId", QUESTIONNAIRE)) == ["1", "1.1", "2"]
    assert "hidden" in run("descendants().value", PATIENT)  # _gender's extension
    assert run("name[1].given.descendants()", PATIENT) == []
    assert run("descendants().linkId.isDistinct()", QUESTIONNAIRE) == [True]


def test_a_path_after_a_union_or_descendants_reads_the_key() -> None:
    assert run("(name | contact.name).family", PATIENT) == ["Doe", "Roe", "Kin"]
    # a name that is a choice somewhere (DeviceRequest.code[x]) finds its variants too
    bundle = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [{"resource": {"resourceType": "DeviceRequest", "codeCodeableConcept": {}}}],
    }
    assert run("entry.children().code", bundle) == [{}]


def test_tail() -> None:
    assert run("name.family.tail()", PATIENT) == ["Roe"]
    assert run("name[1].family.tail()", PATIENT) == []
    assert run("name[1].given.tail()", PATIENT) == []


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (loads(b"1.0"), ["1.0"]),  # as written: the decimal keeps its precision
        (Decimal("2.50"), ["2.50"]),
        (3, ["3"]),
        (True, ["true"]),
        ("x", ["x"]),
        ({"value": 1}, []),  # a complex value: not needed, unknown
    ],
)
def test_to_string(value: Any, expected: list[Any]) -> None:
    extension = {"url": "http://example.org/x", "valueString": "x"}
    assert run("toString()", value, "Extension") == expected
    assert run("value.toString()", extension, "Extension") == ["x"]


def test_to_string_of_nothing_or_of_several() -> None:
    assert run("name[1].given.toString()", PATIENT) == []
    assert run("name.family.toString()", PATIENT) == []


def test_replace_matches() -> None:
    assert run(r"name[0].family.replaceMatches('o(.)', '$1$1')", PATIENT) == ["Dee"]
    assert run(r"'Patient.name.given'.replaceMatches('\\..*', '')", PATIENT) == ["Patient"]
    assert run("name[1].given.replaceMatches('a', 'b')", PATIENT) == []


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("iif(name.exists(), 'named', 'anonymous')", ["named"]),
        ("iif(photo.exists(), 'photo', 'none')", ["none"]),
        ("iif(photo.exists(), 'photo')", []),  # false, no otherwise: empty
        ("iif(gender = 'male', 1, 2)", [2]),  # an empty criterion takes otherwise
        ("iif(name.exists(), name.count() = 2, false)", [True]),  # a boolean iif
        ("iif($this.name.count() = 2, 'two')", ["two"]),  # $this is the input
    ],
)
def test_iif(expression: str, expected: list[Any]) -> None:
    assert run(expression, PATIENT) == expected


def test_is_of_a_primitive_or_choice_type() -> None:
    prediction = {"probabilityDecimal": 12}
    base = "RiskAssessment.prediction"
    assert run("probability is decimal", prediction, base) == [True]
    assert run("probability is Range", prediction, base) == [False]
    assert run("probability is decimal", {}, base) == []  # empty: empty
    assert run("name.family is string", PATIENT) == []  # several items: unknown
    assert run("name[0].family is string", PATIENT) == [True]
    assert run("name[0].family is Boolean", PATIENT) == [False]  # System.Boolean: no FHIR type


def test_context_is_the_invariants_context_element_inside_every_function() -> None:
    assert run("name.all(%context.name.count() = 2)", PATIENT) == [True]
    with pytest.raises(Unsupported):  # search expressions have no %context
        compile_node(parse("%context.name"), Scope(("Patient",), "Patient"))


def test_string_tests_take_a_computed_argument() -> None:
    assert run("name[0].family.startsWith('D' & 'o')", PATIENT) == [True]
    assert run("name[0].family.startsWith(name[1].given)", PATIENT) == []  # empty argument


def test_is_distinct_compares_as_equality_does_and_scales() -> None:
    assert run("(1 | 2).isDistinct()", PATIENT) == [True]
    names = {"resourceType": "Patient", "name": [{"family": "A"}, {"family": "A"}]}
    assert run("name.isDistinct()", names) == [False]  # complex values: compared whole
    assert run("name.family.isDistinct()", names) == [False]
    # csd-1 on a large code system (DICOM's has thousands of codes) must stay linear
    items = [{"linkId": str(i), "type": "string"} for i in range(40_000)]
    big = {"resourceType": "Questionnaire", "status": "draft", "item": items}
    started = time.perf_counter()
    assert run("descendants().linkId.isDistinct()", big) == [True]
    assert time.perf_counter() - started < 1.0


# --- arguments on $this (N1 "Functions"; fhirpath.js, HAPI, Firely): not on the focus --------


def test_intersect_evaluates_its_argument_on_this_not_on_the_focus() -> None:
    # on the focus (the given names) `name[0].given` finds nothing
    assert run("name.given.intersect(name[0].given)", PATIENT) == ["Ann", "Bo"]
    assert run("name.family.combine(name.family).intersect(name.family)", PATIENT) == [
        "Doe",
        "Roe",
    ]  # duplicates removed
    assert run("name.intersect(name[1])", PATIENT) == [{"family": "Roe"}]  # compared whole
    # inside where(), $this is each item: obs-7's shape
    assert run("name.where(given.intersect(%resource.name.given).exists()).family", PATIENT) == [
        "Doe"
    ]


def test_exclude_keeps_order_and_duplicates() -> None:
    assert run("name.family.exclude(name[1].family)", PATIENT) == ["Doe"]
    both = "name.family.combine(name.family).exclude(name[0].family)"
    assert run(both, PATIENT) == ["Roe", "Roe"]
    assert run("name.family.exclude(photo)", PATIENT) == ["Doe", "Roe"]
    assert run("photo.exclude(name)", PATIENT) == []
    assert run("(1 | 2 | 3).exclude(2)", PATIENT) == [1, 3]


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("name[0].given.subsetOf(name.given)", [True]),
        ("name.given.subsetOf(name[0].given.first())", [False]),
        ("name[1].given.subsetOf(name.given)", [True]),  # an empty input: true
        ("name.given.subsetOf(name[1].given)", [False]),  # else an empty other: false
        ("name.given.supersetOf(name[0].given)", [True]),
        ("name.given.supersetOf(name[1].given)", [True]),  # an empty other: true
        ("name[1].given.supersetOf(name.given)", [False]),
        ("(1 | 2).subsetOf(2 | 1 | 3)", [True]),
        ("(true).subsetOf(1)", [False]),  # a boolean is no number
    ],
)
def test_subset_of_and_superset_of(expression: str, expected: list[Any]) -> None:
    assert run(expression, PATIENT) == expected


def test_union_function_is_the_union_operator_on_this() -> None:
    assert run("name.given.union(name[0].given)", PATIENT) == ["Ann", "Bo"]
    assert run("name[1].given.union(name.family)", PATIENT) == ["Doe", "Roe"]


def test_a_computed_string_argument_is_evaluated_on_this() -> None:
    # on the focus (the string 'Doe') `name[0].family` would be empty, so unknown
    assert run("name[0].family.startsWith(name[0].family)", PATIENT) == [True]
    assert run("name[0].family.endsWith(name[1].family)", PATIENT) == [False]
    assert run("name[0].family.endsWith('oe')", PATIENT) == [True]
    assert run("name.where(family.contains(%resource.name[1].family)).given", PATIENT) == []


# --- values of the root alone are computed once per evaluation -----------------------------


def _structure_definition(elements: int, base: str = "Basic") -> dict[str, Any]:
    paths = [base] + [f"{base}.extension"] * elements
    found = [{"id": f"e{i}", "path": p} for i, p in enumerate(paths)]
    return {
        "resourceType": "StructureDefinition",
        "kind": "resource",
        "type": base,
        "snapshot": {"element": found},
        "differential": {"element": found},
    }


def test_sdf_8_is_linear_in_the_elements() -> None:
    """sdf-8 and sdf-8a read ``%resource.snapshot.element.first().path`` for every element:
    computed each time they were quadratic (50,000 elements: ~4 s each)."""
    tests = {c.key: c.test for rows in constraints.table().checked.values() for c in rows}
    big = _structure_definition(50_000)
    started = time.perf_counter()
    assert tests["sdf-8"]([big["snapshot"]], big) == [True]
    assert tests["sdf-8a"]([big["differential"]], big) == [True]
    assert time.perf_counter() - started < 1.0
    # a value is kept for one evaluation only: the next resource gets its own
    other = _structure_definition(3, "Patient")
    other["snapshot"]["element"][2]["path"] = "Basic.extension"
    assert tests["sdf-8"]([other["snapshot"]], other) == [False]
    assert tests["sdf-8"]([big["snapshot"]], big) == [True]


def test_a_once_per_evaluation_value_is_not_kept_between_calls() -> None:
    scope = Scope(("Patient",), "Patient", context_types=("Patient",))
    compiled = compile_node(parse("name.where(family = %resource.name[1].family).given"), scope)
    other = {"resourceType": "Patient", "name": [{"family": "Roe", "given": ["Cy"]}]}
    assert compiled.fn([PATIENT], PATIENT) == []  # each call opens its own evaluation
    assert compiled.fn([other], other) == []  # other has no name[1]
    evaluate = with_context(compiled.fn)
    assert evaluate([PATIENT], PATIENT) == []
    twins = {"resourceType": "Patient", "name": [{"family": "Roe", "given": ["Cy"]}] * 2}
    assert evaluate([twins], twins) == ["Cy", "Cy"]


# --- cases of HL7's FHIRPath suite (tests/r4/tests-fhir-r4.xml) the compiler refused ---------


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        # literals have their System types: compared, added, tested
        ("1 + 1 = 2", [True]),
        ("name.count() = 1 + 1", [True]),
        ("'a' = 'A'", [False]),
        ("'A' < 'a'", [True]),
        ("1 < 1", [False]),
        ("2 >= 1", [True]),
        ("'B' > 'A'", [True]),
        ("1 in (1 | 2 | 3)", [True]),
        ("'b' in ('a' | 'c' | 'd')", [False]),
        ("true.toInteger() = 1", [True]),
        ("iif(true, true, false)", [True]),
        ("(true implies false) = false", [True]),
        # x.is(T) is x is T, for any type (was: resource types only)
        ("true.is(Boolean)", [True]),
        ("true.is(System.Boolean)", [True]),
        ("1.is(Integer)", [True]),
        ("'1'.is(Integer).not()", [True]),
        ("name[0].family.is(string)", [True]),
        ("name[0].family.is(FHIR.string)", [True]),
        ("name[0].family.is(String).not()", [True]),  # a FHIR string is no System.String
        ("Patient.is(FHIR.Patient)", [True]),
        ("name.family.is(string)", []),  # several items: unknown
    ],
)
def test_official_suite_cases(expression: str, expected: list[Any]) -> None:
    assert run(expression, PATIENT) == expected


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        # N1 Integer is 32 bits: beyond it a string is not convertible (empty / false)
        ("'2147483647'.toInteger()", [2147483647]),
        ("'-2147483648'.toInteger()", [-2147483648]),
        ("'2147483648'.toInteger()", []),
        ("'-2147483649'.toInteger()", []),
        ("'2147483648'.convertsToInteger()", [False]),
        ("'2147483647'.convertsToInteger()", [True]),
        ("'+007'.toInteger()", [7]),
        ("'1.0'.convertsToInteger()", [False]),
        ("true.convertsToInteger()", [True]),
        ("name.family.convertsToInteger()", []),  # several items: unknown
        ("'\u0661\u0662'.toInteger()", []),  # Arabic-Indic digits are no FHIRPath digits
        ("'\u0661\u0662'.convertsToInteger()", [False]),
    ],
)
def test_to_integer_is_32_bit(expression: str, expected: list[Any]) -> None:
    assert run(expression, PATIENT) == expected


def test_to_integer_of_thousands_of_digits_counts_them_instead_of_raising() -> None:
    """int() refuses strings of more than 4,300 digits: toInteger() raised on such a string."""
    assert run("'" + "9" * 5000 + "'.toInteger()", PATIENT) == []
    assert run("'" + "0" * 5000 + "'.toInteger()", PATIENT) == [0]
    assert run("'-" + "0" * 5000 + "1'.convertsToInteger()", PATIENT) == [True]


def test_to_integer_agrees_with_fhirpathpy_within_the_32_bit_range() -> None:
    """fhirpathpy has no range (it gives 2147483648); within the range the answers agree."""
    from fhirpathpy import evaluate

    for text in ("0", "-0", "+12", "007", "2147483647", "-2147483648", "1.5", "x", ""):
        expression = f"'{text}'.toInteger()"
        assert run(expression, PATIENT) == evaluate(PATIENT, expression), text
        converts = f"'{text}'.convertsToInteger()"
        assert run(converts, PATIENT) == evaluate(PATIENT, converts), text
