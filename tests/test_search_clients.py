"""The same searches through two real FHIR clients, fhirpy (SyncFHIRClient, over requests) and
SMART's fhirclient (R4 models): each must return the expected resources, follow the server's
next links to the end, and see _include entries.

fhirclient's struct operators ($gt, $lt, ...) produce the DSTU1 form (birthdate=>1980), which
no R4 server understands; the R4 prefixes are written in the values instead (date=ge2024).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fhirclient import client as smart_client
from fhirclient.auth import FHIROAuth2Auth
from fhirclient.models.bundle import Bundle
from fhirclient.models.fhirsearch import FHIRSearch
from fhirclient.models.observation import Observation
from fhirclient.models.patient import Patient
from fhirpy import SyncFHIRClient

from tests.test_search_params import SCENARIOS, SCOPE_SYSTEM, Loaded, World, world_of

FHIRCLIENT_MODELS = {"Patient": Patient, "Observation": Observation}

CLIENT_CASES = [
    # scenario, type, parameters, expected labels
    ("strings", "Patient", {"family": "zoe"}, "zoe zoeller upper"),
    ("strings", "Patient", {"family": "ZOË"}, "zoe zoeller upper"),
    ("strings", "Patient", {"family:exact": "Zoë"}, "zoe"),
    ("strings", "Patient", {"name:contains": "berg"}, "text"),
    ("strings", "Patient", {"address-city": "saint-étienne"}, "zoe"),
    ("tokens", "Patient", {"identifier": "urn:sys:a|123"}, "fem"),
    ("tokens", "Patient", {"gender:not": "male"}, "fem other bare comma"),
    (
        "tokens",
        "Observation",
        {"code": "http://loinc.org|8867-4,http://snomed.info/sct|386725007"},
        "hr temp",
    ),
    ("dates", "Observation", {"date": "ge2024-01-02"}, "month day tz inst"),
    ("dates", "Observation", {"date": "2024-01-02T05:30:00+01:00"}, "tz"),  # '+' must be encoded
    ("references", "Observation", {"subject": "Patient/{id:pa}"}, "o-rel"),
    ("references", "Observation", {"subject:identifier": "urn:mrn|X1-{m}"}, "o-ident"),
    ("quantities", "Observation", {"value-quantity": "5.4||mg"}, "mg milligram unitonly"),
    ("chains", "Observation", {"subject:Patient.name": "chainer"}, "obs-a"),
    ("chains", "Observation", {"encounter.subject:Patient.name": "other"}, "obs-b"),
    ("chains", "Patient", {"_has:Observation:subject:code": "8867-4"}, "pa"),
    # paging: two per page, the clients follow the next links
    (
        "strings",
        "Patient",
        {"name:missing": "false", "_count": "2", "_sort": "family"},
        "text slash jones percent pipe comma upper zoe zoeller prefixonly",
    ),
]
CASE_IDS = [f"{c[1]}?{'&'.join(f'{k}={v}' for k, v in c[2].items())}" for c in CLIENT_CASES]


@pytest.fixture(scope="module")
def world(base_url: str, auth_headers: dict[str, str]) -> Iterator[World]:
    yield from world_of(base_url, auth_headers)


@pytest.fixture(scope="module")
def fhirpy_client(base_url: str, system_token: str) -> SyncFHIRClient:
    return SyncFHIRClient(
        base_url, authorization=f"Bearer {system_token}", requests_config={"timeout": 30}
    )


@pytest.fixture(scope="module")
def smart(base_url: str, system_token: str) -> Any:
    client = smart_client.FHIRClient(
        settings={"app_id": "medisentinel-tests", "api_base": base_url}
    )
    auth = FHIROAuth2Auth()  # a token we already hold, as after a backend-services grant
    auth.access_token = system_token
    client.server.auth = auth
    return client


def _params(loaded: Loaded, params: dict[str, str]) -> dict[str, str]:
    rendered = {key: loaded.render(value) for key, value in params.items()}
    rendered["_tag"] = f"{SCOPE_SYSTEM}|{loaded.marker}"
    return rendered


@pytest.mark.parametrize(("scenario", "rtype", "params", "expected"), CLIENT_CASES, ids=CASE_IDS)
def test_fhirpy(
    world: World,
    fhirpy_client: SyncFHIRClient,
    scenario: str,
    rtype: str,
    params: dict[str, str],
    expected: str,
) -> None:
    loaded = world.load(scenario, SCENARIOS)
    labels = loaded.label_of()
    found = fhirpy_client.resources(rtype).search(**_params(loaded, params)).fetch_all()
    keys = [(r["resourceType"], r["id"]) for r in found]
    assert len(keys) == len(set(keys))
    got = [labels[k] for k in keys]
    if "_sort" in params:
        assert got == expected.split()
    assert sorted(got) == sorted(expected.split())


@pytest.mark.parametrize(("scenario", "rtype", "params", "expected"), CLIENT_CASES, ids=CASE_IDS)
def test_fhirclient(
    world: World, smart: Any, scenario: str, rtype: str, params: dict[str, str], expected: str
) -> None:
    loaded = world.load(scenario, SCENARIOS)
    labels = loaded.label_of()
    search = FHIRCLIENT_MODELS[rtype].where(struct=_params(loaded, params))
    found = list(search.perform_resources_iter(smart.server))
    keys = [(r.resource_type, r.id) for r in found]
    assert len(keys) == len(set(keys))
    got = [labels[k] for k in keys]
    if "_sort" in params:
        assert got == expected.split()
    assert sorted(got) == sorted(expected.split())


def test_includes_through_both_clients(
    world: World, fhirpy_client: SyncFHIRClient, smart: Any
) -> None:
    loaded = world.load("chains", SCENARIOS)
    labels = loaded.label_of()
    scope = f"{SCOPE_SYSTEM}|{loaded.marker}"

    # fhirpy: .include() and the raw Bundle
    bundle = (
        fhirpy_client.resources("Observation")
        .search(_tag=scope, **{"subject:Patient.name": "chainer,other"})
        .include("Observation", "subject")
        .fetch_raw()
    )
    modes: dict[str, list[str]] = {}
    for entry in bundle["entry"]:
        key = (entry["resource"]["resourceType"], entry["resource"]["id"])
        modes.setdefault(entry["search"]["mode"], []).append(labels[key])
    assert sorted(modes["match"]) == ["obs-a", "obs-b"]
    assert sorted(modes["include"]) == ["pa", "pb"]

    # fhirclient: FHIRSearch.include(), reverse include, parsed into its R4 models
    search = FHIRSearch(Patient, {"_tag": scope, "family": "chainer"}).include(
        "subject", Observation, reverse=True
    )
    pages: list[Bundle] = list(search.perform_iter(smart.server))
    seen = {
        (e.search.mode, labels[(e.resource.resource_type, e.resource.id)])
        for page in pages
        for e in page.entry or []
    }
    assert seen == {("match", "pa"), ("include", "obs-a")}
