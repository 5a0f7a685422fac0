"""The invariants of the R4 definitions (app/fhir/constraints.py, from the generated
constraints.json): a resource that breaks one is a 400 OperationOutcome naming the element,
the invariant's key and its text; what they allow is accepted; and no official R4 example
breaks one."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from app.errors import ResourceInvalid
from app.fhir import constraints
from app.fhir.jsonio import loads
from app.fhir.validation import known_resource_types, validate_resource
from tests.fhir_package import require_examples_dir
from tests.helpers import FHIR_JSON, observation, patient

ABSENT = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/data-absent-reason"}]}
PERIOD_BACKWARDS = {"start": "2021-03-02", "end": "2021-03-01"}
CONTAINED = {"resourceType": "Patient", "id": "p1", "contact": [{"gender": "male"}]}


def _tx(*resources: dict[str, Any]) -> dict[str, Any]:
    entries = [
        {"resource": r, "request": {"method": "POST", "url": r["resourceType"]}} for r in resources
    ]
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


BROKEN: list[tuple[str, dict[str, Any], str, str]] = [
    # (url, body, element path, key)
    ("/Observation", observation(dataAbsentReason=ABSENT), "Observation", "obs-6"),
    (
        "/Observation",
        observation(component=[{"code": observation()["code"], "valueString": "x"}]),
        "Observation",
        "obs-7",
    ),
    ("/Patient", patient(contact=[{"gender": "male"}]), "Patient.contact[0]", "pat-1"),
    (
        "/Encounter",
        {
            "resourceType": "Encounter",
            "status": "planned",
            "class": {"code": "AMB"},
            "period": PERIOD_BACKWARDS,
        },
        "Encounter.period",
        "per-1",
    ),
    (
        "/Observation",
        observation(valueQuantity={"value": 1, "code": "mm"}),
        "Observation.valueQuantity",
        "qty-3",
    ),
    (
        "/DocumentReference",
        {
            "resourceType": "DocumentReference",
            "status": "current",
            "content": [{"attachment": {"data": "aGVsbG8="}}],
        },
        "DocumentReference.content[0].attachment",
        "att-1",
    ),
    (
        "/MedicationRequest",
        {
            "resourceType": "MedicationRequest",
            "status": "active",
            "intent": "order",
            "medicationCodeableConcept": {"text": "x"},
            "subject": {"reference": "Patient/1"},
            "dosageInstruction": [{"timing": {"repeat": {"duration": 1}}}],
        },
        "MedicationRequest.dosageInstruction[0].timing.repeat",
        "tim-1",
    ),
    (
        "/Observation",
        observation(
            valueQuantity=None,
            valueRange={"low": {"value": 5, "unit": "mg"}, "high": {"value": 3, "unit": "mg"}},
        ),
        "Observation.valueRange",
        "rng-2",
    ),
    (
        "/Bundle",
        {
            "resourceType": "Bundle",
            "type": "document",
            "identifier": {"system": "urn:ietf:rfc:3986", "value": "urn:uuid:1"},
            "timestamp": "2021-03-01T10:00:00Z",
            "entry": [{"fullUrl": "urn:uuid:2", "resource": patient()}],
        },
        "Bundle",
        "bdl-11",
    ),
    (  # select(): two resources of one type in a rest mode
        "/CapabilityStatement",
        {
            "resourceType": "CapabilityStatement",
            "status": "draft",
            "date": "2021-03-01",
            "kind": "instance",
            "implementation": {"description": "here"},
            "fhirVersion": "4.0.1",
            "format": ["json"],
            "rest": [{"mode": "server", "resource": [{"type": "Patient"}, {"type": "Patient"}]}],
        },
        "CapabilityStatement.rest[0]",
        "cpb-9",
    ),
    (  # trace() in the expression: a group with no items
        "/Questionnaire",
        {
            "resourceType": "Questionnaire",
            "status": "draft",
            "item": [{"linkId": "1", "type": "group"}],
        },
        "Questionnaire.item[0]",
        "que-1",
    ),
    # inside a contained resource, and inside a transaction's entry
    (
        "/Observation",
        observation(contained=[CONTAINED], subject={"reference": "#p1"}),
        "Observation.contained[0].contact[0]",
        "pat-1",
    ),
    (
        "",
        _tx(patient(), observation(dataAbsentReason=ABSENT)),
        "Bundle.entry[1].resource",
        "obs-6",
    ),
]


@pytest.mark.parametrize(("url", "body", "path", "key"), BROKEN, ids=[b[3] for b in BROKEN])
def test_a_broken_invariant_is_refused_naming_it(
    client: httpx.Client, url: str, body: dict[str, Any], path: str, key: str
) -> None:
    body = {k: v for k, v in body.items() if v is not None}
    response = client.post(url, json=body, headers=FHIR_JSON)
    assert response.status_code == 400, response.text
    found = [i for i in response.json()["issue"] if i["diagnostics"].endswith(f"({key})")]
    assert len(found) == 1, response.text
    assert found[0]["code"] == "invariant"
    assert found[0]["expression"] == [path]
    human = next(r[1] for rows in _rows().values() for r in rows if r[0] == key)
    # a transaction names the entry its own way before the resource's path
    assert found[0]["diagnostics"].endswith(f": {human} ({key})")


def test_what_the_invariants_allow_is_accepted(client: httpx.Client) -> None:
    accepted = [
        observation(),  # obs-6: a value and no dataAbsentReason
        observation(valueQuantity=None, dataAbsentReason=ABSENT),
        patient(contact=[{"name": {"family": "Doe"}}]),  # pat-1
        # per-1: dates of different precision that agree as far as both go are not ordered
        {
            "resourceType": "Encounter",
            "status": "planned",
            "class": {"code": "AMB"},
            "period": {"start": "2021-03", "end": "2021-03-01"},
        },
        observation(
            valueQuantity={"value": 1, "code": "mm", "system": "http://unitsofmeasure.org"}
        ),
    ]
    for body in accepted:
        body = {k: v for k, v in body.items() if v is not None}
        response = client.post(f"/{body['resourceType']}", json=body, headers=FHIR_JSON)
        assert response.status_code == 201, response.text


def test_every_constraint_is_checked_or_says_why_not() -> None:
    table = constraints.table()
    keys = {r[0] for rows in _rows().values() for r in rows}
    checked = {c.key for rows in table.checked.values() for c in rows}
    assert checked | set(table.unchecked) == keys
    assert not checked & set(table.unchecked)
    assert len(checked) >= 175
    assert all(table.unchecked.values())
    # the invariants a demanding client asks for first
    wanted = {"obs-6", "obs-7", "pat-1", "per-1", "qty-3", "att-1", "bdl-1", "tim-1", "rng-2"}
    wanted |= {"cpb-9", "que-1", "eld-3", "sdf-1"}
    assert wanted <= checked


def test_no_official_example_breaks_an_invariant() -> None:
    directory = require_examples_dir()
    types = known_resource_types()
    broken: dict[str, list[str]] = {}
    count = 0
    for path in sorted(directory.glob("*.json")):
        resource = loads(path.read_bytes())
        if not isinstance(resource, dict) or resource.get("resourceType") not in types:
            continue
        count += 1
        try:
            validate_resource(resource)
        except ResourceInvalid as exc:
            table_keys = {r[0] for rows in _rows().values() for r in rows}
            invariants = [
                i.diagnostics
                for i in exc.issues
                if i.code == "invariant"
                and i.diagnostics.rsplit("(", 1)[-1][:-1] in table_keys
                and not i.diagnostics.endswith("(txt-2)")  # a few examples have empty divs
            ]
            if invariants:
                broken[path.name] = invariants
    assert count > 5000
    assert broken == {}


def _rows() -> dict[str, list[list[Any]]]:
    from app.fhir.element_tables import _data_dir

    rows: dict[str, list[list[Any]]] = json.loads(
        (_data_dir() / "constraints.json").read_text(encoding="utf-8")
    )
    return rows
