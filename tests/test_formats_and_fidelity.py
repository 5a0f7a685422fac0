"""What was sent is what is returned; JSON and XML; _format, _pretty, _summary, _elements."""

from __future__ import annotations

import base64
import json

import httpx

from tests.helpers import FHIR_JSON, observation, patient

XML_PATIENT = b"""<?xml version="1.0" encoding="UTF-8"?>
<Patient xmlns="http://hl7.org/fhir">
  <active value="true"/>
  <name><family value="Xml"/><given value="Ada"/></name>
  <gender value="female"/>
  <birthDate value="1970-01-01"/>
</Patient>"""


def test_decimal_precision_and_literals_survive(client: httpx.Client) -> None:
    raw = (
        b'{"resourceType":"Observation","status":"final","code":{"text":"x"},'
        b'"valueQuantity":{"value":1.50,"unit":"mg"},'
        b'"referenceRange":[{"low":{"value":1e-3},"high":{"value":100.000}}],'
        b'"effectiveDateTime":"2024-01-01T10:00:00+00:00"}'
    )
    created = client.post("/Observation", content=raw, headers=FHIR_JSON)
    assert created.status_code == 201, created.text
    text = client.get(f"/Observation/{created.json()['id']}").text
    assert '"value":1.50' in text
    assert '"value":1e-3' in text
    assert '"value":100.000' in text
    assert '"effectiveDateTime":"2024-01-01T10:00:00+00:00"' in text


def test_base64_whitespace_is_kept(client: httpx.Client) -> None:
    data = "aGVs bG8g\nd29y bGQ="
    created = client.post(
        "/Patient",
        json=patient(photo=[{"contentType": "text/plain", "data": data}]),
        headers=FHIR_JSON,
    )
    if created.status_code == 201:
        assert client.get(f"/Patient/{created.json()['id']}").json()["photo"][0]["data"] == data
    else:  # refusing it is acceptable; silently rewriting it is not
        assert created.status_code == 400


def test_xml_in_and_out(client: httpx.Client) -> None:
    created = client.post(
        "/Patient",
        content=XML_PATIENT,
        headers={"Content-Type": "application/fhir+xml", "Accept": "application/fhir+xml"},
    )
    assert created.status_code == 201, created.text
    assert created.headers["content-type"].startswith("application/fhir+xml")
    assert b'<gender value="female"/>' in created.content
    rid = created.headers["location"].split("/Patient/")[1].split("/")[0]
    as_json = client.get(f"/Patient/{rid}").json()
    assert as_json["active"] is True
    assert as_json["name"] == [{"family": "Xml", "given": ["Ada"]}]
    as_xml = client.get(f"/Patient/{rid}", params={"_format": "xml"})
    assert as_xml.headers["content-type"].startswith("application/fhir+xml")
    assert b'<family value="Xml"/>' in as_xml.content


def test_invalid_xml_is_400(client: httpx.Client) -> None:
    for body in (b"<Patient", b'<Patient xmlns="http://hl7.org/fhir"><bogus value="1"/></Patient>'):
        response = client.post(
            "/Patient", content=body, headers={"Content-Type": "application/fhir+xml"}
        )
        assert response.status_code == 400
        assert response.json()["resourceType"] == "OperationOutcome"


def test_format_parameter_and_pretty(client: httpx.Client) -> None:
    rid = client.post("/Patient", json=patient(), headers=FHIR_JSON).json()["id"]
    assert client.get(f"/Patient/{rid}", params={"_format": "json"}).json()["id"] == rid
    assert (
        client.get(f"/Patient/{rid}", params={"_format": "application/fhir+json"}).status_code
        == 200
    )
    pretty = client.get(f"/Patient/{rid}", params={"_pretty": "true"}).text
    assert '\n  "resourceType": "Patient"' in pretty
    xml_pretty = client.get(f"/Patient/{rid}", params={"_format": "xml", "_pretty": "true"}).text
    assert "\n  <" in xml_pretty


def test_summary_and_elements_on_read(client: httpx.Client) -> None:
    body = patient(
        text={"status": "generated", "div": '<div xmlns="http://www.w3.org/1999/xhtml">Ada</div>'},
        contact=[{"name": {"family": "Kin"}}],
    )
    rid = client.post("/Patient", json=body, headers=FHIR_JSON).json()["id"]
    summary = client.get(f"/Patient/{rid}", params={"_summary": "true"}).json()
    assert "name" in summary and "contact" not in summary and "text" not in summary
    assert {"code": "SUBSETTED"}.items() <= summary["meta"]["tag"][-1].items()
    text = client.get(f"/Patient/{rid}", params={"_summary": "text"}).json()
    assert "text" in text and "name" not in text
    data = client.get(f"/Patient/{rid}", params={"_summary": "data"}).json()
    assert "text" not in data and "contact" in data
    elements = client.get(f"/Patient/{rid}", params={"_elements": "gender"}).json()
    assert set(elements) == {"resourceType", "id", "meta", "gender"}
    assert client.get(f"/Patient/{rid}", params={"_summary": "bogus"}).status_code == 400


def test_summary_true_trims_inside_backbone_elements(client: httpx.Client) -> None:
    """R4 _summary=true: the elements marked summary in the base definition, inside backbone
    elements too (summary.json's backbones). A component keeps code and value, not its
    interpretation; a series keeps its performer's actor, not its instances."""
    component = {
        "code": {"text": "systolic"},
        "valueQuantity": {"value": 120},
        "interpretation": [{"text": "high"}],
        "referenceRange": [{"text": "< 130"}],
    }
    status_extension = {"extension": [{"url": "http://x.org/e", "valueString": "v"}]}
    body = observation(component=[component], _status=status_extension)
    rid = client.post("/Observation", json=body, headers=FHIR_JSON).json()["id"]
    for params in ({"_summary": "true"}, {"_summary": "true", "_id": rid}):
        url = f"/Observation/{rid}" if "_id" not in params else "/Observation"
        shown = client.get(url, params=params).json()
        if "_id" in params:
            shown = shown["entry"][0]["resource"]
        assert shown["component"] == [
            {"code": {"text": "systolic"}, "valueQuantity": {"value": 120}}
        ]
        assert shown["_status"] == status_extension
    study = {
        "resourceType": "ImagingStudy",
        "status": "available",
        "subject": {"reference": "Patient/p"},
        "series": [
            {
                "uid": "1.2.3",
                "modality": {
                    "system": "http://dicom.nema.org/resources/ontology/DCM",
                    "code": "CT",
                },
                "performer": [
                    {
                        "actor": {"display": "Dr X"},
                        "extension": [{"url": "http://x.org/e", "valueString": "y"}],
                    }
                ],
                "instance": [{"uid": "1.2.3.4", "sopClass": {"code": "1.2"}}],
            }
        ],
    }
    sid = client.post("/ImagingStudy", json=study, headers=FHIR_JSON).json()["id"]
    series = client.get(f"/ImagingStudy/{sid}", params={"_summary": "true"}).json()["series"]
    assert series == [
        {
            "uid": "1.2.3",
            "modality": {"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "CT"},
            "performer": [{"actor": {"display": "Dr X"}}],
        }
    ]
    # _summary=data keeps every element
    data = client.get(f"/Observation/{rid}", params={"_summary": "data"}).json()
    assert data["component"] == [component]


def test_elements_names_a_choice_by_its_base_name(client: httpx.Client) -> None:
    """_elements=value returns valueQuantity (the element is value[x]); a plain element named
    like a choice (NutritionOrder.instantiates next to instantiatesUri) stays itself."""
    body = observation(valueQuantity={"value": 1}, effectiveDateTime="2020-01-01")
    rid = client.post("/Observation", json=body, headers=FHIR_JSON).json()["id"]
    for asked in ("value,effective", "value[x],effective[x]"):
        shown = client.get(f"/Observation/{rid}", params={"_elements": asked}).json()
        assert shown["valueQuantity"] == {"value": 1}, asked
        assert shown["effectiveDateTime"] == "2020-01-01" and "subject" not in shown
    order = {
        "resourceType": "NutritionOrder",
        "status": "active",
        "intent": "order",
        "patient": {"reference": "Patient/p"},
        "dateTime": "2020",
        "instantiates": ["http://x.org/a"],
        "instantiatesUri": ["http://x.org/b"],
    }
    rid = client.post("/NutritionOrder", json=order, headers=FHIR_JSON).json()["id"]
    shown = client.get(f"/NutritionOrder/{rid}", params={"_elements": "instantiates"}).json()
    assert "instantiates" in shown and "instantiatesUri" not in shown


def test_summary_count_on_search(client: httpx.Client) -> None:
    rid = client.post("/Observation", json=observation(), headers=FHIR_JSON).json()["id"]
    counted = client.get("/Observation", params={"_id": rid, "_summary": "count"}).json()
    assert counted["total"] == 1 and "entry" not in counted


def test_capability_statement_offers_no_write_of_auditevent(client: httpx.Client) -> None:
    """The server alone writes AuditEvents: every write through the API is a 405, so the
    statement lists only reads, searches and history for the type."""
    types = {r["type"]: r for r in client.get("/metadata").json()["rest"][0]["resource"]}
    audit = types["AuditEvent"]
    assert {i["code"] for i in audit["interaction"]} == {
        "read", "vread", "history-instance", "history-type", "search-type"
    }  # fmt: skip
    assert (audit["updateCreate"], audit["conditionalCreate"], audit["conditionalUpdate"],
            audit["conditionalDelete"]) == (False, False, False, "not-supported")  # fmt: skip
    assert client.post("/AuditEvent", json={"resourceType": "AuditEvent"}).status_code == 405


def test_capability_statement(client: httpx.Client) -> None:
    statement = client.get("/metadata").json()
    assert statement["resourceType"] == "CapabilityStatement"
    assert statement["fhirVersion"] == "4.0.1"
    assert "application/fhir+xml" in statement["format"]
    rest = statement["rest"][0]
    types = {r["type"]: r for r in rest["resource"]}
    assert {"Patient", "Observation", "SupplyDelivery", "Provenance"} <= set(types)
    codes = {i["code"] for i in types["Patient"]["interaction"]}
    assert {
        "read",
        "vread",
        "update",
        "patch",
        "delete",
        "create",
        "search-type",
        "history-instance",
        "history-type",
    } <= codes
    assert {"transaction", "batch", "history-system"} <= {i["code"] for i in rest["interaction"]}
    assert (
        client.get("/metadata", params={"_format": "xml"})
        .headers["content-type"]
        .startswith("application/fhir+xml")
    )


def test_integer_literals_beyond_64_bits_and_minus_zero_are_kept(client: httpx.Client) -> None:
    for literal in ("100000000000000000000000000001", "-18446744073709551617", "-0"):
        raw = (
            '{"resourceType":"Observation","status":"final","code":{"text":"x"},'
            f'"valueQuantity":{{"value":{literal}}}}}'
        )
        created = client.post("/Observation", content=raw, headers=FHIR_JSON)
        assert created.status_code == 201, created.text
        assert f'"value":{literal}}}' in created.text
        read = client.get(f"/Observation/{created.json()['id']}")
        assert f'"value":{literal}}}' in read.text
        xml = client.get(f"/Observation/{created.json()['id']}", params={"_format": "xml"})
        assert f'<value value="{literal}"/>' in xml.text


def test_integer_minus_zero_is_kept_in_json_and_xml(client: httpx.Client) -> None:
    raw = '{"resourceType":"Patient","multipleBirthInteger":-0}'
    created = client.post("/Patient", content=raw, headers=FHIR_JSON)
    assert created.status_code == 201, created.text
    assert '"multipleBirthInteger":-0}' in created.text
    xml = client.get(f"/Patient/{created.json()['id']}", params={"_format": "xml"})
    assert '<multipleBirthInteger value="-0"/>' in xml.text


def test_out_of_range_integer_is_400(client: httpx.Client) -> None:
    raw = '{"resourceType":"Patient","multipleBirthInteger":100000000000000000000000000001}'
    response = client.post("/Patient", content=raw, headers=FHIR_JSON)
    assert response.status_code == 400, response.text
    assert response.json()["issue"][0]["expression"] == ["Patient.multipleBirthInteger"]


def test_xml_number_literals_follow_the_fhir_regexes(client: httpx.Client) -> None:
    xml_type = {"Content-Type": "application/fhir+xml"}
    for value in ("01.5", "1.", ".5", "+1.5", "0x10"):
        document = (
            '<Observation xmlns="http://hl7.org/fhir"><status value="final"/>'
            f'<code><text value="x"/></code><valueQuantity><value value="{value}"/>'
            "</valueQuantity></Observation>"
        )
        response = client.post("/Observation", content=document, headers=xml_type)
        assert response.status_code == 400, (value, response.text)
        issue = response.json()["issue"][0]
        assert issue["expression"] == ["Observation.valueQuantity.value"]
    for value in ("007", "+1", "1.0"):
        document = (
            '<Patient xmlns="http://hl7.org/fhir">'
            f'<multipleBirthInteger value="{value}"/></Patient>'
        )
        response = client.post("/Patient", content=document, headers=xml_type)
        assert response.status_code == 400, (value, response.text)
        assert response.json()["issue"][0]["expression"] == ["Patient.multipleBirthInteger"]


def test_binary_is_read_in_its_native_form_when_no_fhir_format_is_asked(
    client: httpx.Client,
) -> None:
    """R4 binary.html: a read of a Binary that does not ask for a FHIR content type gets the
    content itself, as its own content type; */* or a FHIR type keeps the resource."""
    data = b"%PDF-1.4 \x00\xff binary"
    binary = {
        "resourceType": "Binary",
        "contentType": "application/pdf",
        "data": base64.b64encode(data).decode(),
    }
    rid = client.post("/Binary", json=binary, headers=FHIR_JSON).json()["id"]
    for path in (f"/Binary/{rid}", f"/Binary/{rid}/_history/1"):
        for accept in ("application/pdf", "text/html;q=0.5, application/*+pdf, application/pdf"):
            native = client.get(path, headers={"Accept": accept})
            assert native.status_code == 200, native.text
            assert native.headers["content-type"] == "application/pdf"
            assert native.content == data and native.headers["etag"] == 'W/"1"'
    head = client.head(f"/Binary/{rid}", headers={"Accept": "application/pdf"})
    assert head.headers["content-type"] == "application/pdf" and not head.content
    assert head.headers["content-length"] == str(len(data))
    for accept, media in (
        ("*/*", "application/fhir+json"),
        ("application/*", "application/fhir+json"),
        ("application/json", "application/fhir+json"),
        ("application/fhir+xml", "application/fhir+xml"),
    ):
        shown = client.get(f"/Binary/{rid}", headers={"Accept": accept})
        assert shown.status_code == 200 and shown.headers["content-type"].startswith(media)
    refused = client.get(f"/Binary/{rid}", headers={"Accept": "image/png"})
    assert refused.status_code == 406 and refused.json()["resourceType"] == "OperationOutcome"
    missing = client.get("/Binary/nothing-here", headers={"Accept": "application/pdf"})
    assert missing.status_code == 404


def test_json_only_shapes_survive_a_round_trip_through_xml(client: httpx.Client) -> None:
    """What JSON spells differently from XML, sent as JSON, read as XML, that XML sent back:
    the JSON read at the end is byte for byte what was first stored (R4 json.html: the
    `_name` partners with ids and extensions, nulls aligning arrays; decimals as written)."""
    raw = (
        b'{"resourceType":"Patient",'
        b'"text":{"status":"generated","div":"<div xmlns=\\"http://www.w3.org/1999/xhtml\\">'
        b'<p>A &amp; B &lt;c&gt; \\u00e9 <br/><a href=\\"#x\\">x</a></p></div>"},'
        b'"extension":[{"url":"http://example.org/w","valueDecimal":1.50E+3},'
        b'{"url":"http://example.org/n","valueDecimal":-0.000}],'
        b'"name":[{"id":"n1","family":"Lee","_family":{"id":"f1"},'
        b'"given":["Ann",null,"C."],'
        b'"_given":[null,{"extension":[{"url":"http://example.org/x","valueString":"B"}]},'
        b'{"id":"g3"}]}],'
        b'"gender":"female","_gender":{"extension":[{"url":"http://example.org/g",'
        b'"valueCode":"f"}]},'
        b'"_birthDate":{"id":"b","extension":[{"url":"http://example.org/t",'
        b'"valueTime":"10:00:00"}]},'
        b'"multipleBirthInteger":-0}'
    )
    created = client.post("/Patient", content=raw, headers=FHIR_JSON)
    assert created.status_code == 201, created.text
    rid = created.json()["id"]
    first = client.get(f"/Patient/{rid}")
    as_xml = client.get(f"/Patient/{rid}", params={"_format": "xml"})
    assert as_xml.status_code == 200, as_xml.text
    put = client.put(
        f"/Patient/{rid}",
        content=as_xml.content,
        headers={"Content-Type": "application/fhir+xml"},
    )
    assert put.status_code == 200, put.text
    again = client.get(f"/Patient/{rid}")
    drop_meta = [json.loads(r.content) for r in (first, again)]
    for body in drop_meta:
        del body["meta"]
    assert drop_meta[0] == drop_meta[1]
    # The literals themselves, not only equal values: 1.50E+3 is not 1500, -0.000 not 0.
    strip = first.text.split('"name"', 1)[0].split('"extension"', 1)[1]
    assert strip in again.text
    assert '"multipleBirthInteger":-0' in again.text


def test_an_id_on_a_primitive_with_a_value_is_accepted(client: httpx.Client) -> None:
    """<family id="f1" value="Lee"/> has its value (ele-1); it was refused as an element with
    only an id, in XML and as JSON's `"_family": {"id": "f1"}`. An id alone still is refused."""
    document = (
        b'<Patient xmlns="http://hl7.org/fhir"><name><family id="f1" value="Lee"/>'
        b'<given value="Ann"/><given id="g2" value="B."/></name></Patient>'
    )
    xml_body = {"Content-Type": "application/fhir+xml"}
    created = client.post("/Patient", content=document, headers=xml_body)
    assert created.status_code == 201, created.text
    name = created.json()["name"][0]
    assert (name["family"], name["_family"]) == ("Lee", {"id": "f1"})
    assert (name["given"], name["_given"]) == (["Ann", "B."], [None, {"id": "g2"}])

    bare = b'<Patient xmlns="http://hl7.org/fhir"><name><family id="f1"/></name></Patient>'
    refused = client.post("/Patient", content=bare, headers=xml_body)
    assert refused.status_code == 400, refused.text
    assert refused.json()["issue"][0]["expression"] == ["Patient.name[0]._family"]
