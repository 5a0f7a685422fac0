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


def included(service: FhirService, rtype: str, query: str) -> set[tuple[str, str, int]]:
    with service.unit_of_work(CTX, write=False) as uow:
        result = service.search(uow, rtype, SearchParams.parse_query(query, rtype, strict=True))
    return {(v.resource_type, v.id, v.version_id) for v in result.included}


def test_an_included_older_version_is_followed_by_its_own_references(
    service: FhirService,
) -> None:
    """`:iterate` from a version that a versioned reference brought follows what that
    version refers to (R4 search.html#include: the included resources' references); it
    followed the current version's index rows, so `Patient/p/_history/1` (organization A,
    since changed to B) brought B, which nothing listed refers to. And a later round's
    reference to the same Patient without a version brings its current version too, as a
    reference without one does in the same round: the older version stood for it."""
    tag = uuid.uuid4().hex
    meta = {"tag": [{"system": "http://joinregress.test", "code": tag}]}
    org = {"resourceType": "Organization", "meta": meta, "name": "x"}
    first, second = (create(service, org) for _ in "ab")
    patient = create(service, {
        "resourceType": "Patient", "meta": meta,
        "managingOrganization": {"reference": f"Organization/{first}"},
    })  # fmt: skip
    with service.unit_of_work(CTX, write=True) as uow:
        service.update(uow, "Patient", patient, {
            "resourceType": "Patient", "id": patient, "meta": meta,
            "managingOrganization": {"reference": f"Organization/{second}"},
        })  # fmt: skip
    encounter = create(service, {
        "resourceType": "Encounter", "meta": meta, "status": "finished",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
        "subject": {"reference": f"Patient/{patient}"},
    })  # fmt: skip
    create(service, {
        "resourceType": "Observation", "meta": meta, "status": "final", "code": {"text": "x"},
        "subject": {"reference": f"Patient/{patient}/_history/1"},
        "encounter": {"reference": f"Encounter/{encounter}"},
    })  # fmt: skip
    query = f"_tag={tag}&_include=Observation:subject&_include:iterate=Patient:organization"
    assert included(service, "Observation", query) == {
        ("Patient", patient, 1),
        ("Organization", first, 1),
    }
    query = f"_tag={tag}&_include=Observation:subject&_include=Observation:encounter"
    query += "&_include:iterate=Encounter:subject"
    assert included(service, "Observation", query) == {
        ("Patient", patient, 1),
        ("Encounter", encounter, 1),
        ("Patient", patient, 2),
    }
