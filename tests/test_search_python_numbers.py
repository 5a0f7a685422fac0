"""A body built in Python (a caller of FhirService in process: an adapter, an agent, a bench
loader) may hold floats where a parsed JSON body holds Decimals; its numbers must be indexed
as the stored JSON writes them, or the resource is stored but never found by them."""

from __future__ import annotations

import uuid

from app.context import RequestContext
from app.db import create_db_engine
from app.fhir.hooks import Pipeline
from app.fhir.service import FhirService


def test_float_quantities_and_numbers_are_searchable_as_stored(database_url: str) -> None:
    db = create_db_engine(database_url, pool_size=1)
    service = FhirService(db, Pipeline())
    ctx = RequestContext.system("http://python-numbers.test/fhir")
    code = f"pn-{uuid.uuid4().hex[:10]}"
    observation = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://example.org/codes", "code": code}]},
        "valueQuantity": {
            "value": 5.4,
            "unit": "mg",
            "system": "http://unitsofmeasure.org",
            "code": "mg",
        },
    }
    risk = {
        "resourceType": "RiskAssessment",
        "status": "final",
        "identifier": [{"system": "http://example.org/risk", "value": code}],
        "subject": {"reference": "Patient/pn"},
        "prediction": [{"probabilityDecimal": 0.1}],
    }
    try:
        with service.unit_of_work(ctx, write=True) as uow:
            obs_id = service.create(uow, "Observation", observation).version.id
            risk_id = service.create(uow, "RiskAssessment", risk).version.id
        with service.unit_of_work(ctx, write=False) as uow:
            found = service.find_ids
            assert found(uow, "Observation", f"code={code}&value-quantity=5.4") == [obs_id]
            assert found(uow, "Observation", f"code={code}&value-quantity=5.4||mg") == [obs_id]
            # in base units: 5.4 mg is 0.0054 g
            assert found(
                uow, "Observation", f"code={code}&value-quantity=0.0054|http://unitsofmeasure.org|g"
            ) == [obs_id]
            assert found(uow, "Observation", f"code={code}&value-quantity=5.5") == []
            assert found(uow, "RiskAssessment", f"identifier={code}&probability=0.1") == [risk_id]
            assert found(uow, "RiskAssessment", f"identifier={code}&probability=gt0.1") == []
    finally:
        db.dispose()
