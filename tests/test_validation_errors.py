"""Bad input gets an OperationOutcome with the right status and the element's path."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from tests.helpers import FHIR_JSON, headers_only_post, issue_paths, observation, patient


def post(client: httpx.Client, path: str, content: bytes | str, **headers: str) -> httpx.Response:
    return client.post(path, content=content, headers={**FHIR_JSON, **headers})


def assert_outcome(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["resourceType"] == "OperationOutcome"
    assert body["issue"] and all(i["severity"] in ("error", "fatal") for i in body["issue"])
    return body


def test_invalid_json_is_400(client: httpx.Client) -> None:
    body = assert_outcome(post(client, "/Patient", b'{"resourceType": "Patient",'), 400)
    assert "JSON" in body["issue"][0]["diagnostics"]


@pytest.mark.parametrize("number", ["1e99999999999999999999", "-1E-99999999999999999999"])
def test_a_number_whose_exponent_no_decimal_holds_is_400(client: httpx.Client, number: str) -> None:
    """Python's Decimal refuses exponents past 999999 (decimal.InvalidOperation): that is
    bad input, not a server error."""
    body = (
        '{"resourceType": "Patient", "extension": [{"url": "http://x.org/e", "valueDecimal": %s}]}'
    )
    for send in (
        lambda: client.post("/Patient", content=body % number, headers=FHIR_JSON),
        lambda: client.post(
            "",
            content='{"resourceType": "Bundle", "type": "batch", "entry": [{"resource": %s, '
            '"request": {"method": "POST", "url": "Patient"}}]}' % (body % number),
            headers=FHIR_JSON,
        ),
    ):
        response = send()
        assert response.status_code == 400, response.text
        outcome = response.json()
        assert outcome["resourceType"] == "OperationOutcome"
        assert "exponent" in outcome["issue"][0]["diagnostics"]


@pytest.mark.parametrize(
    "where",
    [
        '{"resourceType": "Patient", "name": [{"family": "A\\ud800"}]}',  # a lone high half
        '{"resourceType": "Patient", "name": [{"family": "\\udc00B"}]}',  # a lone low half
        '{"resourceType": "\\ud800"}',
        '{"resourceType": "Patient", "\\udfff": 1}',  # in a property name
    ],
)
def test_an_unpaired_surrogate_escape_is_400(client: httpx.Client, where: str) -> None:
    """JSON's grammar lets `\\ud800` stand alone, but it is no Unicode character: it cannot be
    stored as UTF-8 nor written back. It was a 500 (orjson refused the error's own text)."""
    body = assert_outcome(post(client, "/Patient", where), 400)
    assert "surrogate" in body["issue"][0]["diagnostics"]
    patch = '[{"op": "add", "path": "/\\ud800", "value": "x"}]'
    made = client.post("/Patient", json=patient(), headers=FHIR_JSON).json()
    patched = client.patch(
        f"/Patient/{made['id']}",
        content=patch,
        headers={"Content-Type": "application/json-patch+json"},
    )
    assert_outcome(patched, 400)


def test_a_surrogate_pair_escape_is_one_character(client: httpx.Client) -> None:
    body = '{"resourceType": "Patient", "name": [{"family": "A\\ud83d\\ude00"}]}'
    made = post(client, "/Patient", body)
    assert made.status_code == 201, made.text
    assert made.json()["name"][0]["family"] == "A\U0001f600"


def test_an_integer_of_thousands_of_digits_is_refused_not_a_crash(client: httpx.Client) -> None:
    """Python refuses int() of more than 4,300 digits (ValueError): that was a 500."""
    huge = "1" + "0" * 5000
    body = '{"resourceType": "Patient", "multipleBirthInteger": ' + huge + "}"
    outcome = assert_outcome(post(client, "/Patient", body), 400)
    assert "Patient.multipleBirthInteger" in issue_paths(outcome)
    where = '{"resourceType": "Patient", "extension": [{"url": "http://x.org/e", "value": %s}]}'
    assert_outcome(post(client, "/Patient", where % huge), 400)


@pytest.mark.parametrize("partner", ['"2024"', '"1e400"', "1.5", '"text"', "[1]"])
def test_a_primitive_partner_that_is_not_an_object_is_named(
    client: httpx.Client, partner: str
) -> None:
    """`_birthDate` holds the value's id and extensions; fhir.resources read a number there
    as an object and raised AttributeError (a 500)."""
    body = '{"resourceType": "Patient", "birthDate": "1970-01-01", "_birthDate": ' + partner + "}"
    outcome = assert_outcome(post(client, "/Patient", body), 400)
    assert "Patient._birthDate" in issue_paths(outcome), outcome


def test_non_utf8_body_is_400(client: httpx.Client) -> None:
    assert_outcome(post(client, "/Patient", b'{"resourceType": "Patient", "id": "\xff"}'), 400)


def test_wrong_resource_type_for_endpoint(client: httpx.Client) -> None:
    body = assert_outcome(client.post("/Patient", json=observation(), headers=FHIR_JSON), 400)
    assert "resourceType" in issue_paths(body)


def test_unknown_resource_type_in_body(client: httpx.Client) -> None:
    assert_outcome(client.post("/Patient", json={"resourceType": "Nope"}, headers=FHIR_JSON), 400)


def test_missing_required_element_names_path(client: httpx.Client) -> None:
    obs = observation()
    del obs["code"]
    body = assert_outcome(client.post("/Observation", json=obs, headers=FHIR_JSON), 400)
    assert "Observation.code" in issue_paths(body)
    assert any(i["code"] == "required" for i in body["issue"])


@pytest.mark.parametrize(
    ("resource", "path"),
    [
        (patient(birthDate="1970-13-45"), "Patient.birthDate"),
        (patient(active="yes"), "Patient.active"),
        (patient(name=[{"given": "Ada"}]), "Patient.name[0].given"),
        (patient(multipleBirthInteger=1.5), "Patient.multipleBirthInteger"),
        (patient(unknownElement=1), "Patient.unknownElement"),
        (patient(name=[{"family": "Nul\u0000l"}]), "Patient.name[0].family"),
        (patient(gender="male", name=[{"text": "bell\u0007"}]), "Patient.name[0].text"),
    ],
)
def test_bad_datatype_names_path(client: httpx.Client, resource: dict, path: str) -> None:
    body = assert_outcome(client.post("/Patient", json=resource, headers=FHIR_JSON), 400)
    assert path in issue_paths(body), body


# R4 datatypes.html: integer is 32 bits, unsignedInt 0.., positiveInt 1.. (up to 2^31-1).
# The fhir.resources models check these ranges (validation.py step 1); this pins both ends,
# as FHIRPath's toInteger() (32-bit) relies on stored integers being in range.
@pytest.mark.parametrize(
    ("literal", "element", "path", "bound"),
    [
        ("2147483648", "multipleBirthInteger", "Patient.multipleBirthInteger", "2147483647"),
        ("-2147483649", "multipleBirthInteger", "Patient.multipleBirthInteger", "-2147483648"),
        ("0", "telecom", "Patient.telecom[0].rank", "1"),
        ("-0", "telecom", "Patient.telecom[0].rank", "1"),
        ("-1", "photo", "Patient.photo[0].size", "0"),
        ("2147483648", "photo", "Patient.photo[0].size", "2147483647"),
    ],
)
def test_an_integer_outside_its_range_is_refused_naming_it(
    client: httpx.Client, literal: str, element: str, path: str, bound: str
) -> None:
    values = {
        "multipleBirthInteger": "INT",
        "telecom": [{"system": "phone", "value": "555", "rank": "INT"}],
        "photo": [{"contentType": "image/png", "size": "INT"}],
    }

    def body(number: str) -> str:
        return json.dumps(patient(**{element: values[element]})).replace('"INT"', number)

    refused = assert_outcome(post(client, "/Patient", body(literal)), 400)
    (issue,) = [i for i in refused["issue"] if i.get("expression") == [path]]
    assert issue["diagnostics"].endswith(f" {bound}"), issue
    accepted = post(client, "/Patient", body(bound))  # the end of the range itself is valid
    assert accepted.status_code == 201, accepted.text


def test_control_characters_in_property_names_are_named(client: httpx.Client) -> None:
    resource = patient(**{"na\u0001me": [{"family": "X"}]})
    body = assert_outcome(client.post("/Patient", json=resource, headers=FHIR_JSON), 400)
    control = [i for i in body["issue"] if "control characters" in i["diagnostics"]]
    # Named in a form a FHIR string (and XML) can hold: the character as a visible escape.
    assert [i["expression"] for i in control] == [["Patient.na\\u0001me"]], body


@pytest.mark.parametrize(
    ("resource", "path"),
    [
        (observation(status="not-a-status"), "Observation.status"),
        (patient(gender="girl"), "Patient.gender"),
        (patient(name=[{"family": "X", "use": "nickname-ish"}]), "Patient.name[0].use"),
    ],
)
def test_required_binding_outside_value_set_is_refused(
    client: httpx.Client, resource: dict, path: str
) -> None:
    body = assert_outcome(
        client.post(f"/{resource['resourceType']}", json=resource, headers=FHIR_JSON), 400
    )
    assert path in issue_paths(body)
    assert any(i["code"] == "code-invalid" for i in body["issue"])


def test_bad_bundle_type_is_refused(client: httpx.Client) -> None:
    bundle = {"resourceType": "Bundle", "type": "not-a-type"}
    body = assert_outcome(client.post("/Bundle", json=bundle, headers=FHIR_JSON), 400)
    assert "Bundle.type" in issue_paths(body)


def test_invalid_id_in_url(client: httpx.Client) -> None:
    resource = patient(id="bad_id!")
    assert_outcome(client.put("/Patient/bad_id!", json=resource, headers=FHIR_JSON), 400)


def test_unsupported_media_type_is_415(client: httpx.Client) -> None:
    response = client.post("/Patient", content=b"hello", headers={"Content-Type": "text/plain"})
    assert_outcome(response, 415)


def test_unknown_format_is_406(client: httpx.Client) -> None:
    assert_outcome(client.get("/metadata", params={"_format": "text/csv"}), 406)


def test_fhir_version_other_than_r4_is_refused(client: httpx.Client) -> None:
    """The fhirVersion media type parameter (R4 versioning.html): 4.0 and 4.0.1 are served,
    another version is 406 (Accept, _format) or 415 (Content-Type), not answered as R4."""
    for version in ("4.0", "4.0.1"):
        media = f"application/fhir+json; fhirVersion={version}"
        created = post(client, "/Patient", '{"resourceType": "Patient"}', **{"Content-Type": media})
        assert created.status_code == 201, created.text
        assert client.get("/metadata", headers={"Accept": media}).status_code == 200
    stu3 = "application/fhir+json; fhirVersion=3.0"
    assert_outcome(client.get("/metadata", headers={"Accept": stu3}), 406)
    assert_outcome(client.get("/metadata", params={"_format": stu3}), 406)
    both = f"{stu3}, application/fhir+xml; fhirVersion=4.0; q=0.5"
    assert (
        client.get("/metadata", headers={"Accept": both})
        .headers["content-type"]
        .startswith("application/fhir+xml")
    )
    body = '{"resourceType": "Patient"}'
    assert_outcome(post(client, "/Patient", body, **{"Content-Type": stu3}), 415)


@pytest.mark.parametrize(
    ("resource", "path"),
    [
        ({"resourceType": "Binary", "contentType": "text/plain", "data": "!!!"}, "Binary.data"),
        (patient(photo=[{"data": "aGVs*G8="}]), "Patient.photo[0].data"),
        (
            patient(extension=[{"url": "http://x.org/e", "valueBase64Binary": "a b c"}]),
            "Patient.extension[0].valueBase64Binary",
        ),
    ],
)
def test_base64_that_is_not_is_refused(client: httpx.Client, resource: dict, path: str) -> None:
    """The R4 base64Binary regex (with "/"): the models decode leniently and let "!!!" in."""
    body = assert_outcome(post(client, f"/{resource['resourceType']}", json.dumps(resource)), 400)
    assert path in issue_paths(body)
    fine = {"resourceType": "Binary", "contentType": "text/plain", "data": "aGVs bG8/\r\n+A=="}
    assert post(client, "/Binary", json.dumps(fine)).status_code == 201


def test_unknown_endpoint_outside_fhir_is_outcome(client: httpx.Client, base_url: str) -> None:
    response = httpx.get(base_url.replace("/fhir", "/nothing-here"))
    assert_outcome(response, 404)


def test_method_not_allowed_is_outcome(client: httpx.Client) -> None:
    assert_outcome(client.delete("/metadata"), 405)
    assert_outcome(client.put("/Patient", json=patient(), headers=FHIR_JSON), 405)


def test_errors_in_xml_when_asked(client: httpx.Client) -> None:
    response = client.get("/Patient/nope", headers={"Accept": "application/fhir+xml"})
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("application/fhir+xml")
    assert b"<OperationOutcome" in response.content


def test_tab_cr_lf_are_allowed_in_strings(client: httpx.Client) -> None:
    response = client.post(
        "/Patient", json=patient(name=[{"text": "a\tb\r\nc"}]), headers=FHIR_JSON
    )
    assert response.status_code == 201, response.text


# The R4 types R4B dropped: fhir.resources has no model for them, the table checks apply.
R4_ONLY_TYPES = [
    "EffectEvidenceSynthesis",
    "RiskEvidenceSynthesis",
    "MedicinalProduct",
    "MedicinalProductAuthorization",
    "MedicinalProductContraindication",
    "MedicinalProductIndication",
    "MedicinalProductIngredient",
    "MedicinalProductInteraction",
    "MedicinalProductManufactured",
    "MedicinalProductPackaged",
    "MedicinalProductPharmaceutical",
    "MedicinalProductUndesirableEffect",
    "SubstanceNucleicAcid",
    "SubstancePolymer",
    "SubstanceProtein",
    "SubstanceReferenceInformation",
    "SubstanceSourceMaterial",
    "SubstanceSpecification",
]


_REF = {"reference": "Group/g"}
_CONCEPT = {"text": "x"}
# The required elements (min 1) of the R4-only types that have any (required.json).
R4_ONLY_REQUIRED: dict[str, dict] = {
    "EffectEvidenceSynthesis": {
        "status": "draft",
        "population": _REF,
        "exposure": _REF,
        "exposureAlternative": _REF,
        "outcome": _REF,
    },
    "RiskEvidenceSynthesis": {"status": "draft", "population": _REF, "outcome": _REF},
    "MedicinalProduct": {"name": [{"productName": "x"}]},
    "MedicinalProductIngredient": {"role": _CONCEPT},
    "MedicinalProductManufactured": {"manufacturedDoseForm": _CONCEPT, "quantity": {"value": 1}},
    "MedicinalProductPackaged": {"packageItem": [{"type": _CONCEPT, "quantity": {"value": 1}}]},
    "MedicinalProductPharmaceutical": {
        "administrableDoseForm": _CONCEPT,
        "routeOfAdministration": [{"code": _CONCEPT}],
    },
}


@pytest.mark.parametrize("rtype", R4_ONLY_TYPES)
def test_r4_only_types_are_created_and_updated(client: httpx.Client, rtype: str) -> None:
    body = {"resourceType": rtype, **R4_ONLY_REQUIRED.get(rtype, {})}
    created = client.post(f"/{rtype}", json=body, headers=FHIR_JSON)
    assert created.status_code == 201, created.text
    rid = created.json()["id"]
    updated = client.put(f"/{rtype}/{rid}", json={**body, "id": rid}, headers=FHIR_JSON)
    assert updated.status_code == 200, updated.text
    assert client.get(f"/{rtype}/{rid}").json()["meta"]["versionId"] == "2"


def test_r4_only_types_get_their_required_elements_checked(client: httpx.Client) -> None:
    """No R4B model checks the R4-only types: their required elements (min 1) come from
    required.json, in the resource, its backbone elements and its datatypes, wherever the
    resource sits (alone, contained, in a Bundle entry)."""
    rtype = "MedicinalProductPackaged"
    missing = {"resourceType": rtype, "packageItem": [{"type": _CONCEPT}]}
    body = assert_outcome(client.post(f"/{rtype}", json=missing, headers=FHIR_JSON), 400)
    assert [(i["code"], i["expression"]) for i in body["issue"]] == [
        ("required", [f"{rtype}.packageItem[0].quantity"])
    ]
    empty = {"resourceType": "EvidenceVariable", "status": "draft", "characteristic": [{}]}
    body = assert_outcome(client.post("/EvidenceVariable", json=empty, headers=FHIR_JSON), 400)
    assert "EvidenceVariable.characteristic[0].definition[x]" in issue_paths(body)
    # a datatype inside one: Extension.url
    no_url = {"resourceType": "SubstanceProtein", "extension": [{"valueString": "x"}]}
    body = assert_outcome(client.post("/SubstanceProtein", json=no_url, headers=FHIR_JSON), 400)
    assert "SubstanceProtein.extension[0].url" in issue_paths(body)
    # contained in an R4B resource, and in a Bundle entry
    nested = {"resourceType": "RiskEvidenceSynthesis", "id": "e", "status": "draft"}
    link = [{"url": "http://example.org/evidence", "valueReference": {"reference": "#e"}}]
    resource = patient(contained=[nested], extension=link)
    body = assert_outcome(client.post("/Patient", json=resource, headers=FHIR_JSON), 400)
    assert {"Patient.contained[0].population", "Patient.contained[0].outcome"} == set(
        issue_paths(body)
    )
    entry = {"resource": nested, "request": {"method": "POST", "url": "RiskEvidenceSynthesis"}}
    tx = {"resourceType": "Bundle", "type": "transaction", "entry": [entry]}
    body = assert_outcome(client.post("", json=tx, headers=FHIR_JSON), 400)
    assert "Bundle.entry[0].resource.population" in issue_paths(body)
    # a primitive given by its extensions only (data absent) is there
    absent = {
        "extension": [
            {
                "url": "http://hl7.org/fhir/StructureDefinition/data-absent-reason",
                "valueCode": "unknown",
            }
        ]
    }
    ok = {**nested, "_status": absent, "population": _REF, "outcome": _REF}
    del ok["status"]
    created = client.post("/RiskEvidenceSynthesis", json=ok, headers=FHIR_JSON)
    assert created.status_code == 201, created.text


def test_r4_only_types_get_the_table_and_request_checks(client: httpx.Client) -> None:
    rtype = "EffectEvidenceSynthesis"
    bad_code = {"resourceType": rtype, "status": "nonsense"}
    body = assert_outcome(client.post(f"/{rtype}", json=bad_code, headers=FHIR_JSON), 400)
    assert f"{rtype}.status" in issue_paths(body)
    bad_kind = {"resourceType": rtype, "status": "draft", "date": 2020}
    body = assert_outcome(client.post(f"/{rtype}", json=bad_kind, headers=FHIR_JSON), 400)
    assert f"{rtype}.date" in issue_paths(body)
    unknown = {"resourceType": rtype, "status": "draft", "outcome": {"nonsense": 1}}
    body = assert_outcome(client.post(f"/{rtype}", json=unknown, headers=FHIR_JSON), 400)
    assert f"{rtype}.outcome.nonsense" in issue_paths(body)
    wrong_id = {"resourceType": rtype, "id": "other"}
    assert_outcome(client.put(f"/{rtype}/one", json=wrong_id, headers=FHIR_JSON), 400)
    # An R4B resource contained in one is still judged by its model.
    contained = {"resourceType": rtype, "contained": [patient(id="p", birthDate="1970-13-45")]}
    body = assert_outcome(client.post(f"/{rtype}", json=contained, headers=FHIR_JSON), 400)
    assert f"{rtype}.contained[0].birthDate" in issue_paths(body)


def test_r4_only_types_may_be_contained(client: httpx.Client) -> None:
    nested = {
        "resourceType": "RiskEvidenceSynthesis",
        "id": "e",
        **R4_ONLY_REQUIRED["RiskEvidenceSynthesis"],
    }
    # dom-3: a contained resource is referred to from the resource
    link = [{"url": "http://example.org/evidence", "valueReference": {"reference": "#e"}}]
    created = client.post(
        "/Patient", json=patient(contained=[nested], extension=link), headers=FHIR_JSON
    )
    assert created.status_code == 201, created.text
    assert created.json()["contained"] == [nested]
    # ... and still get the table checks, with the model checking everything around them.
    bad = {**nested, "status": "nonsense"}
    resource = patient(contained=[bad], gender="robot")
    body = assert_outcome(client.post("/Patient", json=resource, headers=FHIR_JSON), 400)
    assert {"Patient.contained[0].status", "Patient.gender"} <= set(issue_paths(body))


@pytest.mark.parametrize("nested_type", ["Nope", "Citation", 7])
def test_contained_resource_of_no_r4_type_is_refused(
    client: httpx.Client, nested_type: object
) -> None:
    resource = patient(contained=[{"resourceType": nested_type, "id": "x"}])
    body = assert_outcome(client.post("/Patient", json=resource, headers=FHIR_JSON), 400)
    assert "Patient.contained[0].resourceType" in issue_paths(body)


def _nested_extensions(depth: int) -> str:
    inner = '{"url":"http://y","valueString":"z"}'
    chain = '{"url":"http://x","extension":[' * depth + inner + "]}" * depth
    return '{"resourceType":"Patient","extension":[' + chain + "]}"


@pytest.mark.parametrize("depth", [70, 150, 600, 100_000])
def test_deep_json_nesting_is_400_not_500(client: httpx.Client, depth: int) -> None:
    body = assert_outcome(post(client, "/Patient", _nested_extensions(depth)), 400)
    assert "levels deep" in body["issue"][0]["diagnostics"]


def test_json_nesting_within_the_limit_is_accepted_and_served_in_every_format(
    client: httpx.Client,
) -> None:
    created = post(client, "/Patient", _nested_extensions(60))
    assert created.status_code == 201, created.text
    rid = created.json()["id"]
    for params in ({}, {"_format": "xml"}, {"_pretty": "true"}):
        assert client.get(f"/Patient/{rid}", params=params).status_code == 200
    assert client.get(f"/Patient/{rid}/_history").status_code == 200


@pytest.mark.parametrize("depth", [70, 200, 100_000])
def test_deep_xml_nesting_is_400_not_500(client: httpx.Client, depth: int) -> None:
    document = (
        '<Patient xmlns="http://hl7.org/fhir">'
        + '<extension url="http://x">' * depth
        + '<valueString value="z"/>'
        + "</extension>" * depth
        + "</Patient>"
    )
    response = post(client, "/Patient", document, **{"Content-Type": "application/fhir+xml"})
    assert_outcome(response, 400)


def test_deep_json_patch_result_is_400(client: httpx.Client) -> None:
    created = client.post("/Patient", json=patient(), headers=FHIR_JSON)
    deep: object = {"url": "http://y", "valueString": "z"}
    for _ in range(100):
        deep = {"url": "http://x", "extension": [deep]}
    patch = [{"op": "add", "path": "/extension", "value": [deep]}]
    response = client.patch(
        f"/Patient/{created.json()['id']}",
        json=patch,
        headers={"Content-Type": "application/json-patch+json"},
    )
    assert_outcome(response, 400)


def test_issue_codes_and_whole_messages(client: httpx.Client) -> None:
    obs = observation()
    del obs["status"]
    body = assert_outcome(client.post("/Observation", json=obs, headers=FHIR_JSON), 400)
    assert [(i["code"], i["expression"]) for i in body["issue"]] == [
        ("required", ["Observation.status"])
    ]
    empty = patient(name=[{"family": ""}])
    body = assert_outcome(client.post("/Patient", json=empty, headers=FHIR_JSON), 400)
    message = body["issue"][0]["diagnostics"]
    assert "\n" not in message and message.endswith("'"), message  # the pattern, whole
    for wrong in ("maybe", "yes", 1):
        body = assert_outcome(
            client.post("/Patient", json=patient(active=wrong), headers=FHIR_JSON), 400
        )
        assert len(body["issue"]) == 1, body  # one error, one issue
        assert body["issue"][0]["expression"] == ["Patient.active"]


XHTML = 'xmlns="http://www.w3.org/1999/xhtml"'


@pytest.mark.parametrize(
    "div",
    [
        f"<div {XHTML}><script>alert(1)</script></div>",
        f'<div {XHTML}><p onclick="alert(1)">x</p></div>',
        f'<div {XHTML}><a href="javascript:alert(1)">x</a></div>',
        f"<div {XHTML}><iframe>x</iframe></div>",
        f"<div {XHTML}><form>x</form></div>",
        "not xhtml",
        "<div>no namespace</div>",
        f"<p {XHTML}>not a div</p>",
        f"<div {XHTML}>   </div>",
        f"<div {XHTML}><p>unclosed</div>",
    ],
)
def test_narrative_must_be_safe_xhtml_with_content(client: httpx.Client, div: str) -> None:
    resource = patient(text={"status": "generated", "div": div})
    body = assert_outcome(client.post("/Patient", json=resource, headers=FHIR_JSON), 400)
    assert "Patient.text.div" in issue_paths(body)


def test_narrative_with_allowed_markup_is_kept(client: httpx.Client) -> None:
    div = (
        f'<div {XHTML}><p class="c" style="color:red">a&nbsp;b</p><table border="1"><tr>'
        '<td colspan="2"><a href="Patient/1">x</a><img src="#a" alt="i"/></td></tr></table>'
        '<span xml:lang="en">y</span></div>'
    )
    resource = patient(text={"status": "generated", "div": div})
    created = client.post("/Patient", json=resource, headers=FHIR_JSON)
    assert created.status_code == 201, created.text
    assert created.json()["text"]["div"] == div
    contained = patient(contained=[patient(id="c", text={"status": "generated", "div": "x"})])
    body = assert_outcome(client.post("/Patient", json=contained, headers=FHIR_JSON), 400)
    assert "Patient.contained[0].text.div" in issue_paths(body)


@pytest.mark.parametrize(
    ("resource", "path"),
    [
        (patient(name=[{"given": [None]}]), "Patient.name[0].given[0]"),
        (
            patient(name=[{"given": ["a", None], "_given": [None, None]}]),
            "Patient.name[0].given[1]",
        ),
        (patient(identifier=[{}]), "Patient.identifier[0]"),
        (patient(meta={}), "Patient.meta"),
        (patient(name=[{"id": "only-an-id"}]), "Patient.name[0]"),
        (patient(name=[]), "Patient.name"),
        (patient(name=[{"given": []}]), "Patient.name[0].given"),
        (patient(extension=[{"url": "http://x"}]), "Patient.extension[0]"),
        (
            patient(extension=[{"url": "http://x", "valueString": "a",
                                "extension": [{"url": "y", "valueString": "b"}]}]),
            "Patient.extension[0]",
        ),
        (patient(_birthDate={}), "Patient._birthDate"),
    ],
)  # fmt: skip
def test_core_json_rules_and_invariants(client: httpx.Client, resource: dict, path: str) -> None:
    body = assert_outcome(client.post("/Patient", json=resource, headers=FHIR_JSON), 400)
    assert path in issue_paths(body), body


def test_core_json_rules_allow_what_is_right(client: httpx.Client) -> None:
    ext = {"url": "http://x", "valueString": "v"}
    resource = patient(
        name=[{"given": ["a", None], "_given": [None, {"extension": [ext]}]}],
        extension=[{"url": "http://x", "extension": [ext]}],
        _birthDate={"extension": [ext]},
    )
    created = client.post("/Patient", json=resource, headers=FHIR_JSON)
    assert created.status_code == 201, created.text


def test_a_property_given_twice_is_refused(client: httpx.Client) -> None:
    """{"gender": "male", "gender": "female"}: which was meant is unknowable; keeping the last
    silently stored what the client may not have sent, so it is 400 (at any depth)."""
    for body in (
        '{"resourceType": "Patient", "gender": "male", "gender": "female"}',
        '{"resourceType": "Patient", "name": [{"family": "A", "given": ["B"], "family": "C"}]}',
    ):
        outcome = assert_outcome(post(client, "/Patient", body), 400)
        assert "appears twice" in outcome["issue"][0]["diagnostics"]
    patch = '[{"op": "add", "path": "/active", "value": true, "value": false}]'
    rid = client.post("/Patient", json=patient(), headers=FHIR_JSON).json()["id"]
    response = client.patch(
        f"/Patient/{rid}", content=patch, headers={"Content-Type": "application/json-patch+json"}
    )
    assert_outcome(response, 400)


@pytest.mark.parametrize(
    ("content_type", "status"),
    [
        ("application/fhir+json; charset=latin1", 415),
        ("application/fhir+json; charset=ISO-8859-1", 415),
        ("application/fhir+xml; charset=windows-1252", 415),
        ("application/fhir+json; charset=UTF-8", 201),
        ('application/fhir+json; charset="utf-8"', 201),
        ("application/fhir+json", 201),
    ],
)
def test_bodies_in_another_charset_than_utf8_are_415(
    client: httpx.Client, content_type: str, status: int
) -> None:
    """R4 http.html: FHIR uses UTF-8 for all bodies. A Latin-1 body was read as UTF-8 (its
    'é' a 400 at best, mojibake at worst); now the charset is refused by name."""
    if "xml" in content_type:
        body = '<Patient xmlns="http://hl7.org/fhir"><gender value="male"/></Patient>'
    else:
        body = json.dumps(patient(name=[{"family": "Lefèvre"}]), ensure_ascii=False)
    encoding = "utf-8" if status == 201 else "latin-1"
    response = client.post(
        "/Patient", content=body.encode(encoding), headers={"Content-Type": content_type}
    )
    if status == 201:
        assert response.status_code == 201, response.text
        return
    outcome = assert_outcome(response, 415)
    assert "charset" in outcome["issue"][0]["diagnostics"]


def test_two_types_of_one_choice_are_one_structure_issue(client: httpx.Client) -> None:
    """Both valueString and valueQuantity: 400, one issue naming the second name."""
    obs = observation(valueString="a")  # beside the helper's valueQuantity
    body = assert_outcome(client.post("/Observation", json=obs, headers=FHIR_JSON), 400)
    assert [(i["code"], i["expression"]) for i in body["issue"]] == [
        ("structure", ["Observation.valueString"])
    ]
    assert "value[x]" in body["issue"][0]["diagnostics"]


def test_a_body_declared_over_the_limit_is_413_before_it_is_read(
    base_url: str, system_token: str
) -> None:
    """The size was checked after the whole body had been read into memory: a client could
    make the process hold gigabytes first. A declared Content-Length over the limit is
    answered at once (here nothing but the headers is ever sent)."""
    answer = headers_only_post(f"{base_url}/Patient", "application/fhir+json", 10**11,
                               Authorization=f"Bearer {system_token}")  # fmt: skip
    assert answer.startswith(b"HTTP/1.1 413"), answer[:300]
    assert b"OperationOutcome" in answer


def test_a_chunked_body_over_the_limit_is_413(client: httpx.Client, base_url: str) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"resourceType": "Patient", "name": [{"family": "'
        for _ in range(40):  # 40 MB, past the default limit of 32
            yield b"x" * (1024 * 1024)
        yield b'"}]}'

    response = client.post("/Patient", content=chunks(), headers=FHIR_JSON)
    assert_outcome(response, 413)


def test_numbers_of_thousands_of_digits_in_urls_and_headers_are_no_500(
    client: httpx.Client,
) -> None:
    """A version id, an If-Match tag or a `_count` of 5,000 digits: int() refuses more than
    4,300, which made each a 500. Read once for all (app/digits.py): no such version, not an
    entity tag of this server, and the most a page holds."""
    huge = "1" * 5000
    rid = client.post("/Patient", json=patient(), headers=FHIR_JSON).json()["id"]
    assert client.get(f"/Patient/{rid}/_history/{huge}").status_code in (400, 404)
    put = client.put(
        f"/Patient/{rid}",
        json={**patient(), "id": rid},
        headers={**FHIR_JSON, "If-Match": f'W/"{huge}"'},
    )
    assert put.status_code == 400, put.text[:300]  # names no version this server has
    history = client.get(f"/Patient/{rid}/_history", params={"_count": huge})
    assert history.status_code == 200 and len(history.json()["entry"]) == 1
