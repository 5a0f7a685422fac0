"""A real FHIR client (fhirpy's SyncFHIRClient, over `requests`) against the live server:
create, read, update, search, transaction and delete, as an integrating application would."""

from __future__ import annotations

import uuid

import pytest
from fhirpy import SyncFHIRClient
from fhirpy.base.exceptions import OperationOutcome, ResourceNotFound

from tests.helpers import unique

IDENTIFIER_SYSTEM = "urn:medisentinel:test:fhirpy"


@pytest.fixture
def fhir(base_url: str, system_token: str) -> SyncFHIRClient:
    return SyncFHIRClient(
        base_url, authorization=f"Bearer {system_token}", requests_config={"timeout": 30}
    )


def new_patient(fhir: SyncFHIRClient, **extra):
    return fhir.resource(
        "Patient",
        identifier=[{"system": IDENTIFIER_SYSTEM, "value": unique("mrn")}],
        name=[{"family": "Lovelace", "given": ["Ada"]}],
        gender="female",
        birthDate="1815-12-10",
        **extra,
    )


def test_create_read_update_search_delete(fhir: SyncFHIRClient) -> None:
    # create
    patient = new_patient(fhir)
    patient.save()
    assert patient.id
    assert patient["meta"]["versionId"] == "1"
    assert patient["name"][0]["family"] == "Lovelace"
    pid = patient.id

    # read, three ways fhirpy offers
    read = fhir.get("Patient", pid)
    assert read["id"] == pid
    assert read["gender"] == "female"
    assert read["identifier"] == patient["identifier"]
    by_reference = fhir.reference("Patient", pid).to_resource()
    assert by_reference.id == pid
    assert by_reference["birthDate"] == "1815-12-10"

    # update: change a field and save (PUT)
    by_reference["gender"] = "other"
    by_reference["telecom"] = [{"system": "phone", "value": "+44 20 7946 0000"}]
    by_reference.save()
    assert by_reference.id == pid
    assert by_reference["meta"]["versionId"] == "2"
    reread = fhir.get("Patient", pid)
    assert reread["gender"] == "other"
    assert reread["telecom"] == [{"system": "phone", "value": "+44 20 7946 0000"}]
    assert reread["meta"]["versionId"] == "2"

    # refresh() issues a conditional read (If-None-Match); the resource stays current
    patient.refresh()
    assert patient["gender"] == "other"

    # search by id
    found = fhir.resources("Patient").search(_id=pid).fetch()
    assert [p.id for p in found] == [pid]
    assert found[0]["gender"] == "other"
    assert fhir.resources("Patient").search(_id=pid).get().id == pid
    assert fhir.resources("Patient").search(_id=unique("none")).fetch() == []

    # search by identifier (token system|value)
    identifier = patient["identifier"][0]
    token = f"{identifier['system']}|{identifier['value']}"
    assert [p.id for p in fhir.resources("Patient").search(identifier=token).fetch()] == [pid]

    # delete, then reads are 410 Gone / 404, which fhirpy raises as ResourceNotFound
    patient.delete()
    with pytest.raises(ResourceNotFound):
        fhir.get("Patient", pid)
    with pytest.raises(ResourceNotFound):
        fhir.reference("Patient", pid).to_resource()
    assert fhir.resources("Patient").search(_id=pid).fetch() == []


def test_transaction_bundle(fhir: SyncFHIRClient) -> None:
    patient_url = f"urn:uuid:{uuid.uuid4()}"
    mrn = unique("mrn")
    bundle = fhir.resource(
        "Bundle",
        type="transaction",
        entry=[
            {
                "fullUrl": patient_url,
                "resource": {
                    "resourceType": "Patient",
                    "identifier": [{"system": IDENTIFIER_SYSTEM, "value": mrn}],
                    "name": [{"family": "Hopper", "given": ["Grace"]}],
                },
                "request": {"method": "POST", "url": "Patient"},
            },
            {
                "fullUrl": f"urn:uuid:{uuid.uuid4()}",
                "resource": {
                    "resourceType": "Observation",
                    "status": "final",
                    "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
                    "subject": {"reference": patient_url},
                    "valueQuantity": {
                        "value": 72,
                        "unit": "beats/minute",
                        "system": "http://unitsofmeasure.org",
                        "code": "/min",
                    },
                },
                "request": {"method": "POST", "url": "Observation"},
            },
        ],
    )

    # fhirpy POSTs a Bundle without id to the service base.
    response = fhir.execute("/", method="post", data=bundle.serialize())
    assert response["resourceType"] == "Bundle"
    assert response["type"] == "transaction-response"
    assert len(response["entry"]) == 2
    statuses = [entry["response"]["status"] for entry in response["entry"]]
    assert all(status.startswith("201") for status in statuses), statuses
    locations = [entry["response"]["location"] for entry in response["entry"]]
    patient_id = locations[0].split("Patient/", 1)[1].split("/", 1)[0]
    observation_id = locations[1].split("Observation/", 1)[1].split("/", 1)[0]

    # both were created, and the urn:uuid reference was rewritten to the new Patient
    patient = fhir.get("Patient", patient_id)
    assert patient["identifier"][0]["value"] == mrn
    observation = fhir.reference("Observation", observation_id).to_resource()
    assert observation["subject"].reference == f"Patient/{patient_id}"
    assert observation["valueQuantity"]["value"] == 72

    # the rewritten reference resolves through fhirpy, and a search finds the Observation
    assert observation["subject"].to_resource().id == patient_id
    found = fhir.resources("Observation").search(_id=observation_id).fetch()
    assert [o.id for o in found] == [observation_id]
    assert found[0]["subject"].reference == f"Patient/{patient_id}"

    # the same Bundle saved as a resource goes through the same endpoint
    second = fhir.resource("Bundle", **bundle.serialize())
    second["entry"][0]["resource"]["identifier"][0]["value"] = unique("mrn")
    second.save()
    assert second["type"] == "transaction-response"
    assert [e["response"]["status"][:3] for e in second["entry"]] == ["201", "201"]


def test_transaction_is_atomic(fhir: SyncFHIRClient) -> None:
    """A failing entry rolls the whole transaction back; fhirpy reports the OperationOutcome."""
    mrn = unique("mrn")
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "resource": {
                    "resourceType": "Patient",
                    "identifier": [{"system": IDENTIFIER_SYSTEM, "value": mrn}],
                },
                "request": {"method": "POST", "url": "Patient"},
            },
            {
                "resource": {"resourceType": "Patient", "gender": "not-a-gender"},
                "request": {"method": "POST", "url": "Patient"},
            },
        ],
    }
    with pytest.raises(OperationOutcome):
        fhir.execute("/", method="post", data=bundle)
    token = f"{IDENTIFIER_SYSTEM}|{mrn}"
    assert fhir.resources("Patient").search(identifier=token).fetch() == []
