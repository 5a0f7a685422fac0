"""R4 is judged as R4, although the structural models are R4B (fhir.resources).

R4B redesigned Evidence and EvidenceVariable, added a few elements (subjectCanonical,
Extension.valueRatioRange ...) and its Extension model has no "_valueX" partners: valid R4 must
be accepted, and what only R4B defines refused, with the element's path.
"""

from __future__ import annotations

import httpx
import pytest

from tests.helpers import FHIR_JSON, issue_paths, patient

# R4's Evidence (4.0.1 examples: Evidence-example.json); R4B requires variableDefinition instead.
R4_EVIDENCE = {
    "resourceType": "Evidence",
    "status": "draft",
    "shortTitle": "Treatment of AF",
    "exposureBackground": {"reference": "EvidenceVariable/example-stroke"},
    "exposureVariant": [{"reference": "EvidenceVariable/example-warfarin"}],
}
R4_EVIDENCE_VARIABLE = {
    "resourceType": "EvidenceVariable",
    "status": "draft",
    "type": "dichotomous",
    "characteristic": [
        {"definitionCodeableConcept": {"text": "stroke"}, "participantEffectiveDateTime": "2020"}
    ],
}
TRANSLATED = {
    "url": "http://hl7.org/fhir/StructureDefinition/codesystem-concept-comments",
    "valueString": "A comment",
    "_valueString": {
        "extension": [
            {
                "url": "http://hl7.org/fhir/StructureDefinition/translation",
                "extension": [
                    {"url": "lang", "valueCode": "nl"},
                    {"url": "content", "valueString": "Een opmerking"},
                ],
            }
        ]
    },
}


def created(client: httpx.Client, resource: dict) -> dict:
    response = client.post(f"/{resource['resourceType']}", json=resource, headers=FHIR_JSON)
    assert response.status_code == 201, response.text
    return response.json()


def refused_at(client: httpx.Client, resource: dict) -> list[str]:
    response = client.post(f"/{resource['resourceType']}", json=resource, headers=FHIR_JSON)
    assert response.status_code == 400, response.text
    return issue_paths(response.json())


@pytest.mark.parametrize(
    "resource", [R4_EVIDENCE, R4_EVIDENCE_VARIABLE], ids=lambda r: r["resourceType"]
)
def test_r4_evidence_resources_are_accepted(client: httpx.Client, resource: dict) -> None:
    body = created(client, resource)
    assert {k: body[k] for k in resource} == resource
    # ... contained, and in a transaction too
    link = [{"url": "http://example.org/evidence", "valueReference": {"reference": "#e"}}]
    created(client, patient(contained=[{**resource, "id": "e"}], extension=link))  # dom-3
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"resource": resource, "request": {"method": "POST", "url": resource["resourceType"]}}
        ],
    }
    response = client.post("/", json=bundle, headers=FHIR_JSON)
    assert response.status_code == 200, response.text


def test_r4b_redesigned_evidence_is_refused(client: httpx.Client) -> None:
    r4b = {"resourceType": "Evidence", "status": "draft", "variableDefinition": [{}]}
    assert "Evidence.variableDefinition" in refused_at(client, r4b)
    bad = {**R4_EVIDENCE, "status": "nonsense", "exposureBackground": {"nonsense": 1}}
    assert {"Evidence.status", "Evidence.exposureBackground.nonsense"} <= set(
        refused_at(client, bad)
    )


@pytest.mark.parametrize(
    ("resource", "path"),
    [
        (
            {"resourceType": "ActivityDefinition", "status": "draft", "subjectCanonical": "x"},
            "ActivityDefinition.subjectCanonical",
        ),
        (
            patient(
                extension=[
                    {"url": "http://x.org/e", "valueRatioRange": {"lowNumerator": {"value": 1}}}
                ]
            ),
            "Patient.extension[0].valueRatioRange",
        ),
    ],
)
def test_elements_only_r4b_defines_are_refused(
    client: httpx.Client, resource: dict, path: str
) -> None:
    assert path in refused_at(client, resource)


def test_extension_values_may_carry_extensions(client: httpx.Client) -> None:
    resource = {
        "resourceType": "CodeSystem",
        "status": "draft",
        "content": "complete",
        "concept": [{"code": "a", "extension": [TRANSLATED]}],
        "extension": [TRANSLATED],
    }
    body = created(client, resource)
    assert body["concept"] == resource["concept"] and body["extension"] == resource["extension"]
    xml = client.get(f"/CodeSystem/{body['id']}", headers={"Accept": "application/fhir+xml"})
    assert "Een opmerking" in xml.text


def test_extension_value_partners_are_still_checked(client: httpx.Client) -> None:
    partner = {"id": 7, "extension": [{"valueCode": "nl"}], "nonsense": True}
    ext = {"url": "http://x.org/e", "valueString": "a", "_valueString": partner}
    paths = set(refused_at(client, patient(modifierExtension=[{**ext}], extension=[ext])))
    for root in ("Patient.extension[0]", "Patient.modifierExtension[0]"):
        assert {
            f"{root}._valueString.id",
            f"{root}._valueString.nonsense",
            f"{root}._valueString.extension[0].url",
        } <= paths, paths


def test_code_regex_spaces_are_xml_schema_spaces(client: httpx.Client) -> None:
    """FHIR's code regex [^\\s]+(\\s[^\\s]+)* is XML Schema's: a no-break space is not a space
    there (official example CodeSystem-v2-0550 has "CHEST\u00a0"); real spaces still count."""
    system = {"resourceType": "CodeSystem", "status": "draft", "content": "complete"}
    body = created(client, {**system, "concept": [{"code": "CHEST\u00a0"}]})
    assert body["concept"] == [{"code": "CHEST\u00a0"}]
    for bad in ("a  b", " a", "a\t"):
        assert "CodeSystem.concept[0].code" in refused_at(
            client, {**system, "concept": [{"code": bad}]}
        )


def _structure_definition(element: dict) -> dict:
    # sdf-21: default values only in a specialization
    derivation = "specialization" if "defaultValueMeta" in element else "constraint"
    return {
        "resourceType": "StructureDefinition",
        "url": "http://example.org/StructureDefinition/p",
        "name": "P",
        "status": "draft",
        "kind": "resource",
        "abstract": False,
        "type": "Patient",
        "baseDefinition": "http://hl7.org/fhir/StructureDefinition/Patient",
        "derivation": derivation,
        "differential": {"element": [{"id": "Patient.meta", "path": "Patient.meta", **element}]},
    }


META = {"profile": ["http://example.org/StructureDefinition/q"], "tag": [{"code": "t"}]}


@pytest.mark.parametrize(
    "element",
    [
        {"fixedMeta": META},
        {"patternMeta": META},
        {"defaultValueMeta": META},
        {"example": [{"label": "e", "valueMeta": META}]},
    ],
    ids=["fixed", "pattern", "defaultValue", "example"],
)
def test_meta_in_open_types_is_accepted_and_judged_as_meta(
    client: httpx.Client, element: dict
) -> None:
    """R4's open types include Meta (R4B's do not): fixedMeta, patternMeta,
    defaultValueMeta, example.valueMeta and Extension.valueMeta are valid R4, and a Meta
    there is judged as one."""
    created(client, _structure_definition(element))
    key = next(iter(element))
    bad_meta = {"lastUpdated": "yesterday"}
    if key == "example":
        bad = {"example": [{"label": "e", "valueMeta": bad_meta}]}
        path = "StructureDefinition.differential.element[0].example[0].valueMeta.lastUpdated"
    else:
        bad = {key: bad_meta}
        path = f"StructureDefinition.differential.element[0].{key}.lastUpdated"
    assert path in refused_at(client, _structure_definition(bad))


def test_extension_value_meta_is_accepted(client: httpx.Client) -> None:
    extension = [{"url": "http://example.org/m", "valueMeta": META}]
    assert created(client, patient(extension=extension))["extension"] == extension
    # where R4 has no such element it is still unknown
    assert "Patient.name[0].valueMeta" in refused_at(
        client, patient(name=[{"family": "x", "valueMeta": META}])
    )
