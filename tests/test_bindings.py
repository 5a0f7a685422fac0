"""Required-binding checks against the generated FHIR R4 core tables."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from app.fhir.bindings import (
    BindingViolation,
    check_required_bindings,
    element_table,
    resource_types,
)
from tests.fhir_package import CORE_EXAMPLE_TYPES, examples_dir

VS = "http://hl7.org/fhir/ValueSet/"
EXAMPLES_DIR = examples_dir() or Path("/npm-absent/hl7.fhir.r4.examples")


def _obs(**extra: Any) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"text": "x"},
    }
    resource.update(extra)
    return resource


def _condition_status(coding: dict[str, Any]) -> dict[str, Any]:
    return {
        "resourceType": "Condition",
        "clinicalStatus": {"coding": [coding]},
        "subject": {"reference": "Patient/1"},
    }


CONDITION_CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"

VALID: list[tuple[str, dict[str, Any]]] = [
    ("observation status", _obs()),
    ("patient gender", {"resourceType": "Patient", "gender": "female"}),
    ("telecom fax", {"resourceType": "Patient", "telecom": [{"system": "fax", "value": "1"}]}),
    ("narrative", _obs(text={"status": "generated", "div": "<div>x</div>"})),
    ("bundle type", {"resourceType": "Bundle", "type": "collection"}),
    (
        "quantity comparator with Decimal",
        _obs(valueQuantity={"value": Decimal("1.50"), "comparator": "<="}),
    ),
    (
        "coding in the value set's system",
        _condition_status({"system": CONDITION_CLINICAL, "code": "active"}),
    ),
    ("coding without system", _condition_status({"code": "resolved"})),
    (
        "coding bound required but from a foreign system is not judged",
        _condition_status({"system": "http://snomed.info/sct", "code": "55561003"}),
    ),
    ("unknown resource type", {"resourceType": "NotAResource", "status": "whatever"}),
    ("missing resource type", {"status": "whatever"}),
    ("unexpected shape: name is a string", {"resourceType": "Patient", "name": "x"}),
    (
        "unexpected shapes everywhere",
        {
            "resourceType": "Patient",
            "name": [None, 3, "x", {"use": 7}, {"use": ["official"]}],
            "telecom": {"system": "pager2"},  # array given as object: shape, not binding
            "gender": ["girl"],
            "contained": ["x", {"resourceType": 5}, {"noType": True}],
            "text": "plain",
            "extension": [{"url": "u", "valueQuantity": "3"}],
        },
    ),
    ("extension with a valid value", _obs(extension=[{"url": "u", "valueCode": "anything"}])),
]

# (case id, resource, expected [(path, code, value set)])
INVALID: list[tuple[str, dict[str, Any], list[tuple[str, str, str]]]] = [
    (
        "observation status",
        _obs(status="not-a-status"),
        [("Observation.status", "not-a-status", VS + "observation-status")],
    ),
    (
        "patient gender",
        {"resourceType": "Patient", "gender": "girl"},
        [("Patient.gender", "girl", VS + "administrative-gender")],
    ),
    (
        "second name use",
        {"resourceType": "Patient", "name": [{"use": "official"}, {"use": "nick"}]},
        [("Patient.name[1].use", "nick", VS + "name-use")],
    ),
    (
        "bundle type",
        {"resourceType": "Bundle", "type": "pile"},
        [("Bundle.type", "pile", VS + "bundle-type")],
    ),
    (
        "resource inside a bundle entry",
        {
            "resourceType": "Bundle",
            "type": "collection",
            "entry": [{"resource": _obs(status="done")}],
        },
        [("Bundle.entry[0].resource.status", "done", VS + "observation-status")],
    ),
    (
        "contained resource",
        _obs(contained=[{"resourceType": "Observation", "status": "nope", "code": {}}]),
        [("Observation.contained[0].status", "nope", VS + "observation-status")],
    ),
    (
        "comparator in a component's valueQuantity",
        _obs(component=[{"code": {"text": "c"}, "valueQuantity": {"comparator": "<<"}}]),
        [
            (
                "Observation.component[0].valueQuantity.comparator",
                "<<",
                VS + "quantity-comparator",
            )
        ],
    ),
    (
        "telecom system",
        {"resourceType": "Patient", "telecom": [{"system": "pager2", "value": "1"}]},
        [("Patient.telecom[0].system", "pager2", VS + "contact-point-system")],
    ),
    (
        "narrative status",
        _obs(text={"status": "made-up", "div": "<div>x</div>"}),
        [("Observation.text.status", "made-up", VS + "narrative-status")],
    ),
    (
        "codeable concept coding in the bound system",
        _condition_status({"system": CONDITION_CLINICAL, "code": "dormant"}),
        [("Condition.clinicalStatus.coding[0].code", "dormant", VS + "condition-clinical")],
    ),
    (
        "codeable concept coding without system",
        _condition_status({"code": "dormant"}),
        [("Condition.clinicalStatus.coding[0].code", "dormant", VS + "condition-clinical")],
    ),
    (
        "comparator inside an extension value",
        _obs(extension=[{"url": "u", "valueQuantity": {"comparator": "~"}}]),
        [("Observation.extension[0].valueQuantity.comparator", "~", VS + "quantity-comparator")],
    ),
    (
        "comparator inside a primitive's extension",
        {
            "resourceType": "Patient",
            "_birthDate": {"extension": [{"url": "u", "valueAge": {"comparator": "="}}]},
        },
        [
            (
                "Patient._birthDate.extension[0].valueAge.comparator",
                "=",
                VS + "quantity-comparator",
            )
        ],
    ),
    (
        "several violations in document order",
        {
            "resourceType": "Patient",
            "gender": "girl",
            "contact": [{"gender": "boy", "name": {"use": "nick"}}],
        },
        [
            ("Patient.gender", "girl", VS + "administrative-gender"),
            ("Patient.contact[0].gender", "boy", VS + "administrative-gender"),
            ("Patient.contact[0].name.use", "nick", VS + "name-use"),
        ],
    ),
]


@pytest.mark.parametrize("resource", [case[1] for case in VALID], ids=[c[0] for c in VALID])
def test_valid_resources_have_no_violations(resource: dict[str, Any]) -> None:
    assert check_required_bindings(resource) == []


@pytest.mark.parametrize(
    ("resource", "expected"),
    [case[1:] for case in INVALID],
    ids=[case[0] for case in INVALID],
)
def test_invalid_codes_are_reported(
    resource: dict[str, Any], expected: list[tuple[str, str, str]]
) -> None:
    assert check_required_bindings(resource) == [BindingViolation(*e) for e in expected]


def test_non_dict_input_does_not_raise() -> None:
    odd_inputs: tuple[Any, ...] = (None, [], "Patient", 3)
    for value in odd_inputs:
        assert check_required_bindings(value) == []


def test_absurdly_deep_nesting_does_not_raise() -> None:
    item: dict[str, Any] = {"linkId": "leaf", "type": "bogus"}
    for depth in range(900):
        item = {"linkId": str(depth), "type": "group", "item": [item]}
    questionnaire = {"resourceType": "Questionnaire", "status": "active", "item": [item]}
    check_required_bindings(questionnaire)  # the leaf is past the depth guard: just no crash


def test_resource_types() -> None:
    types = resource_types()
    assert {"Patient", "Observation", "SupplyDelivery", "Bundle", "Parameters"} <= types
    assert len(types) >= 145
    assert not {"Element", "Resource", "DomainResource", "HumanName"} & types


def test_element_table_shape() -> None:
    table = element_table()
    inherited = ["id", "meta", "implicitRules", "language", "text", "contained", "extension"]
    assert [row[0] for row in table["Patient"][:7]] == inherited
    assert table["Patient"][0] == ["id", False, "id", None]
    assert ["contact", True, "Patient.contact", None] in table["Patient"]
    assert ["gender", False, "code", VS + "administrative-gender"] in table["Patient"]
    assert ["item", True, "Questionnaire.item", None] in table["Questionnaire.item"]
    assert ["resource", False, "Resource", None] in table["Bundle.entry"]
    assert ["div", False, "xhtml", None] in table["Narrative"]
    names = [row[0] for row in table["Observation"]]
    assert names.index("valueQuantity") < names.index("valueCodeableConcept")
    assert [row[0] for row in table["Age"]] == [row[0] for row in table["Quantity"]]
    # Attachment.contentType is bound to mimetypes (BCP 13): not expandable offline.
    assert ["contentType", False, "code", None] in table["Attachment"]


# --------------------------------------------------------------------------- official examples

EXAMPLE_TYPES = CORE_EXAMPLE_TYPES

# Official examples that genuinely break a required binding, with the reason. None do: every
# example of every resource type in the package passes (checked while building the tables).
KNOWN_INVALID_EXAMPLES: dict[str, str] = {}


def _example_files() -> list[Path]:
    if not EXAMPLES_DIR.is_dir():
        return []
    return sorted(p for t in EXAMPLE_TYPES for p in EXAMPLES_DIR.glob(f"{t}-*.json"))


@pytest.mark.skipif(
    not EXAMPLES_DIR.is_dir(),
    reason="official FHIR R4 examples unavailable (npm absent)",
)
def test_official_examples_have_no_violations() -> None:
    files = _example_files()
    assert len(files) > 100
    failures: dict[str, list[BindingViolation]] = {}
    for path in files:
        resource = json.loads(path.read_text(encoding="utf-8"))
        assert resource["resourceType"] == path.name.split("-", 1)[0]
        violations = check_required_bindings(resource)
        if violations and path.name not in KNOWN_INVALID_EXAMPLES:
            failures[path.name] = violations
    assert failures == {}
