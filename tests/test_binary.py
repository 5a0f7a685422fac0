"""Binary in its native form (R4 binary.html): raw content written to /Binary is stored as the
data of a Binary resource, with X-Security-Context as its securityContext, and read back as
it came, with the security context in the same header."""

from __future__ import annotations

import base64
import json

import httpx

from tests.helpers import FHIR_JSON, patient, unique

PDF = b"%PDF-1.4 \x00\xff raw"


def test_raw_post_is_stored_as_a_binary_and_read_back_natively(client: httpx.Client) -> None:
    headers = {"Content-Type": "application/pdf", "X-Security-Context": "Patient/p1"}
    created = client.post("/Binary", content=PDF, headers=headers)
    assert created.status_code == 201, created.text
    resource = created.json()
    assert resource["resourceType"] == "Binary"
    assert resource["contentType"] == "application/pdf"
    assert base64.b64decode(resource["data"]) == PDF
    assert resource["securityContext"] == {"reference": "Patient/p1"}
    native = client.get(f"/Binary/{resource['id']}", headers={"Accept": "application/pdf"})
    assert native.status_code == 200, native.text
    assert native.content == PDF
    assert native.headers["content-type"] == "application/pdf"
    assert native.headers["x-security-context"] == "Patient/p1"


def test_raw_put_creates_and_updates_with_the_content_type_as_sent(client: httpx.Client) -> None:
    rid = unique("bin")
    text = "Grüße".encode("latin-1")  # the charset belongs to the content, not refused
    content_type = "text/plain; charset=iso-8859-1"
    first = client.put(f"/Binary/{rid}", content=text, headers={"Content-Type": content_type})
    assert first.status_code == 201, first.text
    second = client.put(f"/Binary/{rid}", content=b"v2", headers={"Content-Type": "text/plain"})
    assert second.status_code == 200, second.text
    assert second.json()["id"] == rid and second.headers["etag"] == 'W/"2"'
    old = client.get(f"/Binary/{rid}/_history/1", headers={"Accept": "text/plain"})
    assert old.content == text and old.headers["content-type"] == content_type
    assert "x-security-context" not in old.headers
    assert client.get(f"/Binary/{rid}", headers={"Accept": "text/*"}).content == b"v2"


def test_fhir_content_that_is_not_a_binary_is_stored_as_is(client: httpx.Client) -> None:
    """binary.html: content of a FHIR type is the Binary's data too, unless it is a Binary
    resource itself."""
    raw = json.dumps(patient()).encode()
    created = client.post("/Binary", content=raw, headers=FHIR_JSON)
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["resourceType"] == "Binary"
    assert body["contentType"] == FHIR_JSON["Content-Type"]
    assert base64.b64decode(body["data"]) == raw
    resource = {"resourceType": "Binary", "contentType": "text/plain", "data": "aGk="}
    kept = client.post("/Binary", json=resource, headers=FHIR_JSON).json()
    assert kept["contentType"] == "text/plain" and kept["data"] == "aGk="


def test_raw_writes_go_through_the_door(client: httpx.Client) -> None:
    """A raw PUT is an update like any other: its URL id is checked, If-Match applies."""
    bad = client.put("/Binary/not!valid", content=PDF, headers={"Content-Type": "application/pdf"})
    assert bad.status_code == 400 and bad.json()["resourceType"] == "OperationOutcome"
    rid = unique("bin")
    stale = {"Content-Type": "application/pdf", "If-Match": 'W/"3"'}
    assert client.put(f"/Binary/{rid}", content=PDF, headers=stale).status_code == 412
    # elsewhere raw content is not a FHIR body
    refused = client.post("/Patient", content=PDF, headers={"Content-Type": "application/pdf"})
    assert refused.status_code == 415
