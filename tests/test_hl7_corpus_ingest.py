"""The shared HL7 v2 corpus (../shared/hl7v2, read in place) fed to the running server, in
file order, through POST /hl7/v2 (which answers even the messages that ask for no
acknowledgment, as several samples do; MLLP itself is tested in test_hl7_mllp_server.py):
every message gets an ACK with the right code,
and what the mapping promises (tests/test_hl7_mapping_corpus.py) is then in the FHIR store:
the patient found by its identifier with its family name, the results as Observations.

Each message is re-sent with a fresh control id (MSH-10), so that a second run of the suite
against the same database is not answered as a duplicate. Skipped when the corpus is absent.
"""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from hl7_adapters.er7 import Message, parse_messages
from tests.test_hl7_ingest import err_fields
from tests.test_hl7_mapping_corpus import ADT, CORPUS, ORU, UNSUPPORTED

pytestmark = pytest.mark.skipif(
    not CORPUS.is_dir(), reason=f"shared HL7 v2 corpus not found at {CORPUS} (../shared absent)"
)
ER7 = "x-application/hl7-v2+er7"
REFUSED_CONTENT = ["15_ORU_R01_lab.hl7", "25_ORU_R01_textreport.hl7"]  # OBX without OBX-3
# Sample 23 (an IHE example) reuses sample 21's order number CD12345 and result identities
# for another patient (same name, another identifier): refiling 21's results under that
# patient would be wrong, so the server refuses it (AE 205) instead of moving them.
REUSED_ORDER = "23_ORU_R01_pcd01.hl7"
# Sample 19 (the IG's ORU test message) names sample 04's visit number (PV1-19) for its patient
# under another assigning authority (1032702 of OrdOrg, not of V2FHIR): for us another patient,
# so its results are not filed under 04's Encounter (AE 205 at PV1^1^19).
REUSED_VISIT = "19_ORU_R01_lab.hl7"


def fresh(raw: bytes) -> list[bytes]:
    """Each message of a file, its MSH-10 replaced by a new control id and its MSH-11
    processing id made P: several samples say T or D (they are examples), which a server
    refuses by default (AR 202, test_a_training_sample_is_refused_by_default)."""
    found = []
    for msg in parse_messages(raw):
        old = msg.get("MSH-10").encode()
        fs = msg.raw[3:4]
        fields = msg.raw.split(fs, 11)
        assert fields[9] == old, (fields[9], old)
        fields[9] = uuid.uuid4().hex[:20].encode()
        if fields[10][:1] in (b"T", b"D"):
            fields[10] = b"P" + fields[10][1:]
        found.append(fs.join(fields))
    return found


def ack_codes(http: httpx.Client, name: str) -> list[str]:
    codes = []
    for message in fresh((CORPUS / name).read_bytes()):
        response = http.post("/hl7/v2", content=message, headers={"Content-Type": ER7})
        assert response.status_code == 200, response.text
        codes.append(application_outcome(parse_messages(response.content)))
    return codes


def application_outcome(acks: list[Message]) -> str:
    """AA/AE/AR: the application ACK when one was sent; else (enhanced mode, MSH-16 NE) read
    from the commit ACK: CR/CE as AR/AE, a CA as AE when it carries an error, else AA."""
    code = acks[-1].get("MSA-1")
    if code.startswith("A"):
        return code
    errors = [e for e in acks[-1].segments("ERR") if e.get("4") in ("E", "F")]
    return "AE" if code == "CA" and errors else "A" + code[1:]


@pytest.fixture(scope="module")
def codes(base_url: str, auth_headers: dict[str, str]) -> dict[str, list[str]]:
    """Every sample sent once, in file order (merges after the admissions they name)."""
    root = base_url.removesuffix("/fhir")
    with httpx.Client(base_url=root, headers=auth_headers, timeout=60) as http:
        return {path.name: ack_codes(http, path.name) for path in sorted(CORPUS.glob("*.hl7"))}


def search(client: httpx.Client, rtype: str, query: str) -> list[dict[str, Any]]:
    response = client.get(f"/{rtype}?{query}&_count=200")
    assert response.status_code == 200, response.text
    return [e["resource"] for e in response.json().get("entry", [])]


@pytest.mark.parametrize(("name", "match", "family"), [(a[0], a[1], a[2]) for a in ADT])
def test_admissions_are_accepted_and_the_patient_is_there(
    codes: dict[str, list[str]], client: httpx.Client, name: str, match: str, family: str
) -> None:
    assert set(codes[name]) == {"AA"}, codes[name]
    found = search(client, "Patient", match)
    assert found, f"no Patient {match}"
    assert family in {n.get("family") for p in found for n in p.get("name", [])}


@pytest.mark.parametrize(
    ("name", "match", "family", "count"),
    [(o[0], o[1], o[2], len(o[3])) for o in ORU if o[0] not in (REUSED_ORDER, REUSED_VISIT)],
)
def test_results_are_accepted_and_filed_under_the_patient(
    codes: dict[str, list[str]], client: httpx.Client, name: str, match: str, family: str,
    count: int,
) -> None:  # fmt: skip
    assert set(codes[name]) == {"AA"}, codes[name]
    (patient,) = [p for p in search(client, "Patient", match) if p.get("active", True)][:1]
    observations = search(client, "Observation", f"subject=Patient/{patient['id']}")
    assert len(observations) >= count


@pytest.mark.parametrize("name", [REUSED_ORDER, REUSED_VISIT])
def test_a_result_reusing_another_patients_order_or_visit_is_AE(
    codes: dict[str, list[str]], name: str
) -> None:
    assert codes[name] == ["AE"]


@pytest.mark.parametrize("name", REFUSED_CONTENT)
def test_results_missing_a_required_field_are_AE(codes: dict[str, list[str]], name: str) -> None:
    assert set(codes[name]) == {"AE"}, codes[name]


@pytest.mark.parametrize("name", UNSUPPORTED)
def test_other_message_types_are_AR(codes: dict[str, list[str]], name: str) -> None:
    assert set(codes[name]) == {"AR"}, codes[name]


def test_every_sample_was_answered(codes: dict[str, list[str]]) -> None:
    assert len(codes) == 35
    assert all(codes.values())


def test_a_training_sample_is_refused_by_default(
    base_url: str, auth_headers: dict[str, str]
) -> None:
    [message] = parse_messages((CORPUS / "08_ADT_A04.hl7").read_bytes())
    assert message.processing_id == "T"
    fs = message.raw[3:4]
    fields = message.raw.split(fs, 10)
    fields[9] = uuid.uuid4().hex[:20].encode()
    with httpx.Client(base_url=base_url.removesuffix("/fhir"), headers=auth_headers) as http:
        response = http.post("/hl7/v2", content=fs.join(fields), headers={"Content-Type": ER7})
    assert parse_messages(response.content)[0].get("MSA-1") == "AR"
    assert err_fields(response.content) == [("MSH^1^11", "202", "E")]
