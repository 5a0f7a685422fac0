"""Search criteria, table-driven, per the FHIR R4 search spec (http://hl7.org/fhir/R4/search.html).

Each scenario is a set of resources; each case is a query over that scenario and the labels of
the resources it must return. Every other resource of the scenario must not be returned, so a
case proves both sides. Resources are created once per test session with ids
``<label>-<marker>`` (PUT), tagged with the scenario's unique marker; every query is ANDed with
``_tag=<scope>|<marker>``, so scenarios never see each other's (or other tests') data.

Templates: ``{m}`` is the marker, ``{id:label}`` the id of a scenario resource, ``{base}`` the
server's base URL.
"""

from __future__ import annotations

import copy
import json
import re
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

SCOPE_SYSTEM = "urn:medisentinel:test:search-proof"
FHIR_JSON = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}
V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
UCUM = "http://unitsofmeasure.org"
_PLACEHOLDER = re.compile(r"\{(m|base|id:[a-z0-9-]+)\}")
ENCOUNTER_CLASS = {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"}


# =========================================================================== the harness


@dataclass
class Loaded:
    """A scenario as created on the server: its marker and the (type, id) of each label."""

    name: str
    marker: str
    base: str
    ids: dict[str, tuple[str, str]]

    def render(self, text: str) -> str:
        def sub(match: re.Match[str]) -> str:
            key = match.group(1)
            if key == "m":
                return self.marker
            if key == "base":
                return self.base
            return self.ids[key[3:]][1]

        return _PLACEHOLDER.sub(sub, text)

    @property
    def scope(self) -> tuple[str, str]:
        return ("_tag", f"{SCOPE_SYSTEM}|{self.marker}")

    def label_of(self) -> dict[tuple[str, str], str]:
        return {key: label for label, key in self.ids.items()}


def world_of(base_url: str, auth_headers: dict[str, str]) -> Iterator[World]:
    """A World on its own client, for the `world` fixtures of the search test modules."""
    with httpx.Client(
        base_url=base_url, headers={"Accept": "application/fhir+json", **auth_headers}, timeout=60
    ) as http:
        yield World(http, base_url)


class World:
    """Creates each scenario once per session, on first use."""

    def __init__(self, http: httpx.Client, base: str) -> None:
        self.http = http
        self.base = base
        self.loaded: dict[str, Loaded] = {}

    def load(self, name: str, scenarios: dict[str, dict[str, dict[str, Any]]]) -> Loaded:
        if name not in self.loaded:
            self.loaded[name] = self.create(name, scenarios[name])
        return self.loaded[name]

    def create(self, name: str, resources: dict[str, dict[str, Any]]) -> Loaded:
        marker = uuid.uuid4().hex[:12]
        ids = {
            label: (body["resourceType"], f"{label}-{marker}") for label, body in resources.items()
        }
        loaded = Loaded(name, marker, self.base, ids)
        for label, body in resources.items():
            rtype, rid = ids[label]
            put(self.http, loaded, rtype, rid, body)
        return loaded


def put(http: httpx.Client, loaded: Loaded, rtype: str, rid: str, body: dict[str, Any]) -> None:
    resource = json.loads(loaded.render(json.dumps(body)))
    resource["id"] = rid
    meta = resource.setdefault("meta", {})
    meta.setdefault("tag", []).append({"system": SCOPE_SYSTEM, "code": loaded.marker})
    response = http.put(f"/{rtype}/{rid}", json=resource, headers=FHIR_JSON)
    assert response.status_code in (200, 201), (rtype, rid, response.text)


def split_query(query: str) -> tuple[str, list[tuple[str, str]]]:
    """'Patient?a=1&b=2' -> ('Patient', [('a', '1'), ('b', '2')]), values kept literal."""
    path, _, rest = query.partition("?")
    pairs = []
    for part in rest.split("&") if rest else []:
        key, _, value = part.partition("=")
        pairs.append((key, value))
    return path, pairs


def get_bundle(http: httpx.Client, path: str, pairs: list[tuple[str, str]], **kw: Any) -> Any:
    response = http.get(f"/{path}", params=pairs, **kw)
    assert response.status_code == 200, (path, pairs, response.text)
    bundle = response.json()
    assert bundle["resourceType"] == "Bundle" and bundle["type"] == "searchset"
    return bundle


def entries(bundle: dict[str, Any], mode: str) -> list[tuple[str, str]]:
    return [
        (e["resource"]["resourceType"], e["resource"]["id"])
        for e in bundle.get("entry", [])
        if e.get("search", {}).get("mode") == mode
    ]


def link(bundle: dict[str, Any], relation: str) -> str | None:
    urls = [ln["url"] for ln in bundle.get("link", []) if ln["relation"] == relation]
    assert len(urls) <= 1, bundle.get("link")
    return urls[0] if urls else None


def walk(http: httpx.Client, path: str, pairs: list[tuple[str, str]]) -> list[dict[str, Any]]:
    """Every page of a search, following next links (bounded)."""
    pages = [get_bundle(http, path, pairs)]
    while (url := link(pages[-1], "next")) is not None:
        assert len(pages) < 200, "too many pages"
        response = http.get(url)
        assert response.status_code == 200, response.text
        pages.append(response.json())
    return pages


def outcome_free(bundle: dict[str, Any]) -> None:
    """No parameter of a proof query may have been ignored."""
    outcomes = [e for e in bundle.get("entry", []) if e["search"]["mode"] == "outcome"]
    assert not outcomes, outcomes


@pytest.fixture(scope="session")
def world(base_url: str, auth_headers: dict[str, str]) -> Iterator[World]:
    yield from world_of(base_url, auth_headers)


# =========================================================================== scenarios

SCENARIOS: dict[str, dict[str, dict[str, Any]]] = {
    # ------------------------------------------------------------------ string
    "strings": {
        "zoe": {
            "resourceType": "Patient",
            "name": [{"family": "Zoë", "given": ["Anna", "Maria"], "prefix": ["Dr"]}],
            "address": [
                {
                    "line": ["1 Rue de la Paix"],
                    "city": "Saint-Étienne",
                    "postalCode": "42000",
                    "country": "FR",
                }
            ],
        },
        "zoeller": {
            "resourceType": "Patient",
            "name": [{"family": "Zoeller", "given": ["Bob"]}],
            "address": [{"city": "Boston", "state": "MA"}],
        },
        "upper": {"resourceType": "Patient", "name": [{"family": "ZOE", "given": ["Chloë"]}]},
        "text": {
            "resourceType": "Patient",
            "name": [{"text": "Bruno Annaberg", "family": "Annaberg"}],
        },
        "noname": {"resourceType": "Patient", "gender": "unknown"},
        "comma": {"resourceType": "Patient", "name": [{"family": "Smith,Jones"}]},
        "jones": {"resourceType": "Patient", "name": [{"family": "Jones"}]},
        "pipe": {"resourceType": "Patient", "name": [{"family": "Pipe|Line"}]},
        "slash": {"resourceType": "Patient", "name": [{"family": "Back\\slash"}]},
        "prefixonly": {"resourceType": "Patient", "name": [{"prefix": ["Sister"]}]},
        "percent": {"resourceType": "Patient", "name": [{"family": "Per%cent_x"}]},
    },
    # ------------------------------------------------------------------ token
    "tokens": {
        "fem": {
            "resourceType": "Patient",
            "active": True,
            "gender": "female",
            "identifier": [
                {
                    "system": "urn:sys:a",
                    "value": "123",
                    "type": {
                        "coding": [{"system": V2_0203, "code": "MR"}],
                        "text": "Medical record number",
                    },
                }
            ],
            "communication": [
                {
                    "language": {
                        "coding": [
                            {"system": "urn:ietf:bcp:47", "code": "fr", "display": "French"}
                        ],
                        "text": "Français",
                    }
                }
            ],
        },
        "male": {
            "resourceType": "Patient",
            "active": False,
            "gender": "male",
            "identifier": [{"system": "urn:sys:b", "value": "123"}, {"value": "nosys-9"}],
        },
        "other": {
            "resourceType": "Patient",
            "gender": "other",
            "identifier": [
                {
                    "system": "urn:sys:a",
                    "value": "456",
                    "type": {"coding": [{"system": V2_0203, "code": "DL"}]},
                }
            ],
        },
        "bare": {"resourceType": "Patient", "birthDate": "1980-01-01"},
        "comma": {
            "resourceType": "Patient",
            "identifier": [{"system": "urn:sys:c", "value": "a,b|c"}],
        },
        "hr": {
            "resourceType": "Observation",
            "status": "final",
            "code": {
                "coding": [{"system": LOINC, "code": "8867-4", "display": "Heart rate"}],
                "text": "Pulse",
            },
        },
        "temp": {
            "resourceType": "Observation",
            "status": "preliminary",
            "code": {
                "coding": [
                    {"system": LOINC, "code": "8310-5", "display": "Body temperature"},
                    {"system": SNOMED, "code": "386725007"},
                ]
            },
        },
        "local": {
            "resourceType": "Observation",
            "status": "amended",
            "code": {"coding": [{"code": "local-1"}], "text": "Heart murmur"},
        },
        "freetext": {
            "resourceType": "Observation",
            "status": "cancelled",
            "code": {"text": "Free text only"},
        },
    },
    # ------------------------------------------------------------------ reference
    "references": {
        "pa": {"resourceType": "Patient", "name": [{"family": "Refa"}]},
        "pb": {"resourceType": "Patient", "name": [{"family": "Refb"}]},
        "grp": {"resourceType": "Group", "type": "person", "actual": True},
        "dev": {"resourceType": "Device", "status": "active"},
        "o-rel": {
            "resourceType": "Observation",
            "status": "final",
            "code": {"text": "x"},
            "subject": {"reference": "Patient/{id:pa}"},
        },
        "o-abs": {
            "resourceType": "Observation",
            "status": "final",
            "code": {"text": "x"},
            "subject": {"reference": "{base}/Patient/{id:pb}"},
        },
        "o-grp": {
            "resourceType": "Observation",
            "status": "final",
            "code": {"text": "x"},
            "subject": {"reference": "Group/{id:grp}"},
        },
        "o-none": {"resourceType": "Observation", "status": "final", "code": {"text": "x"}},
        "o-ident": {
            "resourceType": "Observation",
            "status": "final",
            "code": {"text": "x"},
            "subject": {"identifier": {"system": "urn:mrn", "value": "X1-{m}"}},
        },
        "o-dev": {
            "resourceType": "Observation",
            "status": "final",
            "code": {"text": "x"},
            "subject": {"reference": "Device/{id:dev}"},
        },
        "o-foreign": {
            "resourceType": "Observation",
            "status": "final",
            "code": {"text": "x"},
            "subject": {"reference": "http://other.example.org/fhir/Patient/{id:pa}"},
        },
    },
    # ------------------------------------------------------------------ date
    "dates": {
        "year": {
            "resourceType": "Observation",
            "status": "final",
            "code": {"text": "d"},
            "effectiveDateTime": "2023",
        },
        "month": {
            "resourceType": "Observation",
            "status": "final",
            "code": {"text": "d"},
            "effectiveDateTime": "2024-01",
        },
        "day": {
            "resourceType": "Observation",
            "status": "final",
            "code": {"text": "d"},
            "effectiveDateTime": "2024-01-02",
        },
        "tz": {  # 2024-01-02T04:30:00Z
            "resourceType": "Observation",
            "status": "final",
            "code": {"text": "d"},
            "effectiveDateTime": "2024-01-01T23:30:00-05:00",
        },
        "utc": {
            "resourceType": "Observation",
            "status": "final",
            "code": {"text": "d"},
            "effectiveDateTime": "2024-01-01T12:00:00Z",
        },
        "inst": {
            "resourceType": "Observation",
            "status": "final",
            "code": {"text": "d"},
            "effectiveInstant": "2024-01-02T10:00:00.123Z",
        },
        "none": {"resourceType": "Observation", "status": "final", "code": {"text": "d"}},
        "e-closed": {
            "resourceType": "Encounter",
            "status": "finished",
            "class": ENCOUNTER_CLASS,
            "period": {"start": "2024-03-01T08:00:00Z", "end": "2024-03-05T17:00:00Z"},
        },
        "e-open-end": {
            "resourceType": "Encounter",
            "status": "in-progress",
            "class": ENCOUNTER_CLASS,
            "period": {"start": "2024-03-03"},
        },
        "e-open-start": {
            "resourceType": "Encounter",
            "status": "finished",
            "class": ENCOUNTER_CLASS,
            "period": {"end": "2024-02-10"},
        },
        "e-none": {"resourceType": "Encounter", "status": "planned", "class": ENCOUNTER_CLASS},
    },
    # ------------------------------------------------------------------ number
    "numbers": {
        "subj": {"resourceType": "Patient"},
        **{
            label: {
                "resourceType": "RiskAssessment",
                "status": "final",
                "subject": {"reference": "Patient/{id:subj}"},
                "prediction": [{"probabilityDecimal": value}],
            }
            for label, value in (
                ("r49-4", 49.4),
                ("r49-5", 49.5),
                ("r50", 50),
                ("r50-49", 50.49),
                ("r50-5", 50.5),
                ("r0-25", 0.25),
            )
        },
        "rnone": {
            "resourceType": "RiskAssessment",
            "status": "final",
            "subject": {"reference": "Patient/{id:subj}"},
        },
    },
    # the spec's own example: 100 means [99.5, 100.5) (ChargeItem.factorOverride, a decimal)
    "factors": {
        "subj": {"resourceType": "Patient"},
        **{
            label: {
                "resourceType": "ChargeItem",
                "status": "billable",
                "code": {"text": "f"},
                "subject": {"reference": "Patient/{id:subj}"},
                "factorOverride": value,
            }
            for label, value in (
                ("f99-4", 99.4),
                ("f99-5", 99.5),
                ("f100", 100),
                ("f100-49", 100.49),
                ("f100-5", 100.5),
                ("f1000", 1000),
            )
        },
    },
    # ------------------------------------------------------------------ quantity
    "quantities": {
        label: {
            "resourceType": "Observation",
            "status": "final",
            "code": {"text": "q"},
            **value,
        }
        for label, value in (
            ("mg", {"valueQuantity": {"value": 5.4, "unit": "mg", "system": UCUM, "code": "mg"}}),
            (
                "milligram",
                {
                    "valueQuantity": {
                        "value": 5.4,
                        "unit": "milligram",
                        "system": UCUM,
                        "code": "mg",
                    }
                },
            ),
            ("kg", {"valueQuantity": {"value": 5.4, "unit": "kg", "system": UCUM, "code": "kg"}}),
            (
                "mmhg",
                {"valueQuantity": {"value": 100, "unit": "mmHg", "system": UCUM, "code": "mm[Hg]"}},
            ),
            ("unitonly", {"valueQuantity": {"value": 5.4, "unit": "mg"}}),
            ("string", {"valueString": "5.4 mg"}),
        )
    },
    # ------------------------------------------------------------------ uri
    "uris": {
        "v123": {
            "resourceType": "ValueSet",
            "status": "active",
            "url": "http://acme.org/fhir/ValueSet/123",
            "meta": {"profile": ["http://example.org/fhir/StructureDefinition/shareable-vs"]},
        },
        "v123h": {
            "resourceType": "ValueSet",
            "status": "active",
            "url": "http://acme.org/fhir/ValueSet/123/_history/5",
        },
        "v1234": {
            "resourceType": "ValueSet",
            "status": "active",
            "url": "http://acme.org/fhir/ValueSet/1234",
        },
        "v12": {
            "resourceType": "ValueSet",
            "status": "active",
            "url": "http://acme.org/fhir/ValueSet/12",
        },
        "vother": {
            "resourceType": "ValueSet",
            "status": "active",
            "url": "http://acme.org/other/ValueSet/9",
        },
        "void": {"resourceType": "ValueSet", "status": "active", "url": "urn:oid:1.2.3"},
        "vnone": {"resourceType": "ValueSet", "status": "draft"},
    },
    # ------------------------------------------------------------ _id, _tag, _profile, _security
    "meta": {
        "m1": {
            "resourceType": "Patient",
            "meta": {
                "tag": [{"system": "urn:tags", "code": "red"}],
                "security": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality",
                        "code": "R",
                    }
                ],
                "profile": ["http://example.org/fhir/StructureDefinition/vip-patient"],
            },
        },
        "m2": {
            "resourceType": "Patient",
            "meta": {
                "tag": [
                    {"system": "urn:tags", "code": "blue"},
                    {"system": "urn:other", "code": "red"},
                ],
                "security": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality",
                        "code": "N",
                    }
                ],
            },
        },
        "m3": {"resourceType": "Patient"},
    },
    # ------------------------------------------------------------------ chains and _has
    "chains": {
        "org": {"resourceType": "Organization", "name": "Acme Health"},
        "org2": {"resourceType": "Organization", "name": "Other Clinic"},
        "pa": {
            "resourceType": "Patient",
            "name": [{"family": "Chainer"}],
            "identifier": [{"system": "urn:chain", "value": "P1-{m}"}],
            "managingOrganization": {"reference": "Organization/{id:org}"},
        },
        "pb": {
            "resourceType": "Patient",
            "name": [{"family": "Other"}],
            "identifier": [{"system": "urn:chain", "value": "P2-{m}"}],
            "managingOrganization": {"reference": "Organization/{id:org2}"},
        },
        "loc": {"resourceType": "Location", "name": "Chainer Ward"},
        "pc": {"resourceType": "Patient", "name": [{"family": "Comma,Other"}]},
        "obs-c": {
            "resourceType": "Observation",
            "status": "final",
            "code": {"coding": [{"system": LOINC, "code": "8310-5"}]},
            "subject": {"reference": "Patient/{id:pc}"},
        },
        "enc-a": {
            "resourceType": "Encounter",
            "status": "finished",
            "class": ENCOUNTER_CLASS,
            "subject": {"reference": "Patient/{id:pa}"},
            "serviceProvider": {"reference": "Organization/{id:org}"},
        },
        "enc-b": {
            "resourceType": "Encounter",
            "status": "finished",
            "class": ENCOUNTER_CLASS,
            "subject": {"reference": "Patient/{id:pb}"},
            "serviceProvider": {"reference": "Organization/{id:org2}"},
        },
        "obs-a": {
            "resourceType": "Observation",
            "status": "final",
            "code": {"coding": [{"system": LOINC, "code": "8867-4"}]},
            "subject": {"reference": "Patient/{id:pa}"},
            "encounter": {"reference": "Encounter/{id:enc-a}"},
        },
        "obs-b": {
            "resourceType": "Observation",
            "status": "final",
            "code": {"coding": [{"system": LOINC, "code": "8310-5"}]},
            "subject": {"reference": "Patient/{id:pb}"},
            "encounter": {"reference": "Encounter/{id:enc-b}"},
        },
        "obs-l": {
            "resourceType": "Observation",
            "status": "final",
            "code": {"coding": [{"system": LOINC, "code": "8310-5"}]},
            "subject": {"reference": "Location/{id:loc}"},
        },
    },
}

# scenario -> [(query, expected labels)]; the other resources of the scenario must not match.
CASES: dict[str, list[tuple[str, str]]] = {
    "strings": [
        # default: starts-with, case- and accent-insensitive, on any part of a HumanName
        ("Patient?name=zoe", "zoe zoeller upper"),
        ("Patient?name=ZOË", "zoe zoeller upper"),
        ("Patient?family=zoë", "zoe zoeller upper"),
        ("Patient?family=Zoe", "zoe zoeller upper"),
        ("Patient?name=anna", "zoe text"),  # given Anna; family Annaberg
        ("Patient?given=anna", "zoe"),
        ("Patient?name=maria", "zoe"),  # the second given name
        ("Patient?name=dr", "zoe"),  # prefix
        ("Patient?name=bruno", "text"),  # HumanName.text
        ("Patient?given=chloe", "upper"),
        ("Patient?name=sister", "prefixonly"),  # a name with only a prefix
        ("Patient?name=oe", ""),  # not a prefix of any part
        # :exact: whole value, case- and accent-sensitive
        ("Patient?family:exact=Zoë", "zoe"),
        ("Patient?family:exact=zoë", ""),
        ("Patient?family:exact=Zoe", ""),
        ("Patient?family:exact=ZOE", "upper"),
        ("Patient?family:exact=Zo", ""),
        # :contains: anywhere, case- and accent-insensitive
        ("Patient?family:contains=oel", "zoeller"),
        ("Patient?family:contains=OË", "zoe zoeller upper"),
        ("Patient?name:contains=berg", "text"),
        ("Patient?name:contains=zz", ""),
        # :missing
        ("Patient?name:missing=true", "noname"),
        (
            "Patient?name:missing=false",
            "zoe zoeller upper text comma jones pipe slash prefixonly percent",
        ),
        ("Patient?family:missing=true", "noname prefixonly"),
        # Address parts
        ("Patient?address-city=saint-etienne", "zoe"),
        ("Patient?address-city=SAINT", "zoe"),
        ("Patient?address-city=bos", "zoeller"),
        ("Patient?address-city:exact=Boston", "zoeller"),
        ("Patient?address-city:exact=boston", ""),
        ("Patient?address=1 rue", "zoe"),
        ("Patient?address=rue", ""),
        ("Patient?address=42000", "zoe"),
        ("Patient?address=ma", "zoeller"),
        ("Patient?address:contains=paix", "zoe"),
        ("Patient?address-postalcode=420", "zoe"),
        (
            "Patient?address-city:missing=true",
            "upper text noname comma jones pipe slash prefixonly percent",
        ),
        # OR (comma), AND (repeat), escaping
        ("Patient?family=zoe,annaberg", "zoe zoeller upper text"),
        ("Patient?family=zoe&family=zoel", "zoeller"),
        ("Patient?name=zoe&given=bob", "zoeller"),
        ("Patient?family=smith,jones", "comma jones"),
        ("Patient?family=smith\\,jones", "comma"),
        ("Patient?family:exact=Smith\\,Jones", "comma"),
        ("Patient?family:exact=Pipe\\|Line", "pipe"),
        ("Patient?family=pipe\\|l", "pipe"),
        ("Patient?family:exact=Back\\\\slash", "slash"),
        # LIKE wildcards are literal
        ("Patient?family:contains=%", "percent"),
        ("Patient?family:contains=t_x", "percent"),
        ("Patient?family:contains=r_c", ""),
        ("Patient?family=per%c", "percent"),
        ("Patient?family=per_", ""),
    ],
    "tokens": [
        # code
        ("Patient?gender=female", "fem"),
        ("Patient?gender=male,other", "male other"),
        ("Patient?gender:not=male", "fem other bare comma"),  # :not includes the missing
        ("Patient?gender:missing=true", "bare comma"),
        ("Patient?gender:missing=false", "fem male other"),
        # boolean
        ("Patient?active=true", "fem"),
        ("Patient?active=false", "male"),
        ("Patient?active:not=true", "male other bare comma"),
        ("Patient?active:missing=true", "other bare comma"),
        # Identifier
        ("Patient?identifier=123", "fem male"),
        ("Patient?identifier=urn:sys:a|123", "fem"),
        ("Patient?identifier=urn:sys:b|123", "male"),
        ("Patient?identifier=urn:sys:a|", "fem other"),
        ("Patient?identifier=|nosys-9", "male"),
        ("Patient?identifier=|123", ""),
        ("Patient?identifier=urn:sys:x|123", ""),
        ("Patient?identifier=urn:sys:a|123,urn:sys:a|456", "fem other"),
        ("Patient?identifier=urn:sys:a|123&identifier=urn:sys:b|123", ""),
        ("Patient?identifier=123&identifier=nosys-9", "male"),
        (f"Patient?identifier:of-type={V2_0203}|MR|123", "fem"),
        (f"Patient?identifier:of-type={V2_0203}|DL|456", "other"),
        (f"Patient?identifier:of-type={V2_0203}|MR|456", ""),
        ("Patient?identifier:missing=true", "bare"),
        ("Patient?identifier:not=urn:sys:a|123", "male other bare comma"),
        ("Patient?identifier:text=medical", "fem"),
        ("Patient?identifier=urn:sys:c|a\\,b\\|c", "comma"),
        # CodeableConcept (Patient.communication.language)
        ("Patient?language=fr", "fem"),
        ("Patient?language=urn:ietf:bcp:47|fr", "fem"),
        ("Patient?language:text=franc", "fem"),
        ("Patient?language:text=FRENCH", "fem"),
        ("Patient?language:text=german", ""),
        # CodeableConcept (Observation.code) and code (status)
        ("Observation?code=8867-4", "hr"),
        (f"Observation?code={LOINC}|8867-4", "hr"),
        (f"Observation?code={SNOMED}|386725007", "temp"),
        ("Observation?code=386725007", "temp"),
        (f"Observation?code={LOINC}|", "hr temp"),
        ("Observation?code=|local-1", "local"),
        ("Observation?code=|8867-4", ""),
        (f"Observation?code={SNOMED}|8867-4", ""),
        ("Observation?code:text=heart", "hr local"),
        ("Observation?code:text=pulse", "hr"),
        ("Observation?code:text=free text", "freetext"),
        (f"Observation?code:not={LOINC}|8867-4", "temp local freetext"),
        (f"Observation?code={LOINC}|8867-4,{SNOMED}|386725007", "hr temp"),
        ("Observation?status=final,amended", "hr local"),
        ("Observation?status:not=final", "temp local freetext"),
        ("Observation?status=FINAL", ""),
        ("Observation?status=final&code=8310-5", ""),
        # Several criteria on one index table: the first drives, the others are checked on
        # its rows (engine._criteria_sql); each must still be its own row of that table.
        (f"Observation?status=final&code={LOINC}|8867-4", "hr"),
        ("Observation?code:text=heart&status:not=final", "local"),
        ("Observation?status:not=final&code:text=heart", "local"),
        (f"Observation?code:text=heart&code:not={LOINC}|8867-4", "local"),
    ],
    "references": [
        ("Observation?subject={id:pa}", "o-rel"),
        ("Observation?subject=Patient/{id:pa}", "o-rel"),
        ("Observation?subject={base}/Patient/{id:pa}", "o-rel"),
        ("Observation?subject=Patient/{id:pb}", "o-abs"),  # stored with our absolute base
        ("Observation?subject={base}/Patient/{id:pb}", "o-abs"),
        ("Observation?subject:Patient={id:pa}", "o-rel"),
        ("Observation?subject:Group={id:grp}", "o-grp"),
        ("Observation?subject:Patient={id:grp}", ""),
        ("Observation?subject:Device={id:dev}", "o-dev"),
        ("Observation?patient={id:pa}", "o-rel"),
        ("Observation?patient=Patient/{id:pb}", "o-abs"),
        ("Observation?subject:identifier=urn:mrn|X1-{m}", "o-ident"),
        ("Observation?subject:identifier=X1-{m}", "o-ident"),
        ("Observation?subject:identifier=urn:other|X1-{m}", ""),
        ("Observation?subject:missing=true", "o-none"),
        ("Observation?subject:missing=false", "o-rel o-abs o-grp o-ident o-dev o-foreign"),
        ("Observation?subject=http://other.example.org/fhir/Patient/{id:pa}", "o-foreign"),
        ("Observation?subject=Patient/{id:pa},Device/{id:dev}", "o-rel o-dev"),
        ("Observation?subject=Patient/{id:pa}&subject=Device/{id:dev}", ""),
        ("Observation?subject=Patient/{id:pa}&patient=Patient/{id:pa}", "o-rel"),
        # a reference to another server's Patient/<id> is not a reference to ours
        ("Observation?subject:Patient.name=refa", "o-rel"),
        ("Patient?_has:Observation:subject:_id={id:o-foreign}", ""),
        ("Patient?_has:Observation:subject:_id={id:o-rel},{id:o-abs}", "pa pb"),
    ],
    "dates": [
        # precision: the resource's range must lie within the searched range
        ("Observation?date=2024", "month day tz utc inst"),
        ("Observation?date=2024-01", "month day tz utc inst"),
        ("Observation?date=2024-01-02", "day tz inst"),  # tz is 04:30Z on the 2nd
        ("Observation?date=2024-01-01", "utc"),
        ("Observation?date=2023", "year"),
        ("Observation?date=eq2023", "year"),
        ("Observation?date=2024-01-02T04:30Z", "tz"),  # minute precision
        ("Observation?date=2024-01-01T23:30-05:00", "tz"),
        ("Observation?date=2024-01-01T23:30:00-05:00", "tz"),  # second precision
        ("Observation?date=2024-01-02T04:30:00Z", "tz"),
        ("Observation?date=2024-01-02T05:30:00+01:00", "tz"),
        ("Observation?date=2024-01-02T04:30:01Z", ""),
        ("Observation?date=2024-01-02T10:00:00Z", "inst"),
        ("Observation?date=2024-01-02T10:00:00.123Z", "inst"),
        # prefixes
        ("Observation?date=ne2024-01-02", "year month utc"),
        ("Observation?date=gt2024-01-01", "month day tz inst"),
        ("Observation?date=lt2024-01-02", "year month utc"),
        ("Observation?date=ge2024-01-02", "month day tz inst"),
        ("Observation?date=le2024-01-01", "year utc"),
        ("Observation?date=sa2024-01-01", "day tz inst"),
        ("Observation?date=eb2024-01-02", "year utc"),
        ("Observation?date=ap2024-01-02", "year month day tz utc inst"),
        ("Observation?date=gt2024-01-02T04:30:00Z", "month day inst"),
        ("Observation?date=lt2024-01-02T04:30:00Z", "year month day utc"),
        ("Observation?date=ge2024-01-01&date=lt2024-01-02", "month utc"),
        ("Observation?date=2023,2024-01-02", "year day tz inst"),
        ("Observation?date:missing=true", "none"),
        # Periods with open ends (Encounter.period)
        ("Encounter?date=2024-03", "e-closed"),
        ("Encounter?date=2024-03-04", ""),
        ("Encounter?date=ge2024-03-04", "e-closed e-open-end"),
        ("Encounter?date=gt2025-01-01", "e-open-end"),
        ("Encounter?date=lt2024-03-01", "e-open-start"),
        ("Encounter?date=le2024-03-01", "e-open-start"),
        ("Encounter?date=sa2024-02-10", "e-closed e-open-end"),
        ("Encounter?date=eb2024-03-03", "e-open-start"),
        ("Encounter?date=ne2024-03", "e-open-end e-open-start"),
        ("Encounter?date=ap2024-03-04", "e-closed e-open-end e-open-start"),
        ("Encounter?date:missing=true", "e-none"),
    ],
    "numbers": [
        ("RiskAssessment?probability=50", "r49-5 r50 r50-49"),  # 50 means [49.5, 50.5)
        ("RiskAssessment?probability=50.0", "r50"),  # [49.95, 50.05)
        ("RiskAssessment?probability=50.5", "r50-49 r50-5"),  # [50.45, 50.55)
        ("RiskAssessment?probability=50.50", "r50-5"),  # [50.495, 50.505)
        ("RiskAssessment?probability=0.25", "r0-25"),
        ("RiskAssessment?probability=eq50", "r49-5 r50 r50-49"),
        ("RiskAssessment?probability=ne50", "r49-4 r50-5 r0-25"),
        ("RiskAssessment?probability=gt50", "r50-49 r50-5"),
        ("RiskAssessment?probability=ge50", "r50 r50-49 r50-5"),
        ("RiskAssessment?probability=lt50", "r49-4 r49-5 r0-25"),
        ("RiskAssessment?probability=le50", "r49-4 r49-5 r50 r0-25"),
        ("RiskAssessment?probability=sa50", "r50-49 r50-5"),
        ("RiskAssessment?probability=eb50", "r49-4 r49-5 r0-25"),
        ("RiskAssessment?probability=ap50", "r49-4 r49-5 r50 r50-49 r50-5"),
        ("RiskAssessment?probability=50&probability=gt50", "r50-49"),
        ("RiskAssessment?probability=lt49.5,gt50.4", "r49-4 r0-25 r50-49 r50-5"),
        ("RiskAssessment?probability:missing=true", "rnone"),
    ],
    "factors": [
        ("ChargeItem?factor-override=100", "f99-5 f100 f100-49"),
        ("ChargeItem?factor-override=100.0", "f100"),
        ("ChargeItem?factor-override=1.00e2", "f99-5 f100 f100-49"),  # 3 significant figures
        ("ChargeItem?factor-override=gt100", "f100-49 f100-5 f1000"),
        ("ChargeItem?factor-override=le100", "f99-4 f99-5 f100"),
        ("ChargeItem?factor-override=ne100", "f99-4 f100-5 f1000"),
        ("ChargeItem?factor-override=ge1000", "f1000"),
    ],
    "quantities": [
        ("Observation?value-quantity=5.4", "mg milligram kg unitonly"),
        ("Observation?value-quantity=5.40", "mg milligram kg unitonly"),
        ("Observation?value-quantity=5", "mg milligram kg unitonly"),
        (f"Observation?value-quantity=5.4|{UCUM}|mg", "mg milligram"),
        ("Observation?value-quantity=5.4||mg", "mg milligram unitonly"),  # code or unit
        ("Observation?value-quantity=5.4||milligram", "milligram"),
        (f"Observation?value-quantity=gt5|{UCUM}|mg", "mg milligram kg"),  # 5.4 kg in mg
        (f"Observation?value-quantity=lt5.4|{UCUM}|mg", ""),
        ("Observation?value-quantity=le5.4||kg", "kg"),
        ("Observation?value-quantity=ge100", "mmhg"),
        ("Observation?value-quantity=ne5.4", "mmhg"),
        (f"Observation?value-quantity=ap100|{UCUM}|mm[Hg]", "mmhg"),
        (f"Observation?value-quantity=100|{UCUM}|mg", ""),
        ("Observation?value-quantity:missing=true", "string"),
        ("Observation?value-quantity=5.4||kg,100||mm[Hg]", "kg mmhg"),
    ],
    "uris": [
        ("ValueSet?url=http://acme.org/fhir/ValueSet/123", "v123"),
        ("ValueSet?url=http://acme.org/fhir/ValueSet/12", "v12"),
        ("ValueSet?url=urn:oid:1.2.3", "void"),
        ("ValueSet?url:below=http://acme.org/fhir/", "v123 v123h v1234 v12"),
        ("ValueSet?url:below=http://acme.org/fhir/ValueSet/123", "v123 v123h"),
        ("ValueSet?url:above=http://acme.org/fhir/ValueSet/123/_history/5", "v123 v123h"),
        ("ValueSet?url:above=http://acme.org/fhir/ValueSet/1234", "v1234"),
        ("ValueSet?url:missing=true", "vnone"),
        (
            "ValueSet?_profile=http://example.org/fhir/StructureDefinition/shareable-vs",
            "v123",
        ),
        ("ValueSet?_profile:below=http://example.org/fhir/", "v123"),
    ],
    "meta": [
        ("Patient?_id={id:m1}", "m1"),
        ("Patient?_id={id:m1},{id:m3}", "m1 m3"),
        ("Patient?_id={id:m1}&_id={id:m3}", ""),
        ("Patient?_id=no-such-{m}", ""),
        ("Patient?_id:not={id:m1}", "m2 m3"),
        ("Patient?_id:not={id:m1},{id:m2}", "m3"),
        ("Patient?_id:missing=false", "m1 m2 m3"),
        ("Patient?_id:missing=true", ""),
        ("Patient?_lastUpdated:missing=true", ""),
        ("Patient?_lastUpdated:missing=false", "m1 m2 m3"),
        ("Patient?_tag=urn:tags|red", "m1"),
        ("Patient?_tag=red", "m1 m2"),
        ("Patient?_tag=urn:tags|", "m1 m2"),
        ("Patient?_tag=urn:tags|red,urn:tags|blue", "m1 m2"),
        ("Patient?_tag:not=urn:tags|red", "m2 m3"),
        ("Patient?_security=http://terminology.hl7.org/CodeSystem/v3-Confidentiality|R", "m1"),
        ("Patient?_security=N", "m2"),
        ("Patient?_security:missing=true", "m3"),
        ("Patient?_profile=http://example.org/fhir/StructureDefinition/vip-patient", "m1"),
        ("Patient?_profile:missing=true", "m2 m3"),
        ("Patient?_profile:below=http://example.org/fhir/", "m1"),
    ],
    "chains": [
        ("Observation?subject:Patient.name=chainer", "obs-a"),
        ("Observation?subject.name=chainer", "obs-a obs-l"),  # Patient and Location have name
        ("Observation?subject:Location.name=chainer", "obs-l"),
        ("Observation?subject:Patient.name:exact=Chainer", "obs-a"),
        ("Observation?subject:Patient.name=chainer,other", "obs-a obs-b"),
        ("Observation?subject:Patient.name=comma\\,other", "obs-c"),
        ("Observation?subject:Patient.name=comma\\,chainer", ""),  # one value, not an OR
        ("Observation?subject.name=comma\\,chainer", ""),  # several target types
        ("Observation?subject:Patient.name=chainer&subject:Patient.name=other", ""),
        ("Observation?subject.identifier=urn:chain|P1-{m}", "obs-a"),
        ("Observation?patient.identifier=P2-{m}", "obs-b"),
        ("Observation?encounter.subject:Patient.name=other", "obs-b"),  # two levels
        ("Observation?encounter.service-provider.name=acme", "obs-a"),
        ("Observation?subject:Patient.organization.name=acme", "obs-a"),
        ("Observation?subject:Patient.organization._id={id:org2}", "obs-b"),
        ("Observation?subject:Patient.identifier:missing=false", "obs-a obs-b"),
        ("Observation?subject:Patient.gender:missing=true", "obs-a obs-b obs-c"),
        ("Observation?subject:Patient.identifier:not=urn:chain|P1-{m}", "obs-b obs-c"),
        ("Encounter?service-provider.name=other clinic", "enc-b"),
        ("Encounter?subject:Patient._has:Observation:subject:code=8867-4", "enc-a"),
        ("Patient?_has:Observation:subject:code=8867-4", "pa"),
        (f"Patient?_has:Observation:patient:code={LOINC}|8310-5", "pb pc"),
        ("Patient?_has:Observation:subject:code=9999-9", ""),
        ("Organization?_has:Patient:organization:name=chainer", "org"),
        ("Patient?_has:Encounter:subject:_has:Observation:encounter:code=8310-5", "pb"),
        ("Location?_has:Observation:subject:code=8310-5", "loc"),
        ("Patient?_has:Observation:subject:code=8867-4&_has:Observation:subject:code=8310-5", ""),
    ],
}


Cases = dict[str, list[tuple[str, str]]]  # scenario -> (query, the labels it returns)


def case_params(cases: Cases) -> list[Any]:
    """A table's cases as pytest parameters (scenario, query, expected), named by both."""
    return [
        pytest.param(scenario, query, expected, id=f"{scenario}:{query[:80]}")
        for scenario, rows in cases.items()
        for query, expected in rows
    ]


def assert_case(
    world: World, scenarios: dict[str, Any], scenario: str, query: str, expected: str
) -> None:
    """The query, within its scenario, returns exactly the expected labels as matches, each
    once, and nothing of the scenario's outside them."""
    loaded = world.load(scenario, scenarios)
    path, pairs = split_query(loaded.render(query))
    bundle = get_bundle(world.http, path, [*pairs, loaded.scope, ("_count", "500")])
    outcome_free(bundle)
    matches = entries(bundle, "match")
    assert len(matches) == len(set(matches)), "duplicate matches"
    assert not entries(bundle, "include")
    labels = loaded.label_of()
    unknown = [m for m in matches if m not in labels]
    assert not unknown, f"resources outside the scenario: {unknown}"
    assert sorted(labels[m] for m in matches) == sorted(expected.split()), query


def assert_real_labels(cases: Cases, scenarios: dict[str, Any]) -> None:
    """Guard a table itself: every expected label exists in its scenario."""
    for scenario, rows in cases.items():
        for query, expected in rows:
            assert set(expected.split()) <= set(scenarios[scenario]), (scenario, query)


@pytest.mark.parametrize(("scenario", "query", "expected"), case_params(CASES))
def test_search_criteria(world: World, scenario: str, query: str, expected: str) -> None:
    assert_case(world, SCENARIOS, scenario, query, expected)


def test_every_case_names_real_labels() -> None:
    assert_real_labels(CASES, SCENARIOS)


# =========================================================================== _lastUpdated


@pytest.fixture(scope="module")
def updated_world(world: World) -> tuple[Loaded, str, str]:
    """Three Patients written in sequence, with their meta.lastUpdated instants."""
    resources = {label: {"resourceType": "Patient"} for label in ("first", "second", "third")}
    marker = uuid.uuid4().hex[:12]
    loaded = Loaded("updated", marker, world.base, {})
    instants = {}
    for label, body in resources.items():
        rid = f"{label}-{marker}"
        loaded.ids[label] = ("Patient", rid)
        put(world.http, loaded, "Patient", rid, copy.deepcopy(body))
        instants[label] = world.http.get(f"/Patient/{rid}").json()["meta"]["lastUpdated"]
        time.sleep(0.01)
    return loaded, instants["first"], instants["second"]


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("eq{second}", "second"),
        ("{second}", "second"),
        ("ne{second}", "first third"),
        ("gt{first}", "second third"),
        ("ge{second}", "second third"),
        ("lt{second}", "first"),
        ("le{second}", "first second"),
        ("sa{first}", "second third"),
        ("eb{second}", "first"),
        ("{day}", "first second third"),
        ("gt{day}", ""),
        ("lt{day}", ""),
        ("ge{first}&_lastUpdated=le{second}", "first second"),
    ],
)
def test_last_updated(
    world: World, updated_world: tuple[Loaded, str, str], template: str, expected: str
) -> None:
    loaded, first, second = updated_world
    # Guard against a run straddling midnight UTC: the day of the first write.
    value = template.format(first=first, second=second, day=first[:10])
    path, pairs = split_query(f"Patient?_lastUpdated={value}")
    bundle = get_bundle(world.http, path, [*pairs, loaded.scope])
    outcome_free(bundle)
    labels = loaded.label_of()
    found = sorted(labels[m] for m in entries(bundle, "match"))
    if "{day}" in template and not all(
        world.http.get(f"/Patient/{rid}").json()["meta"]["lastUpdated"][:10] == first[:10]
        for _, rid in loaded.ids.values()
    ):
        pytest.skip("the writes straddled midnight UTC")
    assert found == sorted(expected.split()), value
