"""The names writers lock before they look for what they may create (app/fhir/locks.py)."""

from __future__ import annotations

from app.fhir.locks import criteria_key, key_number
from hl7_adapters.er7 import parse_message
from hl7_adapters.locks import plan_keys
from hl7_adapters.mapping import map_message


def test_spellings_of_one_condition_are_one_name() -> None:
    assert criteria_key("Patient", "identifier=a%7Cb&name=x") == criteria_key(
        "Patient", "?name=x&identifier=a|b"
    )
    assert criteria_key("Patient", "identifier=a|b") != criteria_key("Patient", "identifier=a|c")


def test_a_feed_and_a_rest_client_naming_one_patient_lock_one_name() -> None:
    """The HL7 adapter locks `Patient?<match>` for the patient a message names; a REST
    conditional create by the same identifier locks the same name, so they wait for each
    other instead of both creating the patient."""
    message = parse_message(
        b"MSH|^~\\&|ADT|HOSP|MS|MS|20240101120000||ADT^A01^ADT_A01|C1|P|2.5.1\r"
        b"EVN|A01|20240101120000\rPID|1||4711^^^HOSP^MR||Doe^Jane||19700101|F\rPV1|1|I\r"
    )
    result = map_message(message)
    system = "urn:medisentinel:hl7v2:aa:HOSP"
    rest = criteria_key("Patient", f"identifier={system.replace(':', '%3A')}%7C4711")
    assert rest in plan_keys(result)
    assert key_number(rest) in {key_number(k) for k in plan_keys(result)}
