"""Answers asked for in FHIR XML when the request quotes characters XML cannot carry.

XML 1.0 has no control characters below U+0020 (but tab, CR, LF) and no U+FFFE / U+FFFF;
JSON has them all. Found by tests/test_xml_fuzz.py: an error quoting such a character fell
back to a JSON answer, an outcome inside a 200 ($validate, a batch entry, a search's
ignored parameter) was a 500, and a resource holding U+FFFF was stored from JSON and then
could not be read as XML at all.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest
from lxml import etree

from app.api import formats
from app.errors import NotAcceptable

FHIR = "{http://hl7.org/fhir}"
XML = "application/fhir+xml"
JSON_BODY = {"Content-Type": "application/fhir+json"}


@pytest.fixture
def xml_client(base_url: str, auth_headers: dict[str, str]) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base_url, headers={"Accept": XML, **auth_headers}) as http:
        yield http


def _xml(response: httpx.Response, status: int) -> etree._Element:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(XML), response.text
    return etree.fromstring(response.content)


def _values(root: etree._Element, path: str) -> list[str]:
    return [el.get("value", "") for el in root.iterfind(path)]


def test_an_error_quoting_a_control_character_is_an_xml_outcome(
    xml_client: httpx.Client,
) -> None:
    body = json.dumps({"resourceType": "Patient", "na\u0001me": [{"family": "X"}]})
    root = _xml(xml_client.post("/Patient", content=body, headers=JSON_BODY), 400)
    assert root.tag == f"{FHIR}OperationOutcome"
    assert "Patient.na\\u0001me" in _values(root, f"{FHIR}issue/{FHIR}expression")

    root = _xml(xml_client.get("/Patient/a%01b"), 404)
    assert _values(root, f"{FHIR}issue/{FHIR}diagnostics") == ["Patient/a\\u0001b is not known"]


def test_a_validate_outcome_quoting_a_control_character_is_xml(xml_client: httpx.Client) -> None:
    body = json.dumps({"resourceType": "Patient", "a\u0001": 1})
    root = _xml(xml_client.post("/Patient/$validate", content=body, headers=JSON_BODY), 200)
    assert root.tag == f"{FHIR}OperationOutcome"
    assert "Patient.a\\u0001" in _values(root, f"{FHIR}issue/{FHIR}expression")


def test_a_batch_entry_outcome_quoting_uffff_is_xml(xml_client: httpx.Client) -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [{"request": {"method": "GET", "url": "Patient/a\uffffb"}}],
    }
    root = _xml(xml_client.post("", content=json.dumps(bundle), headers=JSON_BODY), 200)
    status = _values(root, f"{FHIR}entry/{FHIR}response/{FHIR}status")
    assert status == ["404 Not Found"]
    outcome = f"{FHIR}entry/{FHIR}response/{FHIR}outcome/{FHIR}OperationOutcome/{FHIR}issue"
    notes = _values(root, f"{outcome}/{FHIR}diagnostics")
    assert notes == ["Bundle.entry[0]: Patient/a\\uffffb is not known"]


def test_an_ignored_search_parameter_named_with_uffff_is_xml(xml_client: httpx.Client) -> None:
    root = _xml(xml_client.get("/Patient?x%EF%BF%BF=1&_count=1"), 200)
    notes = _values(root, f".//{FHIR}OperationOutcome/{FHIR}issue/{FHIR}diagnostics")
    assert notes == ["ignored unsupported search parameters: x\\uffff"]


@pytest.mark.parametrize("character", ["\ufffe", "\uffff"])
def test_a_resource_holding_what_xml_cannot_is_refused(
    client: httpx.Client, character: str
) -> None:
    """Stored from JSON, it could never be read as XML (a 500 on every XML read)."""
    body = {"resourceType": "Patient", "name": [{"family": f"a{character}"}]}
    response = client.post("/Patient", content=json.dumps(body), headers=JSON_BODY)
    assert response.status_code == 400, response.text
    (issue,) = response.json()["issue"]
    assert issue["expression"] == ["Patient.name[0].family"]
    assert "XML cannot hold" in issue["diagnostics"]


def test_stored_content_xml_cannot_hold_is_not_acceptable_in_xml() -> None:
    """What was stored before such writes were refused: 406 naming where, JSON still works."""
    stored = {"resourceType": "Patient", "name": [{"family": "a\uffff"}]}
    with pytest.raises(NotAcceptable) as refused:
        formats.render(stored, "xml", pretty=False)
    assert refused.value.issues[0].expression == ("Patient.name[0].family",)
    content, _ = formats.render(stored, "json", pretty=False)
    assert json.loads(content) == stored
