"""Versioned references in reference search (docs/search.md, "Versioned references").

R4 defines no versioned form of a reference search value (search.html#reference lists `[id]`,
`[type]/[id]`, `[url]` and a canonical's `[url]|[version]`; R5 adds
`[type]/[id]/_history/[version]` as trial use, which a server MAY refuse), and
search.html#versions has search work on current versions. So this server does what HAPI FHIR
does: a reference search compares the resource a reference names, never its version. A stored
`Patient/1/_history/2` is found by `subject=Patient/1`, and `subject=Patient/1/_history/2`
finds every reference to Patient/1, with a warning saying the version was not compared.
That holds for references to other servers too, which were compared as whole URLs
(`http://other/fhir/Patient/1` missed `http://other/fhir/Patient/1/_history/2`), and for the
`:Patient` modifier (`subject:Patient=1/_history/2` matched nothing)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from app.context import RequestContext
from app.fhir.search import SearchParams
from app.fhir.service import FhirService
from tests.helpers import FHIR_JSON, unique
from tests.test_search_shape_cache import service

BASE = "http://versioned.test/fhir"
CTX = RequestContext.system(BASE)
OTHER = "http://other.example/fhir"
__all__ = ["service"]  # the fixture, shared with test_search_shape_cache

# label -> subject.reference, with <X> and <Y> for the two Patients' ids
STORED = {
    "A": "Patient/<X>",
    "B": "Patient/<X>/_history/1",
    "C": "Patient/<X>/_history/2",
    "D": f"{BASE}/Patient/<X>/_history/2",
    "E": f"{OTHER}/Patient/<X>",
    "F": f"{OTHER}/Patient/<X>/_history/2",
    "G": "Patient/<Y>/_history/1",
}
OURS = {"A", "B", "C", "D"}  # every reference to our Patient X, whatever its version
THEIRS = {"E", "F"}  # the other server's Patient X


@pytest.fixture(scope="module")
def stored(service: FhirService) -> Iterator[tuple[str, str, dict[str, str]]]:
    """Patients X (two versions) and Y, and an Observation per STORED reference."""
    name = f"vref{uuid.uuid4().hex[:10]}"
    with service.unit_of_work(CTX, write=True) as uow:
        patient = {"resourceType": "Patient", "name": [{"family": name}]}
        x = service.create(uow, "Patient", patient).version.id
        service.update(uow, "Patient", x, {**patient, "id": x, "gender": "female"})
        y = service.create(uow, "Patient", {"resourceType": "Patient"}).version.id
        ids = {}
        for label, reference in STORED.items():
            subject = {"reference": reference.replace("<X>", x).replace("<Y>", y)}
            body = {"resourceType": "Observation", "status": "final", "code": {"text": name},
                    "subject": subject}  # fmt: skip
            ids[label] = service.create(uow, "Observation", body).version.id
    yield x, y, ids


def _found(service: FhirService, query: str) -> tuple[set[str], tuple[str, ...]]:
    with service.unit_of_work(CTX, write=False) as uow:
        params = SearchParams.parse_query(query, "Observation", strict=True)
        result = service.search(uow, "Observation", params)
    return {v.id for v in result.versions}, result.warnings


# (query, with <X>, <Y>, <B> for the base and <O> for the other server; the labels it must find,
# versioned: whether the search value names a version). It must find nothing else of STORED.
CASES = [
    ("subject=Patient/<X>", OURS, False),
    ("subject=Patient/<X>/_history/2", OURS, True),
    ("subject=Patient/<X>/_history/1", OURS, True),
    ("subject=Patient/<X>/_history/99", OURS, True),  # no such version: still the Patient
    ("subject=<X>", OURS, False),
    ("subject=<B>/Patient/<X>", OURS, False),
    ("subject=<B>/Patient/<X>/_history/2", OURS, True),
    ("subject:Patient=<X>/_history/2", OURS, True),
    ("patient=Patient/<X>/_history/1", OURS, True),
    ("subject=<O>/Patient/<X>", THEIRS, False),
    ("subject=<O>/Patient/<X>/_history/2", THEIRS, True),
    ("subject=<O>/Patient/<X>/_history/1", THEIRS, True),
    ("subject=Patient/<Y>", {"G"}, False),
    ("subject=Patient/<Y>/_history/7", {"G"}, True),
    ("subject=Patient/<X>/_history/2,Patient/<Y>", OURS | {"G"}, True),
]


@pytest.mark.parametrize(("query", "must", "versioned"), CASES)
def test_a_reference_search_compares_the_resource_not_its_version(
    service: FhirService,
    stored: tuple[str, str, dict[str, str]],
    query: str,
    must: set[str],
    versioned: bool,
) -> None:
    x, y, ids = stored
    written = query.replace("<X>", x).replace("<Y>", y).replace("<B>", BASE)
    found, warnings = _found(service, written.replace("<O>", OTHER))
    labels = {label for label, rid in ids.items() if rid in found}
    assert labels == must, (query, labels)
    noted = [w for w in warnings if "version" in w]
    assert bool(noted) == versioned, warnings
    if versioned:
        assert "_history" in noted[0] and "any version" in noted[0], noted


def test_a_chain_through_a_versioned_reference_reads_the_current_version(
    service: FhirService, stored: tuple[str, str, dict[str, str]]
) -> None:
    """search.html#versions: search works on current versions (X's second version is female)."""
    x, _, ids = stored
    found, _ = _found(service, f"subject:Patient.gender=female&subject=Patient/{x}")
    assert {label for label, rid in ids.items() if rid in found} == OURS


def test_the_bundle_says_the_version_was_not_compared(client: httpx.Client) -> None:
    """Over HTTP: the warning is an outcome entry of the searchset."""
    created = client.post("/Patient", json={"resourceType": "Patient"}, headers=FHIR_JSON)
    pid = created.json()["id"]
    body = {"resourceType": "Observation", "status": "final", "code": {"text": unique("vref")},
            "subject": {"reference": f"Patient/{pid}/_history/1"}}  # fmt: skip
    oid = client.post("/Observation", json=body, headers=FHIR_JSON).json()["id"]
    for value, warned in ((f"Patient/{pid}/_history/5", True), (f"Patient/{pid}", False)):
        bundle = client.get("/Observation", params={"subject": value}).json()
        entries = bundle.get("entry", [])
        assert [e["resource"]["id"] for e in entries if e["search"]["mode"] == "match"] == [oid]
        notes = [
            issue["diagnostics"]
            for e in entries
            if e["search"]["mode"] == "outcome"
            for issue in e["resource"]["issue"]
        ]
        assert any("any version" in n for n in notes) == warned, notes


def _included(service: FhirService, query: str) -> set[tuple[str, str, int]]:
    with service.unit_of_work(CTX, write=False) as uow:
        params = SearchParams.parse_query(query, "Observation", strict=True)
        result = service.search(uow, "Observation", params)
    return {(v.resource_type, v.id, v.version_id) for v in result.included}


def test_include_of_a_versioned_reference_returns_the_version_named(
    service: FhirService,
) -> None:
    """search.html#versions: "If a resource has a reference that is versioned and _include
    is performed, the specified version SHOULD be provided". The current version came back.
    A target named both with and without a version comes in both; a version of a resource
    deleted since is still the version named; a version that never was brings nothing."""
    name = f"vinc{uuid.uuid4().hex[:10]}"
    with service.unit_of_work(CTX, write=True) as uow:
        patient = {"resourceType": "Patient", "name": [{"family": name}]}
        x = service.create(uow, "Patient", patient).version.id
        for gender in ("female", "male"):  # versions 2 and 3
            service.update(uow, "Patient", x, {**patient, "id": x, "gender": gender})
        gone = service.create(uow, "Patient", patient).version.id
        service.delete(uow, "Patient", gone)
        made = {}
        for label, reference in {
            "v2": f"Patient/{x}/_history/2",
            "v1abs": f"{BASE}/Patient/{x}/_history/1",
            "plain": f"Patient/{x}",
            "gone1": f"Patient/{gone}/_history/1",
            "never": f"Patient/{x}/_history/9",
            "other": f"{OTHER}/Patient/{x}/_history/1",
        }.items():
            body = {"resourceType": "Observation", "status": "final", "code": {"text": name},
                    "subject": {"reference": reference}}  # fmt: skip
            made[label] = service.create(uow, "Observation", body).version.id

    def included(*labels: str, include: str = "Observation:subject") -> set[Any]:
        ids = ",".join(made[label] for label in labels)
        return _included(service, f"_id={ids}&_include={include}")

    assert included("v2") == {("Patient", x, 2)}
    assert included("v2", include="*") == {("Patient", x, 2)}
    assert included("v2", include="Observation:patient") == {("Patient", x, 2)}
    assert included("v1abs") == {("Patient", x, 1)}
    assert included("v2", "v1abs") == {("Patient", x, 2), ("Patient", x, 1)}
    assert included("v2", "plain") == {("Patient", x, 2), ("Patient", x, 3)}
    assert included("plain") == {("Patient", x, 3)}
    assert included("gone1") == {("Patient", gone, 1)}
    assert included("never") == set()
    assert included("other") == set()  # another server's Patient is never ours
