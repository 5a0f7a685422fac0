"""Regressions found by tests/test_search_joins_differential.py, each on its own."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from app.context import RequestContext
from app.db import create_db_engine
from app.fhir.hooks import Pipeline
from app.fhir.search import SearchParams
from app.fhir.service import FhirService

BASE = "http://joinregress.test/fhir"
CTX = RequestContext.system(BASE)


@pytest.fixture(scope="module")
def service(database_url: str) -> Iterator[FhirService]:
    db = create_db_engine(database_url, pool_size=2)
    yield FhirService(db, Pipeline())
    db.dispose()


def create(service: FhirService, body: dict[str, Any]) -> str:
    with service.unit_of_work(CTX, write=True) as uow:
        return service.create(uow, body["resourceType"], body).version.id


def found(service: FhirService, rtype: str, query: str) -> set[str]:
    with service.unit_of_work(CTX, write=False) as uow:
        result = service.search(uow, rtype, SearchParams.parse_query(query, rtype, strict=True))
    return {v.id for v in result.versions}


def test_a_chain_reaches_only_resources_that_are_there(service: FhirService) -> None:
    """A chain names a resource that matches: a reference to one deleted since, or never
    written, reaches nothing, whatever the criterion at its end. Criteria that need no
    index rows of the target (`_has`, `_id`, `:missing=true`, `:not`) let such references
    through: `Encounter?participant._has:Encounter:participant:class=IMP` found an Encounter
    whose Practitioner was deleted (the index rows of the Encounter itself answered the
    `_has`)."""
    tag = uuid.uuid4().hex
    meta = {"tag": [{"system": "http://joinregress.test", "code": tag}]}
    gone = create(service, {"resourceType": "Practitioner", "meta": meta})
    with service.unit_of_work(CTX, write=True) as uow:
        service.delete(uow, "Practitioner", gone)
    here = create(service, {"resourceType": "Practitioner", "meta": meta})
    encounters = {
        target: create(
            service,
            {
                "resourceType": "Encounter",
                "meta": meta,
                "status": "finished",
                "class": {
                    "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                    "code": "IMP",
                },
                "participant": [{"individual": {"reference": f"Practitioner/{target}"}}],
            },
        )
        for target in (gone, "never-written", here)
    }
    live = {encounters[here]}
    for chained in (
        "participant._has:Encounter:participant:class=IMP",
        f"participant._id={gone},never-written,{here}",
        "participant:Practitioner.name:missing=true",
        "participant.gender:not=male",
        "participant._lastUpdated=gt2000",
    ):
        assert found(service, "Encounter", f"{chained}&_tag={tag}") == live, chained


def test_a_version_named_and_current_is_included_once(service: FhirService) -> None:
    """`_include` of `Patient/1/_history/1` (the current version) and of `Patient/1` from
    another match is one resource: it came twice, once from the index and once from the
    versions named (versioned_includes.py)."""
    tag = uuid.uuid4().hex
    meta = {"tag": [{"system": "http://joinregress.test", "code": tag}]}
    patient = create(service, {"resourceType": "Patient", "meta": meta})
    for reference in (f"Patient/{patient}/_history/1", f"Patient/{patient}"):
        create(service, {
            "resourceType": "Observation", "meta": meta, "status": "final",
            "code": {"text": "x"}, "subject": {"reference": reference},
        })  # fmt: skip
    query = f"_tag={tag}&_include=Observation:subject"
    with service.unit_of_work(CTX, write=False) as uow:
        result = service.search(uow, "Observation", SearchParams.parse_query(query, "Observation"))
    assert len(result.versions) == 2
    assert [(v.resource_type, v.id, v.version_id) for v in result.included] == [
        ("Patient", patient, 1)
    ]
