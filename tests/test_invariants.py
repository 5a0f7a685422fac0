"""Invariants of the R4 base types that need the elements' types (app/fhir/invariants.py):
dom-2..dom-5 on contained resources, ref-1 on local references, cpt-2 on ContactPoints.
Each refusal is a 400 OperationOutcome naming the element and the invariant."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.helpers import FHIR_JSON, observation, patient

CONTAINED_PATIENT = {"resourceType": "Patient", "id": "p1", "gender": "male"}


def _refused(client: httpx.Client, resource: dict[str, Any]) -> dict[str, Any]:
    response = client.post(f"/{resource['resourceType']}", json=resource, headers=FHIR_JSON)
    assert response.status_code == 400, response.text
    return response.json()


@pytest.mark.parametrize(
    ("resource", "path", "key"),
    [
        (patient(telecom=[{"value": "555-1234", "use": "home"}]), "Patient.telecom[0]", "cpt-2"),
        (
            patient(
                contact=[{"telecom": [{"system": "phone", "value": "1"}, {"value": "2"}]}],
            ),
            "Patient.contact[0].telecom[1]",
            "cpt-2",
        ),
        (
            patient(extension=[{"url": "http://e.org/x", "valueContactPoint": {"value": "3"}}]),
            "Patient.extension[0].valueContactPoint",
            "cpt-2",
        ),
        (observation(subject={"reference": "#p1"}), "Observation.subject.reference", "ref-1"),
        (
            observation(contained=[CONTAINED_PATIENT], subject={"reference": "#p2"}),
            "Observation.subject.reference",
            "ref-1",
        ),
        (
            observation(
                contained=[{**CONTAINED_PATIENT, "contained": [{"resourceType": "Patient"}]}],
                subject={"reference": "#p1"},
            ),
            "Observation.contained[0].contained",
            "dom-2",
        ),
        (observation(contained=[CONTAINED_PATIENT]), "Observation.contained[0]", "dom-3"),
        (
            observation(
                contained=[{**CONTAINED_PATIENT, "meta": {"versionId": "3"}}],
                subject={"reference": "#p1"},
            ),
            "Observation.contained[0].meta.versionId",
            "dom-4",
        ),
        (
            observation(
                contained=[{**CONTAINED_PATIENT, "meta": {"security": [{"code": "R"}]}}],
                subject={"reference": "#p1"},
            ),
            "Observation.contained[0].meta.security",
            "dom-5",
        ),
    ],
)
def test_invariant_is_enforced_with_the_element_path(
    client: httpx.Client, resource: dict[str, Any], path: str, key: str
) -> None:
    issues = _refused(client, resource)["issue"]
    found = [i for i in issues if i["expression"] == [path]]
    assert len(found) == 1, issues
    assert found[0]["code"] == "invariant"
    assert found[0]["diagnostics"].startswith(path)
    assert found[0]["diagnostics"].endswith(f"({key})")


def test_what_the_invariants_allow_is_accepted(client: httpx.Client) -> None:
    accepted = [
        # a local reference that resolves
        observation(contained=[CONTAINED_PATIENT], subject={"reference": "#p1"}),
        # a contained resource referring to its container (dom-3's other way; ref-1's '#')
        observation(
            contained=[
                {**CONTAINED_PATIENT, "link": [{"other": {"reference": "#"}, "type": "seealso"}]}
            ],
        ),
        # an Identifier without a system is no ContactPoint; a ContactPoint without a value
        # needs none
        patient(identifier=[{"value": "123"}], telecom=[{"use": "home", "rank": 1}]),
        # a data-absent system counts as one
        patient(
            telecom=[
                {
                    "value": "x",
                    "_system": {
                        "extension": [
                            {
                                "url": "http://hl7.org/fhir/StructureDefinition/data-absent-reason",
                                "valueCode": "unknown",
                            }
                        ]
                    },
                }
            ]
        ),
    ]
    for resource in accepted:
        response = client.post(f"/{resource['resourceType']}", json=resource, headers=FHIR_JSON)
        assert response.status_code == 201, response.text


def test_each_bundle_entry_is_its_own_root_resource(client: httpx.Client) -> None:
    """ref-1's %rootResource is the entry's resource: a local reference in one entry does not
    resolve to another entry's contained resource, and errors name the entry."""
    good = observation(contained=[CONTAINED_PATIENT], subject={"reference": "#p1"})
    bad = observation(subject={"reference": "#p1"})
    entries = [
        {"resource": r, "request": {"method": "POST", "url": "Observation"}} for r in (good, bad)
    ]
    tx = {"resourceType": "Bundle", "type": "transaction", "entry": entries}
    response = client.post("", json=tx, headers=FHIR_JSON)
    assert response.status_code == 400, response.text
    paths = [i["expression"] for i in response.json()["issue"]]
    assert paths == [["Bundle.entry[1].resource.subject.reference"]]
    tx["entry"] = entries[:1]
    assert client.post("", json=tx, headers=FHIR_JSON).status_code == 200
