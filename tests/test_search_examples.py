"""Every official R4 example of the served types (hl7.fhir.r4.examples 4.0.1) is found by _id
and by its token search parameters.

Each example is stored with PUT /<Type>/<id>. Then, for every token parameter in PROBES that
the example has a value for (computed here from the example's JSON, independently of the
server's FHIRPath indexer), ``<Type>?_id=<id>&<param>=<value>`` must return the example, and
the same with a value that the example does not have must return nothing (so a parameter that
was silently ignored cannot pass). The few examples without any token value (e.g.
Organization-hl7pay: a name only) are found by ``<param>:missing=true`` instead.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.fhir.search.definitions import params_for
from tests.fhir_package import CORE_EXAMPLE_TYPES, core_example_files, require_examples_dir
from tests.test_search_params import FHIR_JSON, entries, get_bundle, outcome_free

RESOURCE_TYPES = CORE_EXAMPLE_TYPES

IDENTIFIER = ("identifier", "identifier", "identifier")
STATUS = ("status", "status", "code")
ADDRESS_USE = ("address-use", "address.use", "code")
# type -> (parameter, element path, kind of value there)
PROBES: dict[str, list[tuple[str, str, str]]] = {
    "Patient": [
        IDENTIFIER,
        ("gender", "gender", "code"),
        ("active", "active", "boolean"),
        ("language", "communication.language", "concept"),
        ("telecom", "telecom", "contact"),
        ("email", "telecom", "contact:email"),
        ("phone", "telecom", "contact:phone"),
        ADDRESS_USE,
    ],
    "Practitioner": [
        IDENTIFIER,
        ("gender", "gender", "code"),
        ("active", "active", "boolean"),
        ("communication", "communication", "concept"),
        ("telecom", "telecom", "contact"),
        ADDRESS_USE,
    ],
    "Organization": [
        IDENTIFIER,
        ("active", "active", "boolean"),
        ("type", "type", "concept"),
        ADDRESS_USE,
    ],
    "Location": [
        IDENTIFIER,
        STATUS,
        ("operational-status", "operationalStatus", "coding"),
        ("type", "type", "concept"),
        ADDRESS_USE,
    ],
    "Encounter": [
        IDENTIFIER,
        STATUS,
        ("class", "class", "coding"),
        ("type", "type", "concept"),
        ("participant-type", "participant.type", "concept"),
        ("reason-code", "reasonCode", "concept"),
        ("special-arrangement", "hospitalization.specialArrangement", "concept"),
    ],
    "Device": [IDENTIFIER, STATUS, ("type", "type", "concept")],
    "Observation": [
        IDENTIFIER,
        STATUS,
        ("code", "code", "concept"),
        ("category", "category", "concept"),
        ("value-concept", "valueCodeableConcept", "concept"),
        ("component-code", "component.code", "concept"),
        ("combo-code", "component.code", "concept"),
        ("data-absent-reason", "dataAbsentReason", "concept"),
        ("method", "method", "concept"),
    ],
    "DiagnosticReport": [
        IDENTIFIER,
        STATUS,
        ("code", "code", "concept"),
        ("category", "category", "concept"),
        ("conclusion", "conclusionCode", "concept"),
    ],
    "Task": [
        IDENTIFIER,
        STATUS,
        ("intent", "intent", "code"),
        ("priority", "priority", "code"),
        ("code", "code", "concept"),
        ("business-status", "businessStatus", "concept"),
        ("group-identifier", "groupIdentifier", "identifier"),
        ("performer", "performerType", "concept"),
    ],
    "Communication": [
        IDENTIFIER,
        STATUS,
        ("category", "category", "concept"),
        ("medium", "medium", "concept"),
    ],
    "Provenance": [
        ("agent-type", "agent.type", "concept"),
        ("agent-role", "agent.role", "concept"),
        ("signature-type", "signature.type", "coding"),
    ],
    "SupplyRequest": [IDENTIFIER, STATUS, ("category", "category", "concept")],
    "SupplyDelivery": [IDENTIFIER, STATUS],
}
MAX_VALUES = 3  # per parameter and example


# --------------------------------------------------------------------------- values from JSON


def at(node: Any, path: str) -> list[Any]:
    """The values at a dotted element path, lists flattened."""
    current = [node]
    for step in path.split("."):
        following = []
        for item in current:
            value = item.get(step) if isinstance(item, dict) else None
            if isinstance(value, list):
                following.extend(value)
            elif value is not None:
                following.append(value)
        current = following
    return current


def escape(text: str) -> str:
    for char in ("\\", ",", "|", "$"):
        text = text.replace(char, "\\" + char)
    return text


def token(system: Any, code: str) -> str:
    """system|code, or |code when the element has no system."""
    return f"{escape(system) if isinstance(system, str) else ''}|{escape(code)}"


def token_values(node: Any, kind: str) -> list[str]:
    if kind == "code" and isinstance(node, str):
        return [escape(node)]
    if kind == "boolean" and isinstance(node, bool):
        return ["true" if node else "false"]
    if kind == "coding" and isinstance(node, dict) and isinstance(node.get("code"), str):
        return [token(node.get("system"), node["code"])]
    if kind == "concept" and isinstance(node, dict):
        return [v for coding in node.get("coding", []) for v in token_values(coding, "coding")]
    if kind == "identifier" and isinstance(node, dict) and isinstance(node.get("value"), str):
        return [token(node.get("system"), node["value"])]
    if kind.startswith("contact") and isinstance(node, dict) and isinstance(node.get("value"), str):
        wanted = kind.partition(":")[2]
        if not wanted or node.get("system") == wanted:
            return [escape(node["value"])]
    return []


def probes(resource: dict[str, Any]) -> list[tuple[str, str]]:
    """(parameter, value) pairs the example must be found by."""
    out: list[tuple[str, str]] = []
    for param, path, kind in PROBES[resource["resourceType"]]:
        found: list[str] = []
        for node in at(resource, path):
            found += [v for v in token_values(node, kind) if v not in found]
        out += [(param, value) for value in found[:MAX_VALUES]]
    return out


def absent(param: str, value: str) -> tuple[str, str]:
    """A criterion of the same shape that the example does not meet."""
    if param.endswith(":missing") or value in ("true", "false"):  # a boolean takes no other
        return param, "false" if value == "true" else "true"
    return param, value + "-not-in-any-example"


def missing_probe(resource: dict[str, Any]) -> list[tuple[str, str]]:
    """For an example without any token value: the first probed element it lacks entirely."""
    for param, path, _ in PROBES[resource["resourceType"]]:
        if not at(resource, path) and param != "combo-code":
            return [(f"{param}:missing", "true")]
    return []


# --------------------------------------------------------------------------- collection


def example_files() -> tuple[str, ...]:
    return core_example_files()


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "example_name" in metafunc.fixturenames:
        # Without the package, one test that skips (npm absent) or fails (download failed).
        metafunc.parametrize("example_name", list(example_files()) or ["examples-unavailable"])


@pytest.fixture(scope="module")
def stored(base_url: str, auth_headers: dict[str, str]) -> Iterator[tuple[httpx.Client, Path]]:
    """Every example PUT once, with its own id."""
    directory = require_examples_dir()
    with httpx.Client(
        base_url=base_url, headers={"Accept": "application/fhir+json", **auth_headers}, timeout=60
    ) as http:
        for name in example_files():
            raw = (directory / name).read_bytes()
            resource = json.loads(raw)
            response = http.put(
                f"/{resource['resourceType']}/{resource['id']}", content=raw, headers=FHIR_JSON
            )
            assert response.status_code in (200, 201), (name, response.text)
        yield http, directory


def test_probe_table_names_real_parameters() -> None:
    for rtype, table in PROBES.items():
        known = params_for(rtype)
        for param, _, _ in table:
            assert param in known and known[param].type == "token", (rtype, param)
    assert set(PROBES) == set(RESOURCE_TYPES)


def test_example_found_by_id_and_tokens(
    stored: tuple[httpx.Client, Path], example_name: str
) -> None:
    http, directory = stored
    resource = json.loads((directory / example_name).read_bytes())
    rtype, rid = resource["resourceType"], resource["id"]

    by_id = get_bundle(http, rtype, [("_id", rid)])
    assert entries(by_id, "match") == [(rtype, rid)]

    checks = probes(resource) or missing_probe(resource)
    assert checks, f"{example_name} has no value for any token parameter in PROBES"
    missed, leaked = [], []
    for param, value in checks:
        bundle = get_bundle(http, rtype, [("_id", rid), (param, value)])
        outcome_free(bundle)
        if entries(bundle, "match") != [(rtype, rid)]:
            missed.append(f"{param}={value}")
        other = get_bundle(http, rtype, [("_id", rid), absent(param, value)])
        if entries(other, "match"):
            leaked.append("=".join(absent(param, value)))
    assert not missed, f"{rtype}/{rid} not found by: {missed}"
    assert not leaked, f"{rtype}/{rid} found by values it does not have: {leaked}"
