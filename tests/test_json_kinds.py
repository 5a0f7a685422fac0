"""JSON kind checks (app.fhir.bindings.check_json_kinds) and the generated summary table."""

from __future__ import annotations

import json
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

import fhir_profiles
from app.fhir.bindings import SECOND_CHOICE, check_json_kinds, resource_types
from app.fhir.jsonio import DecimalLiteral, loads
from tests.fhir_package import CORE_EXAMPLE_TYPES, examples_dir

EXAMPLES_DIR = examples_dir() or Path("/npm-absent/hl7.fhir.r4.examples")
SUMMARY_JSON = Path(fhir_profiles.__file__).resolve().parent / "r4_core" / "summary.json"

ARRAY = "must be an array"
NOT_ARRAY = "must be a single value, not an array"
BOOLEAN = "must be a JSON boolean (true or false)"
INTEGER = "must be a JSON integer"
NUMBER = "must be a JSON number"
STRING = "must be a JSON string"
OBJECT = "must be a JSON object"


def _patient(**extra: Any) -> dict[str, Any]:
    return {"resourceType": "Patient", **extra}


def _obs(**extra: Any) -> dict[str, Any]:
    return {"resourceType": "Observation", "status": "final", "code": {"text": "x"}, **extra}


def _bundle(resource: Any) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": resource}]}


# (case id, resource, expected [(path, message prefix)])
MUST_FLAG: list[tuple[str, dict[str, Any], list[tuple[str, str]]]] = [
    # --- boolean
    ("boolean as string", _patient(active="yes"), [("Patient.active", BOOLEAN)]),
    ("boolean as 'true'", _patient(active="true"), [("Patient.active", BOOLEAN)]),
    ("boolean as 1", _patient(active=1), [("Patient.active", BOOLEAN)]),
    ("boolean as 0", _patient(active=0), [("Patient.active", BOOLEAN)]),
    ("boolean as null", _patient(active=None), [("Patient.active", BOOLEAN)]),
    (
        "boolean choice as string",
        _patient(deceasedBoolean="false"),
        [("Patient.deceasedBoolean", BOOLEAN)],
    ),
    # --- integer, positiveInt, unsignedInt
    (
        "integer as string",
        _patient(multipleBirthInteger="2"),
        [("Patient.multipleBirthInteger", INTEGER)],
    ),
    (
        "integer as bool",
        _patient(multipleBirthInteger=True),
        [("Patient.multipleBirthInteger", INTEGER)],
    ),
    (
        "integer with a fraction",
        _patient(multipleBirthInteger=DecimalLiteral("1.5")),
        [("Patient.multipleBirthInteger", INTEGER)],
    ),
    (
        "integer written as 1.0",
        _obs(valueInteger=DecimalLiteral("1.0")),
        [("Observation.valueInteger", INTEGER)],
    ),
    (
        "integer written with an exponent",
        _obs(valueInteger=DecimalLiteral("1e2")),
        [("Observation.valueInteger", INTEGER)],
    ),
    ("integer as float", _obs(valueInteger=2.0), [("Observation.valueInteger", INTEGER)]),
    (
        "positiveInt as string",
        _patient(telecom=[{"system": "phone", "value": "1", "rank": "1"}]),
        [("Patient.telecom[0].rank", INTEGER)],
    ),
    (
        "unsignedInt as decimal",
        _patient(photo=[{"size": DecimalLiteral("10.0")}]),
        [("Patient.photo[0].size", INTEGER)],
    ),
    (
        "positiveInt as bool in a choice type",
        _obs(valueSampledData={"origin": {"value": 0}, "period": 1, "dimensions": False}),
        [("Observation.valueSampledData.dimensions", INTEGER)],
    ),
    # --- decimal
    (
        "decimal as string",
        _obs(valueQuantity={"value": "1.5"}),
        [("Observation.valueQuantity.value", NUMBER)],
    ),
    (
        "decimal as bool",
        _obs(valueQuantity={"value": True}),
        [("Observation.valueQuantity.value", NUMBER)],
    ),
    (
        "decimal as object",
        _obs(valueQuantity={"value": {"value": 1}}),
        [("Observation.valueQuantity.value", NUMBER)],
    ),
    # --- string-kind primitives
    ("date as number", _patient(birthDate=19700101), [("Patient.birthDate", STRING)]),
    ("code as bool", _patient(gender=True), [("Patient.gender", STRING)]),
    ("id as integer", _patient(id=5), [("Patient.id", STRING)]),
    ("uri as integer", _patient(implicitRules=1), [("Patient.implicitRules", STRING)]),
    (
        "string as decimal",
        _patient(name=[{"family": DecimalLiteral("3.0")}]),
        [("Patient.name[0].family", STRING)],
    ),
    (
        "dateTime choice as number",
        _obs(effectiveDateTime=2020),
        [("Observation.effectiveDateTime", STRING)],
    ),
    ("instant as bool", _obs(issued=False), [("Observation.issued", STRING)]),
    ("string as null", _patient(name=[{"family": None}]), [("Patient.name[0].family", STRING)]),
    (
        "extension url as number",
        _patient(extension=[{"url": 7, "valueString": "x"}]),
        [("Patient.extension[0].url", STRING)],
    ),
    (
        "xhtml as object",
        _patient(text={"status": "generated", "div": {"p": "x"}}),
        [("Patient.text.div", STRING)],
    ),
    # --- array given where a single value is expected
    ("code given as array", _patient(gender=["male"]), [("Patient.gender", NOT_ARRAY)]),
    (
        "complex given as array",
        _patient(maritalStatus=[{"text": "married"}]),
        [("Patient.maritalStatus", NOT_ARRAY)],
    ),
    ("boolean given as array", _patient(active=[True]), [("Patient.active", NOT_ARRAY)]),
    # --- single value given where an array is expected
    ("complex array as object", _patient(name={"family": "x"}), [("Patient.name", ARRAY)]),
    (
        "primitive array as string",
        _patient(name=[{"given": "Jim"}]),
        [("Patient.name[0].given", ARRAY)],
    ),
    (
        "contained as object",
        _obs(contained={"resourceType": "Patient"}),
        [("Observation.contained", ARRAY)],
    ),
    (
        "partner array as object",
        _patient(name=[{"given": ["Jim"], "_given": {"id": "a"}}]),
        [("Patient.name[0]._given", ARRAY)],
    ),
    # --- object where a primitive is expected, and the reverse
    ("object for a boolean", _patient(active={"value": True}), [("Patient.active", BOOLEAN)]),
    ("object for a code", _patient(gender={}), [("Patient.gender", STRING)]),
    (
        "object in a primitive array",
        _patient(name=[{"given": ["Jim", {"value": "Bob"}]}]),
        [("Patient.name[0].given[1]", STRING)],
    ),
    (
        "string for a complex type",
        _patient(maritalStatus="married"),
        [("Patient.maritalStatus", OBJECT)],
    ),
    ("string in a complex array", _patient(name=["Jim"]), [("Patient.name[0]", OBJECT)]),
    ("null in a complex array", _patient(name=[None]), [("Patient.name[0]", OBJECT)]),
    ("number for a backbone element", _patient(contact=[3]), [("Patient.contact[0]", OBJECT)]),
    ("string for a partner element", _patient(_birthDate="x"), [("Patient._birthDate", OBJECT)]),
    (
        "string for a contained resource",
        _obs(contained=["x"]),
        [("Observation.contained[0]", OBJECT)],
    ),
    ("string for a bundle entry resource", _bundle("x"), [("Bundle.entry[0].resource", OBJECT)]),
    # --- paths into nested structures
    (
        "inside a bundle entry resource",
        _bundle(_patient(birthDate=1970)),
        [("Bundle.entry[0].resource.birthDate", STRING)],
    ),
    (
        "inside a contained resource",
        _obs(contained=[_obs(status=1)]),
        [("Observation.contained[0].status", STRING)],
    ),
    (
        "second given name",
        _patient(name=[{"given": ["Jim", 2]}]),
        [("Patient.name[0].given[1]", STRING)],
    ),
    (
        "backbone element child",
        _patient(contact=[{"name": {"family": ["x"]}}]),
        [("Patient.contact[0].name.family", NOT_ARRAY)],
    ),
    (
        "extension value",
        _patient(extension=[{"url": "u", "valueInteger": DecimalLiteral("2.0")}]),
        [("Patient.extension[0].valueInteger", INTEGER)],
    ),
    (
        "extension inside a primitive's partner",
        _patient(_birthDate={"extension": [{"url": "u", "valueBoolean": "yes"}]}),
        [("Patient._birthDate.extension[0].valueBoolean", BOOLEAN)],
    ),
    (
        "component of an observation",
        _obs(component=[{"code": {"text": "c"}, "valueQuantity": {"value": "9"}}]),
        [("Observation.component[0].valueQuantity.value", NUMBER)],
    ),
    (
        "several errors in document order",
        _patient(active="yes", name=[{"given": "Jim", "family": 1}], gender=["male"]),
        [
            ("Patient.active", BOOLEAN),
            ("Patient.name[0].given", ARRAY),
            ("Patient.name[0].family", STRING),
            ("Patient.gender", NOT_ARRAY),
        ],
    ),
    (
        "contained resource of no R4 type",
        _obs(contained=[{"resourceType": "Nope", "status": 1}, {"status": 1}]),
        [
            ("Observation.contained[0].resourceType", "must be an R4 resource type"),
            ("Observation.contained[1].resourceType", "must be an R4 resource type"),
        ],
    ),
]

MUST_PASS: list[tuple[str, Any]] = [
    ("boolean true", _patient(active=True)),
    ("boolean false", _patient(active=False, deceasedBoolean=False)),
    ("integer zero", _patient(multipleBirthInteger=0)),
    ("large integer", _obs(valueInteger=2**40)),
    ("negative integer", _obs(valueInteger=-3)),
    ("positiveInt", _patient(telecom=[{"system": "phone", "value": "1", "rank": 1}])),
    ("unsignedInt", _patient(photo=[{"size": 0}])),
    ("decimal literal", _obs(valueQuantity={"value": DecimalLiteral("1.50")})),
    ("decimal with exponent", _obs(valueQuantity={"value": DecimalLiteral("1e-3")})),
    ("decimal as integer", _obs(valueQuantity={"value": 2})),
    ("decimal as plain Decimal", _obs(valueQuantity={"value": Decimal("0.1")})),
    ("decimal as float", _obs(valueQuantity={"value": 0.5})),
    ("string kinds", _patient(id="p1", gender="male", birthDate="1970", implicitRules="u")),
    ("narrative div", _patient(text={"status": "generated", "div": "<div>x</div>"})),
    ("arrays of objects", _patient(name=[{"family": "x", "given": ["a", "b"]}])),
    (
        "null given names aligned with _given",
        _patient(
            name=[
                {
                    "given": ["Jim", None],
                    "_given": [None, {"extension": [{"url": "u", "valueString": "x"}]}],
                }
            ]
        ),
    ),
    ("null in a primitive array (lenient)", _patient(name=[{"given": [None]}])),
    ("partner object", _patient(birthDate="1970", _birthDate={"id": "b"})),
    ("partner without its value", _patient(_gender={"extension": [{"url": "u"}]})),
    ("unknown elements are not ours", _patient(foo="x", bar=[1], _baz=3, nameX={"a": 1})),
    ("unknown resource type", {"resourceType": "NotAResource", "active": "yes"}),
    ("missing resource type", {"active": "yes"}),
    ("resource type that is not a string", {"resourceType": 5, "active": "yes"}),
    ("bundle entry with known resource", _bundle(_patient(active=True, birthDate="1970"))),
    ("not a dict", None),
    ("a list", []),
    ("a string", "Patient"),
]


@pytest.mark.parametrize(
    ("resource", "expected"),
    [case[1:] for case in MUST_FLAG],
    ids=[case[0] for case in MUST_FLAG],
)
def test_wrong_kinds_are_flagged(resource: dict[str, Any], expected: list[tuple[str, str]]) -> None:
    found = check_json_kinds(resource)
    assert [path for path, _ in found] == [path for path, _ in expected], found
    for (_, message), (_, prefix) in zip(found, expected, strict=True):
        assert message.startswith(prefix), message


@pytest.mark.parametrize("resource", [case[1] for case in MUST_PASS], ids=[c[0] for c in MUST_PASS])
def test_right_kinds_pass(resource: Any) -> None:
    assert check_json_kinds(resource) == []


def test_messages_name_what_was_given() -> None:
    found = dict(
        check_json_kinds(
            _patient(
                active="yes",
                multipleBirthInteger=DecimalLiteral("1.0"),
                gender=True,
                maritalStatus="married",
            )
        )
    )
    assert found == {
        "Patient.active": "must be a JSON boolean (true or false), not a string",
        "Patient.multipleBirthInteger": "must be a JSON integer, not a decimal number (1.0)",
        "Patient.gender": "must be a JSON string, not a boolean (true)",
        "Patient.maritalStatus": "must be a JSON object, not a string",
    }


def test_parsed_json_kinds() -> None:
    """Through jsonio.loads, 1.0 is a DecimalLiteral (wrong for an integer), 1 an int."""
    text = '{"resourceType": "Observation", "status": "final", "code": {}, "valueInteger": %s}'
    assert check_json_kinds(loads(text % "1")) == []
    assert [p for p, _ in check_json_kinds(loads(text % "1.0"))] == ["Observation.valueInteger"]
    assert [p for p, _ in check_json_kinds(loads(text % "true"))] == ["Observation.valueInteger"]
    assert [p for p, _ in check_json_kinds(loads(text % '"1"'))] == ["Observation.valueInteger"]


def test_absurdly_deep_nesting_does_not_raise() -> None:
    item: dict[str, Any] = {"linkId": 5}
    for depth in range(900):
        item = {"linkId": str(depth), "type": "group", "item": [item]}
    check_json_kinds({"resourceType": "Questionnaire", "status": "active", "item": [item]})


# --------------------------------------------------------------------------- official examples

EXAMPLE_TYPES = (
    *CORE_EXAMPLE_TYPES,
    "Bundle",
)

needs_examples = pytest.mark.skipif(
    not EXAMPLES_DIR.is_dir(),
    reason="official FHIR R4 examples unavailable (npm absent) "
    "(npm pack hl7.fhir.r4.examples@4.0.1)",
)


@needs_examples
def test_official_examples_have_no_kind_errors() -> None:
    files = sorted(p for t in EXAMPLE_TYPES for p in EXAMPLES_DIR.glob(f"{t}-*.json"))
    assert len(files) > 100
    failures: dict[str, list[tuple[str, str]]] = {}
    for path in files:
        resource = loads(path.read_bytes())
        assert resource["resourceType"] == path.name.split("-", 1)[0]
        errors = check_json_kinds(resource)
        if errors:
            failures[path.name] = errors
    assert failures == {}


@needs_examples
def test_kind_check_is_fast() -> None:
    """Budget is < 60 µs per call on Patient-example.json; assert a loose bound only."""
    resource = loads((EXAMPLES_DIR / "Patient-example.json").read_bytes())
    check_json_kinds(resource)  # build the tables outside the timing
    runs = 200
    start = time.perf_counter()
    for _ in range(runs):
        check_json_kinds(resource)
    per_call = (time.perf_counter() - start) / runs
    assert per_call < 1e-3


# --------------------------------------------------------------------------- summary.json


def _summary() -> dict[str, dict[str, list[str]]]:
    data: dict[str, dict[str, list[str]]] = json.loads(SUMMARY_JSON.read_text(encoding="utf-8"))
    return data


def test_summary_table() -> None:
    summary = _summary()
    assert set(summary) == set(resource_types())
    for resource_type, entry in summary.items():
        assert set(entry) == {"summary", "mandatory", "backbones"}, resource_type
        assert entry["summary"][:2] == ["id", "meta"], resource_type
        assert "resourceType" not in entry["summary"], resource_type

    patient = summary["Patient"]
    assert {"identifier", "name", "gender", "birthDate"} <= set(patient["summary"])
    assert "contact" not in patient["summary"]
    assert {"deceasedBoolean", "deceasedDateTime"} <= set(patient["summary"])
    assert "deceased[x]" not in patient["summary"]

    observation = summary["Observation"]
    assert {"status", "code"} <= set(observation["mandatory"])
    assert "valueQuantity" in observation["summary"]
    assert "note" not in observation["summary"]
    component = observation["backbones"]["Observation.component"]  # type: ignore[index]
    assert {"code", "valueQuantity", "modifierExtension"} <= set(component)
    assert not {"interpretation", "referenceRange", "extension"} & set(component)
    assert summary["Bundle"]["mandatory"] == ["type"]
    assert {"medicationCodeableConcept", "medicationReference"} <= set(
        summary["MedicationRequest"]["mandatory"]
    )


def test_stored_content_parses_for_lookups_even_beyond_a_double() -> None:
    """loads_stored (orjson, for looking into stored content) sees what loads sees; a number
    orjson refuses is handled by loads instead of failing the read."""
    from app.fhir.jsonio import loads_stored

    shape = '{"resourceType":"Observation","subject":{"reference":"Patient/%s"},"valueQuantity":%s}'
    stored = (shape % ("p1", '{"value":1.50}')).encode()
    parsed = loads_stored(stored)
    assert parsed["subject"] == {"reference": "Patient/p1"}
    assert parsed["valueQuantity"]["value"] == 1.5
    huge = (shape % ("p2", '{"value":1e400}')).encode()
    parsed = loads_stored(huge)
    assert parsed["subject"] == {"reference": "Patient/p2"}
    assert parsed["valueQuantity"]["value"] == Decimal("1e400")


@pytest.mark.parametrize(
    ("resource", "path"),
    [
        (_obs(valueString="a", valueQuantity={"value": 1}), "Observation.valueQuantity"),
        (
            _obs(effectiveDateTime="2020", effectivePeriod={"start": "2020"}),
            "Observation.effectivePeriod",
        ),
        (
            _patient(extension=[{"url": "http://e.org/x", "valueBoolean": True, "valueCode": "a"}]),
            "Patient.extension[0].valueCode",
        ),
        (  # a partner of another type is a second value too
            _patient(extension=[{"url": "http://e.org/x", "valueCode": "a", "_valueBoolean": {}}]),
            "Patient.extension[0]._valueBoolean",
        ),
        (  # a backbone element
            _obs(component=[{"code": {"text": "c"}, "valueString": "a", "valueBoolean": True}]),
            "Observation.component[0].valueBoolean",
        ),
        (  # inside a contained resource
            _obs(contained=[_patient(id="p", deceasedBoolean=True, deceasedDateTime="2020")]),
            "Observation.contained[0].deceasedDateTime",
        ),
        (  # an R4 open type the models do not know (Meta) beside another type
            {
                "resourceType": "StructureDefinition",
                "differential": {
                    "element": [{"path": "Patient", "fixedMeta": {}, "fixedBoolean": True}]
                },
            },
            "StructureDefinition.differential.element[0].fixedBoolean",
        ),
        (_bundle(_obs(valueInteger=1, valueString="1")), "Bundle.entry[0].resource.valueString"),
    ],
)
def test_two_types_of_one_choice_are_refused(resource: dict[str, Any], path: str) -> None:
    """R4 json.html: a choice element appears under one of its typed names only."""
    found = check_json_kinds(resource, resource_types())
    assert [p for p, m in found if m.startswith(SECOND_CHOICE)] == [path], found


def test_a_choice_with_its_own_partner_is_one_value() -> None:
    resource = _patient(
        extension=[{"url": "http://e.org/x", "valueCode": "a", "_valueCode": {"id": "c"}}],
        deceasedBoolean=False,
    )
    assert check_json_kinds(resource, resource_types()) == []
