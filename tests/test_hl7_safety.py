"""Results are never refiled under another patient by a reused order number."""

from __future__ import annotations

import uuid

import httpx

from hl7_adapters.edits import merge_elements
from hl7_adapters.er7 import parse_messages

ER7 = "x-application/hl7-v2+er7"


def oru(mrn: str, order: str, value: str) -> bytes:
    segments = [
        f"MSH|^~\\&|LAB|GENLAB|MEDISENTINEL|HUB|20240105090000+0000||ORU^R01|{uuid.uuid4().hex}|P|2.5.1",
        f"PID|1||{mrn}^^^GENHOSP&1.2.3.4&ISO^MR||Safe^Sam||19700315|M",
        f"OBR|1||{order}^GENLAB|2093-3^Cholesterol^LN|||20240105083000+0000",
        f"OBX|1|NM|2093-3^Cholesterol^LN||{value}|mg/dL^mg/dL^UCUM|<200||||F",
    ]
    return "\r".join(segments).encode() + b"\r"


def post(http: httpx.Client, body: bytes) -> tuple[str, str]:
    response = http.post("/hl7/v2", content=body, headers={"Content-Type": ER7})
    assert response.status_code == 200, response.text
    ack = parse_messages(response.content)[0]
    return ack.get("MSA-1"), ack.get("ERR-8") or ack.get("MSA-3")


def test_an_order_number_reused_for_another_patient_is_refused(
    base_url: str, auth_headers: dict[str, str], client: httpx.Client
) -> None:
    order, first, second = (uuid.uuid4().hex[:10] for _ in range(3))
    with httpx.Client(base_url=base_url.removesuffix("/fhir"), headers=auth_headers) as http:
        assert post(http, oru(first, order, "182"))[0] == "AA"
        assert post(http, oru(first, order, "190"))[0] == "AA"  # a correction: same patient
        code, text = post(http, oru(second, order, "201"))
    assert code == "AE"
    assert "belongs to another patient" in text and "Patient/" not in text
    assert f"of order {order}" in text  # the order number as sent, not a search string
    found = client.get("/Observation", params={"subject.identifier": f"urn:oid:1.2.3.4|{first}"})
    (entry,) = found.json()["entry"]
    assert entry["resource"]["valueQuantity"]["value"] == 190  # corrected, and still theirs
    other = client.get("/Patient", params={"identifier": f"urn:oid:1.2.3.4|{second}"})
    assert other.json().get("entry") is None  # the refused message left nothing behind


def test_an_update_with_another_variant_of_a_choice_drops_the_stored_one() -> None:
    stored = {"resourceType": "DiagnosticReport", "effectiveDateTime": "2024-01-05", "id": "x"}
    mapped = {"resourceType": "DiagnosticReport", "effectivePeriod": {"start": "2024-01-05"}}
    merged = merge_elements(stored, mapped, frozenset(), ())
    assert merged == {
        "resourceType": "DiagnosticReport",
        "id": "x",
        "effectivePeriod": {"start": "2024-01-05"},
    }
    observation = {"resourceType": "Observation", "valueQuantity": {"value": 1}, "status": "final"}
    corrected = merge_elements(
        observation, {"resourceType": "Observation", "valueString": "n/a"}, frozenset(), ()
    )
    assert "valueQuantity" not in corrected and corrected["valueString"] == "n/a"
    assert corrected["status"] == "final"  # everything else is kept
