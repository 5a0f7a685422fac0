"""FHIR XML <-> JSON conversion (app.fhir.xml), against http://hl7.org/fhir/R4/xml.html."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from lxml import etree

from app.fhir.xml import FhirXmlError, json_to_xml, xml_to_json
from tests.fhir_package import CORE_EXAMPLE_TYPES, examples_dir

EXAMPLES = examples_dir() or Path("/npm-absent/hl7.fhir.r4.examples")
EXAMPLE_TYPES = [
    *CORE_EXAMPLE_TYPES,
    "Bundle",
    "Questionnaire",
]
# The package has no stand-alone Parameters example; these hold Parameters resources inside.
PARAMETERS_CARRIERS = [
    "Bundle-bundle-response.json",
    "Bundle-bundle-transaction.json",
    "GuidanceResponse-example.json",
]
# A few definition bundles are 10-35 MB; they round-trip too but take seconds each.
MAX_EXAMPLE_BYTES = 1_000_000

F = 'xmlns="http://hl7.org/fhir"'
X = 'xmlns="http://www.w3.org/1999/xhtml"'


def _needs_examples() -> None:
    if not EXAMPLES.is_dir():
        pytest.skip("official FHIR R4 examples unavailable (npm absent)")


def _load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_bytes(), parse_float=Decimal)


def _canonical_div(div: str) -> bytes:
    # Quoting, entity spelling and comments may differ after a round trip; the XHTML may not.
    return etree.tostring(etree.fromstring(div), method="c14n", with_comments=False)


def _normalized(value: Any, key: str = "") -> Any:
    """Comparable form: numbers as exact decimal text (so "1.50" != "1.5"), bools kept apart."""
    if isinstance(value, dict):
        return {k: _normalized(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [_normalized(v) for v in value]
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, int | Decimal):
        return ("number", str(Decimal(value)))
    if key == "div":
        return _canonical_div(value)
    return value


def _assert_round_trip(resource: dict[str, Any]) -> None:
    xml = json_to_xml(resource)
    back = xml_to_json(xml)
    assert _normalized(back) == _normalized(resource)
    # Once through, the conversion is a fixed point in both directions.
    assert json_to_xml(back) == xml
    assert xml_to_json(xml) == back


def _example_files(resource_type: str) -> list[Path]:
    files = sorted(EXAMPLES.glob(f"{resource_type}-*.json"))
    return [f for f in files if f.stat().st_size <= MAX_EXAMPLE_BYTES]


def _find_resources(node: Any, resource_type: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    if isinstance(node, dict):
        if node.get("resourceType") == resource_type:
            found.append(node)
        for value in node.values():
            found.extend(_find_resources(value, resource_type))
    elif isinstance(node, list):
        for value in node:
            found.extend(_find_resources(value, resource_type))
    return found


def _root(xml: bytes) -> etree._Element:
    return etree.fromstring(xml)


# --------------------------------------------------------------------------- official examples


@pytest.mark.parametrize("resource_type", EXAMPLE_TYPES)
def test_official_examples_round_trip(resource_type: str) -> None:
    _needs_examples()
    files = _example_files(resource_type)
    assert files, f"no {resource_type} examples in {EXAMPLES}"
    for path in files:
        try:
            _assert_round_trip(_load(path))
        except AssertionError as exc:
            raise AssertionError(f"{path.name}: {exc}") from exc


def test_official_parameters_round_trip() -> None:
    _needs_examples()
    found = []
    for name in PARAMETERS_CARRIERS:
        found.extend(_find_resources(_load(EXAMPLES / name), "Parameters"))
    assert found
    for parameters in found:
        _assert_round_trip(parameters)


def test_patient_example_matches_spec_xml_layout() -> None:
    """patient-example.xml in the spec: value attributes, id child, table order, url attribute."""
    _needs_examples()
    root = _root(json_to_xml(_load(EXAMPLES / "Patient-example.json")))
    assert root.tag == "{http://hl7.org/fhir}Patient"
    names = [etree.QName(c).localname for c in root]
    assert names[:4] == ["id", "text", "identifier", "active"]
    assert names[-1] == "managingOrganization"
    assert root[0].attrib == {"value": "example"}
    assert names.index("gender") < names.index("birthDate") < names.index("deceasedBoolean")
    birth = root.find("{http://hl7.org/fhir}birthDate")
    assert birth.get("value") == "1974-12-25"
    ext = birth.find("{http://hl7.org/fhir}extension")
    assert ext.get("url") == "http://hl7.org/fhir/StructureDefinition/patient-birthTime"
    assert ext[0].tag == "{http://hl7.org/fhir}valueDateTime"
    assert root.find("{http://hl7.org/fhir}active").get("value") == "true"
    assert root.find("{http://hl7.org/fhir}text/{http://www.w3.org/1999/xhtml}div") is not None


# --------------------------------------------------------------------------- XML -> JSON rules


def test_resource_id_is_child_element_and_datatype_id_is_attribute() -> None:
    doc = f"""<Patient {F}>
      <id value="p1"/>
      <name id="n1"><family value="Chalmers"/></name>
    </Patient>"""
    assert xml_to_json(doc) == {
        "resourceType": "Patient",
        "id": "p1",
        "name": [{"id": "n1", "family": "Chalmers"}],
    }


def test_extension_url_is_an_attribute() -> None:
    doc = f"""<Patient {F}>
      <extension id="e1" url="http://example.org/a">
        <extension url="http://example.org/b"><valueCode value="x"/></extension>
      </extension>
    </Patient>"""
    assert xml_to_json(doc)["extension"] == [
        {
            "id": "e1",
            "extension": [{"url": "http://example.org/b", "valueCode": "x"}],
            "url": "http://example.org/a",
        }
    ]
    back = _root(json_to_xml(xml_to_json(doc)))
    ext = back.find("{http://hl7.org/fhir}extension")
    assert ext.attrib == {"id": "e1", "url": "http://example.org/a"}


def test_primitive_extension_singleton() -> None:
    doc = f"""<Patient {F}>
      <birthDate id="b1" value="1970-03-30">
        <extension url="http://hl7.org/fhir/StructureDefinition/patient-birthTime">
          <valueDateTime value="1970-03-30T14:35:45-05:00"/>
        </extension>
      </birthDate>
    </Patient>"""
    assert xml_to_json(doc) == {
        "resourceType": "Patient",
        "birthDate": "1970-03-30",
        "_birthDate": {
            "id": "b1",
            "extension": [
                {
                    "url": "http://hl7.org/fhir/StructureDefinition/patient-birthTime",
                    "valueDateTime": "1970-03-30T14:35:45-05:00",
                }
            ],
        },
    }


def test_primitive_with_only_an_extension_has_no_json_value() -> None:
    doc = f"""<Patient {F}><gender>
      <extension url="http://hl7.org/fhir/StructureDefinition/data-absent-reason">
        <valueCode value="unknown"/>
      </extension>
    </gender></Patient>"""
    out = xml_to_json(doc)
    assert "gender" not in out
    assert out["_gender"]["extension"][0]["valueCode"] == "unknown"


def test_primitive_array_alignment_with_nulls() -> None:
    doc = f"""<Patient {F}><name>
      <given value="Peter"/>
      <given id="g2">
        <extension url="http://example.org/x"><valueString value="v"/></extension>
      </given>
      <given value="James"/>
      <prefix value="Mr"/>
    </name></Patient>"""
    name = xml_to_json(doc)["name"][0]
    assert name == {
        "given": ["Peter", None, "James"],
        "_given": [
            None,
            {"id": "g2", "extension": [{"url": "http://example.org/x", "valueString": "v"}]},
            None,
        ],
        "prefix": ["Mr"],  # repeating element: a list even with one occurrence
    }
    xml = json_to_xml(xml_to_json(doc))
    givens = _root(xml).findall(".//{http://hl7.org/fhir}given")
    assert [g.get("value") for g in givens] == ["Peter", None, "James"]
    assert givens[1].get("id") == "g2"


def test_primitive_json_types() -> None:
    doc = f"""<Observation {F}>
      <status value="final"/>
      <code><text value="t"/></code>
      <valueQuantity><value value="1.50"/></valueQuantity>
      <referenceRange><low><value value="-0.000010"/></low></referenceRange>
      <component><code><text value="c"/></code><valueInteger value="-7"/></component>
      <component><code><text value="d"/></code><valueBoolean value="false"/></component>
    </Observation>"""
    out = xml_to_json(doc)
    value = out["valueQuantity"]["value"]
    assert isinstance(value, Decimal) and str(value) == "1.50"
    low = out["referenceRange"][0]["low"]["value"]
    assert isinstance(low, Decimal) and low == Decimal("-0.000010")
    assert getattr(low, "literal", "-0.000010") == "-0.000010"
    assert out["component"][0]["valueInteger"] == -7
    assert type(out["component"][0]["valueInteger"]) is int
    assert out["component"][1]["valueBoolean"] is False


def test_decimal_literal_from_jsonio_when_available() -> None:
    jsonio = pytest.importorskip("app.fhir.jsonio")
    doc = f'<Observation {F}><valueQuantity><value value="3.10"/></valueQuantity></Observation>'
    value = xml_to_json(doc)["valueQuantity"]["value"]
    assert isinstance(value, jsonio.DecimalLiteral)
    assert jsonio.dumps(value) == b"3.10"


def test_contained_and_bundle_resources_are_wrapped() -> None:
    doc = f"""<Bundle {F}>
      <type value="collection"/>
      <entry>
        <fullUrl value="urn:uuid:1"/>
        <resource>
          <Patient>
            <id value="p"/>
            <contained><Organization><id value="o"/><name value="Acme"/></Organization></contained>
            <managingOrganization><reference value="#o"/></managingOrganization>
          </Patient>
        </resource>
      </entry>
    </Bundle>"""
    out = xml_to_json(doc)
    assert out["entry"] == [
        {
            "fullUrl": "urn:uuid:1",
            "resource": {
                "resourceType": "Patient",
                "id": "p",
                "contained": [{"resourceType": "Organization", "id": "o", "name": "Acme"}],
                "managingOrganization": {"reference": "#o"},
            },
        }
    ]
    root = _root(json_to_xml(out))
    assert root.find("{*}entry/{*}resource/{*}Patient/{*}contained/{*}Organization") is not None


def test_parameters_resource_and_parts() -> None:
    resource = {
        "resourceType": "Parameters",
        "parameter": [
            {"name": "count", "valueInteger": 3},
            {"name": "ratio", "valueDecimal": Decimal("0.50")},
            {"name": "flag", "valueBoolean": True},
            {"name": "who", "resource": {"resourceType": "Patient", "active": False}},
            {"name": "tuple", "part": [{"name": "a", "valueString": "x"}]},
        ],
    }
    xml = json_to_xml(resource)
    assert b'<valueDecimal value="0.50"/>' in xml
    assert b'<valueBoolean value="true"/>' in xml
    assert b'<resource><Patient><active value="false"/></Patient></resource>' in xml
    _assert_round_trip(resource)


def test_narrative_div_becomes_a_string_and_back() -> None:
    doc = f"""<Patient {F}><text>
      <status value="generated"/>
      <div {X}><p class="x">Hello <b>world</b> &amp; &lt;all&gt;<br/></p></div>
    </text></Patient>"""
    div = xml_to_json(doc)["text"]["div"]
    assert div == f'<div {X}><p class="x">Hello <b>world</b> &amp; &lt;all&gt;<br/></p></div>'
    xml = json_to_xml(xml_to_json(doc))
    assert (
        f'<div {X}><p class="x">Hello <b>world</b> &amp; &lt;all&gt;<br/></p></div>'.encode() in xml
    )
    assert xml_to_json(xml)["text"]["div"] == div


def test_narrative_div_prefix_and_inherited_namespaces_are_normalised() -> None:
    doc = """<f:Patient xmlns:f="http://hl7.org/fhir" xmlns:h="http://www.w3.org/1999/xhtml"
        xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:schemaLocation="x y">
      <f:text><f:status value="generated"/><h:div><h:p>Hi</h:p></h:div></f:text>
    </f:Patient>"""
    assert xml_to_json(doc)["text"]["div"] == f"<div {X}><p>Hi</p></div>"


def test_json_div_with_html_entity_and_pretty_print_leaves_xhtml_alone() -> None:
    resource = {
        "resourceType": "Patient",
        "text": {"status": "generated", "div": f"<div {X}><p>a&nbsp;b</p><p>c</p></div>"},
        "active": True,
    }
    xml = json_to_xml(resource, pretty=True)
    assert f"<div {X}><p>a\u00a0b</p><p>c</p></div>".encode() in xml
    assert xml_to_json(xml)["text"]["div"] == f"<div {X}><p>a\u00a0b</p><p>c</p></div>"


@pytest.mark.parametrize(
    ("body", "path", "first", "then"),
    [
        ('<gender value="female"/><active value="true"/>', "Patient.active", "active", "gender"),
        (
            '<name><given value="A"/><family value="L"/></name>',
            "Patient.name[0].family",
            "family",
            "given",
        ),
        (
            '<name><given value="A"/><family value="L"/><given value="B"/></name>',
            "Patient.name[0].family",
            "family",
            "given",
        ),
        (
            '<name><family value="L"/></name><gender value="male"/>'
            '<name><family value="M"/></name>',
            "Patient.name",
            "name",
            "gender",
        ),
    ],
    ids=["top-level", "nested", "repeat-split", "array-split"],
)
def test_elements_out_of_order_are_refused_with_the_path(
    body: str, path: str, first: str, then: str
) -> None:
    """R4 xml.html: "Elements must always appear in the order documented"; the schema is a
    sequence, so an element's repeats stand together. A strict server refuses the rest."""
    with pytest.raises(FhirXmlError) as caught:
        xml_to_json(f"<Patient {F}>{body}</Patient>")
    assert caught.value.path == path
    assert f"<{first}> must come before <{then}>" in str(caught.value)


def test_out_of_order_xml_is_a_400_naming_the_element(client: httpx.Client) -> None:
    doc = f'<Patient {F}><gender value="female"/><id value="p"/></Patient>'
    response = client.post(
        "/Patient", content=doc, headers={"Content-Type": "application/fhir+xml"}
    )
    assert response.status_code == 400, response.text
    assert response.json()["issue"][0]["expression"] == ["Patient.id"]


def test_output_order_is_canonical() -> None:
    doc = f"""<Patient {F}>
      <id value="p"/>
      <active value="true"/>
      <name><family value="Lee"/><given value="Ann"/></name>
      <gender value="female"/>
    </Patient>"""
    out = xml_to_json(doc)
    assert list(out) == ["resourceType", "id", "active", "name", "gender"]
    assert list(out["name"][0]) == ["family", "given"]
    xml = json_to_xml({**out, "gender": "female", "id": "p"}).decode()
    assert xml.index("<id ") < xml.index("<active ") < xml.index("<name>") < xml.index("<gender ")
    assert xml.index("<family ") < xml.index("<given ")


def test_comments_and_whitespace_are_dropped() -> None:
    doc = f"""<?xml version="1.0" encoding="UTF-8"?>
    <!-- leading comment -->
    <Patient {F}>
      <!-- a comment -->
      <id value="p"/>   <?pi ignored?>
      <name>  <family value="  spaced  "/>  </name>
    </Patient>"""
    assert xml_to_json(doc) == {
        "resourceType": "Patient",
        "id": "p",
        "name": [{"family": "  spaced  "}],
    }


def test_bytes_input_and_utf16() -> None:
    doc = f'<?xml version="1.0" encoding="UTF-16"?><Patient {F}><id value="é"/></Patient>'
    assert xml_to_json(doc.encode("utf-16")) == {"resourceType": "Patient", "id": "é"}


def test_contentreference_questionnaire_nested_items() -> None:
    doc = f"""<Questionnaire {F}>
      <status value="active"/>
      <item><linkId value="1"/><type value="group"/>
        <item><linkId value="1.1"/><type value="integer"/><maxLength value="3"/></item>
      </item>
    </Questionnaire>"""
    out = xml_to_json(doc)
    assert out["item"][0]["item"] == [{"linkId": "1.1", "type": "integer", "maxLength": 3}]


# --------------------------------------------------------------------------- JSON -> XML rules


EXPECTED_OBSERVATION_XML = """<?xml version="1.0" encoding="UTF-8"?>
<Observation xmlns="http://hl7.org/fhir">
  <id value="hr"/>
  <meta>
    <versionId value="1"/>
  </meta>
  <extension url="http://example.org/fhir/StructureDefinition/flag">
    <valueBoolean value="true"/>
  </extension>
  <status value="final"/>
  <code>
    <coding>
      <system value="http://loinc.org"/>
      <code value="8867-4"/>
      <display value="Heart rate"/>
    </coding>
  </code>
  <subject>
    <reference value="Patient/example"/>
  </subject>
  <effectiveDateTime value="2020-01-01T10:00:00Z"/>
  <valueQuantity id="q1">
    <value value="72.50"/>
    <unit value="beats/minute"/>
    <system value="http://unitsofmeasure.org"/>
    <code value="/min"/>
  </valueQuantity>
  <referenceRange>
    <low>
      <value value="60"/>
    </low>
  </referenceRange>
  <component>
    <code>
      <text value="beats counted"/>
    </code>
    <valueInteger value="36"/>
  </component>
</Observation>
"""


def test_json_to_xml_exact_layout() -> None:
    # Keys deliberately out of order: XML output follows the element table.
    resource = {
        "component": [{"valueInteger": 36, "code": {"text": "beats counted"}}],
        "valueQuantity": {
            "code": "/min",
            "system": "http://unitsofmeasure.org",
            "unit": "beats/minute",
            "value": Decimal("72.50"),
            "id": "q1",
        },
        "referenceRange": [{"low": {"value": 60}}],
        "effectiveDateTime": "2020-01-01T10:00:00Z",
        "subject": {"reference": "Patient/example"},
        "code": {
            "coding": [{"display": "Heart rate", "code": "8867-4", "system": "http://loinc.org"}]
        },
        "status": "final",
        "extension": [
            {"valueBoolean": True, "url": "http://example.org/fhir/StructureDefinition/flag"}
        ],
        "meta": {"versionId": "1"},
        "id": "hr",
        "resourceType": "Observation",
    }
    assert json_to_xml(resource, pretty=True).decode() == EXPECTED_OBSERVATION_XML.rstrip("\n")
    compact = json_to_xml(resource)
    assert compact.startswith(b'<?xml version="1.0" encoding="UTF-8"?>\n<Observation xmlns=')
    assert xml_to_json(compact) == xml_to_json(EXPECTED_OBSERVATION_XML)


def test_json_to_xml_number_and_boolean_literals() -> None:
    resource = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"text": "x"},
        "valueQuantity": {"value": Decimal("0.0000001")},
        "referenceRange": [{"low": {"value": 1.25}, "high": {"value": Decimal("1E+2")}}],
        "component": [{"code": {"text": "b"}, "valueBoolean": False}],
    }
    xml = json_to_xml(resource)
    assert b'<value value="0.0000001"/>' in xml
    assert b'<value value="1.25"/>' in xml
    assert b'<value value="1E+2"/>' in xml
    assert b'<valueBoolean value="false"/>' in xml
    assert b"True" not in xml and b"False" not in xml


def test_json_primitive_extensions_written_as_xml() -> None:
    resource = {
        "resourceType": "Patient",
        "_gender": {"extension": [{"url": "http://e.org/x", "valueCode": "u"}]},
        "name": [{"given": [None, "Jim"], "_given": [{"id": "g0"}, None]}],
    }
    xml = json_to_xml(resource).decode()
    assert (
        '<gender><extension url="http://e.org/x"><valueCode value="u"/></extension></gender>' in xml
    )
    assert '<given id="g0"/><given value="Jim"/>' in xml
    assert xml_to_json(xml.encode()) == resource


# --------------------------------------------------------------------------- errors


def _error(doc: str | bytes) -> FhirXmlError:
    with pytest.raises(FhirXmlError) as info:
        xml_to_json(doc)
    assert isinstance(info.value, ValueError)
    return info.value


def test_unknown_element_names_its_path() -> None:
    err = _error(f"<Patient {F}><name><given value='a'/><nickname value='b'/></name></Patient>")
    assert err.path == "Patient.name[0].nickname"
    assert str(err).startswith("Patient.name[0].nickname: unknown element")


def test_unknown_element_inside_primitive() -> None:
    err = _error(f"<Patient {F}><name><given value='a'><foo/></given></name></Patient>")
    assert err.path == "Patient.name[0].given[0].foo"


def test_duplicate_singleton_is_refused() -> None:
    err = _error(f"<Patient {F}><gender value='male'/><gender value='female'/></Patient>")
    assert err.path == "Patient.gender"
    assert "more than once" in str(err)


def test_doctype_and_xxe_are_refused() -> None:
    xxe = (
        '<?xml version="1.0"?>\n<!DOCTYPE Patient [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>\n'
        f'<Patient {F}><name><family value="&xxe;"/></name></Patient>'
    )
    assert "DOCTYPE" in str(_error(xxe))
    _error(xxe.encode("utf-16"))  # libxml2 refuses the external entity in the attribute
    # UTF-16 hides the DOCTYPE from a byte scan; the parsed document is still checked.
    in_text = (
        '<?xml version="1.0" encoding="UTF-16"?>\n'
        '<!DOCTYPE Patient [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>\n'
        f"<Patient {F}><text><status value='generated'/><div {X}>&xxe;</div></text></Patient>"
    )
    assert "DOCTYPE" in str(_error(in_text.encode("utf-16")))
    laughs = (
        '<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;">]>'
        f'<Patient {F}><id value="&lol2;"/></Patient>'
    )
    _error(laughs)
    _error(f"<Patient {F}><id value='&undefined;'/></Patient>")


def test_unknown_root_and_wrong_namespace() -> None:
    assert "unknown resource type" in str(_error(f"<Patientx {F}/>"))
    assert "namespace" in str(_error("<Patient><id value='a'/></Patient>"))
    assert "namespace" in str(_error(f"<Patient {F}><id xmlns='urn:x' value='a'/></Patient>"))
    err = _error(f"<Patient {F}><text><status value='generated'/><div/></text></Patient>")
    assert err.path == "Patient.text.div"


def test_malformed_xml() -> None:
    assert "well-formed" in str(_error(f"<Patient {F}><id value='a'></Patient>"))
    _error(b"")
    _error(b"\xff\xfe\x00garbage")


def test_bad_primitive_literals_and_attributes() -> None:
    assert _error(f"<Patient {F}><active value='yes'/></Patient>").path == "Patient.active"
    err = _error(
        f"<Observation {F}><valueQuantity><value value='1,5'/></valueQuantity></Observation>"
    )
    assert err.path == "Observation.valueQuantity.value"
    assert _error(f"<Patient {F}><active valu='true'/></Patient>").path == "Patient.active"
    assert _error(f"<Patient {F}><active/></Patient>").path == "Patient.active"
    assert _error(f"<Patient {F}>text<id value='a'/></Patient>").path == "Patient"


def test_contained_wrapper_must_hold_one_resource() -> None:
    err = _error(f"<Patient {F}><contained><Foo/></contained></Patient>")
    assert err.path == "Patient.contained[0]"
    err = _error(f"<Patient {F}><contained/></Patient>")
    assert err.path == "Patient.contained[0]"


def test_json_errors() -> None:
    with pytest.raises(FhirXmlError) as info:
        json_to_xml({"resourceType": "Patient", "name": [{"nickname": "x"}]})
    assert info.value.path == "Patient.name[0].nickname"
    with pytest.raises(FhirXmlError):
        json_to_xml({"resourceType": "NotAType"})
    with pytest.raises(FhirXmlError) as info:
        json_to_xml({"resourceType": "Patient", "active": "true"})
    assert info.value.path == "Patient.active"
    with pytest.raises(FhirXmlError):
        json_to_xml({"resourceType": "Patient", "gender": ["male"]})
    with pytest.raises(FhirXmlError):
        json_to_xml({"resourceType": "Patient", "name": [{"given": ["a"], "_given": [None, None]}]})
    with pytest.raises(FhirXmlError):
        json_to_xml({"resourceType": "Patient", "text": {"status": "generated", "div": "<p>x"}})
