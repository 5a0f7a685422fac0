"""GET /metadata: a CapabilityStatement built from what this server really does.

Keep it true: when an interaction, format or search parameter lands, it is listed here from
the same tables the code uses (resource types, supported search parameters).
"""

from __future__ import annotations

from functools import cache
from typing import Any

from app.errors import InvalidRequest, Issue
from app.fhir import bindings, compartments
from app.fhir.search.definitions import SearchParamDef, params_for
from app.fhir.search.indexer import indexed_param
from app.fhir.search.params import RESOURCE_COLUMNS, WILDCARD

SOFTWARE_VERSION = "0.1.0"
RESOURCE_PARAM_URL = "http://hl7.org/fhir/SearchParameter/Resource-"
TYPE_INTERACTIONS = [
    "read",
    "vread",
    "update",
    "patch",
    "delete",
    "history-instance",
    "history-type",
    "create",
    "search-type",
]

WRITES = frozenset({"update", "patch", "delete", "create"})
# Types the server alone writes: the API answers 405 to any write (audit/hook.py), so the
# statement must not offer one.
SERVER_WRITTEN_TYPES = frozenset({"AuditEvent"})
# What a client needs to know to search by a parameter, beyond its definition.
PARAM_NOTES = {
    # AuditEvent.source.observer holds an identifier (audit/events.py SERVER_SYSTEM), no
    # reference: BALP leaves it to the server ("may be a Device resource, but likely just an
    # identifier"), and a Device would be one more resource to keep. `source=` with a
    # reference therefore matches nothing.
    ("AuditEvent", "source"): "source.observer is an identifier, not a reference: search "
    "with source:identifier=urn:medisentinel:server|<this server's FHIR base URL>; "
    "source=<reference> matches no event",
}


def capability_statement(base_url: str, mode: str | None = None) -> dict[str, Any]:
    """`GET metadata?mode=`: full (the default) and normative answer this statement, whose
    every part is about this server; terminology asks for a TerminologyCapabilities, which
    is not offered (it was answered with this CapabilityStatement, another resource type)."""
    if mode == "terminology":
        message = "mode=terminology: this server offers no TerminologyCapabilities"
        raise InvalidRequest(message, issues=[Issue("error", "not-supported", message, ("mode",))])
    if mode not in (None, "full", "normative"):
        raise InvalidRequest(
            f"mode must be full, normative or terminology, not '{mode}'", expression="mode"
        )
    return _cached(base_url)


@cache
def _cached(base_url: str) -> dict[str, Any]:
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": "2026-11-21",
        "publisher": "MediSentinel",
        "kind": "instance",
        "software": {"name": "MediSentinel", "version": SOFTWARE_VERSION},
        "implementation": {"description": "MediSentinel FHIR server", "url": base_url},
        "fhirVersion": "4.0.1",
        "format": ["application/fhir+json", "application/fhir+xml", "json", "xml"],
        "patchFormat": ["application/json-patch+json"],
        "rest": [
            {
                "mode": "server",
                "security": _security(base_url),
                "resource": [_resource(t) for t in sorted(bindings.resource_types())],
                "interaction": [
                    {"code": "transaction"},
                    {"code": "batch"},
                    {"code": "search-system"},
                    {"code": "history-system"},
                ],
                "searchParam": _system_search_params(),
                # Compartment search (GET Patient/123/Observation): app/fhir/compartments.py
                "compartment": [
                    f"http://hl7.org/fhir/CompartmentDefinition/{ctype[0].lower()}{ctype[1:]}"
                    for ctype in sorted(compartments.definitions())
                ],
            }
        ],
    }


def _security(base_url: str) -> dict[str, Any]:
    """SMART on FHIR: the service code and the oauth-uris extension (SMART App Launch 2.x)."""
    root = base_url[: -len("/fhir")] if base_url.endswith("/fhir") else base_url
    uris = {"authorize": "authorize", "token": "token", "introspect": "introspect",
            "revoke": "revoke"}  # fmt: skip
    return {
        "cors": True,
        "service": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
                        "code": "SMART-on-FHIR",
                    }
                ],
                "text": "OAuth2 using SMART-on-FHIR profile (see .well-known/smart-configuration)",
            }
        ],
        "extension": [
            {
                "url": "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris",
                "extension": [
                    {"url": name, "valueUri": f"{root}/auth/{path}"} for name, path in uris.items()
                ],
            }
        ],
    }


def _resource(rtype: str) -> dict[str, Any]:
    writable = rtype not in SERVER_WRITTEN_TYPES
    return {
        "type": rtype,
        "interaction": [
            {"code": code} for code in TYPE_INTERACTIONS if writable or code not in WRITES
        ],
        "versioning": "versioned-update",
        "readHistory": True,
        "updateCreate": writable,
        "conditionalCreate": writable,
        "conditionalRead": "full-support",
        "conditionalUpdate": writable,
        "conditionalDelete": "single" if writable else "not-supported",
        "searchInclude": [WILDCARD, f"{rtype}:{WILDCARD}", *_includes(rtype)],
        "searchRevInclude": [WILDCARD, *_revincludes().get(rtype, [])],
        "searchParam": _search_params(rtype),
        "operation": _operations(rtype),
    }


def _operations(rtype: str) -> list[dict[str, str]]:
    """rest.resource.operation: the operations served on the type (app/fhir/operations)."""
    # Imported here: $validate reads SERVER_WRITTEN_TYPES from this module.
    from app.fhir import operations

    return [
        {"name": op.name.removeprefix("$"), "definition": op.definition}
        for op in operations.for_type(rtype)
    ]


def _references(rtype: str) -> list[tuple[str, SearchParamDef]]:
    """The reference parameters of rtype that are indexed (what _include can follow)."""
    return [
        (code, p)
        for code, p in sorted(params_for(rtype).items())
        if p.type == "reference" and indexed_param(rtype, p)
    ]


def _includes(rtype: str) -> list[str]:
    return [f"{rtype}:{code}" for code, _ in _references(rtype)]


@cache
def _revincludes() -> dict[str, list[str]]:
    """Per target type, `Source:param` of every indexed reference parameter that can refer
    to it (a parameter without declared targets can refer to any type)."""
    found: dict[str, list[str]] = {}
    types = sorted(bindings.resource_types())
    for source in types:
        for code, param in _references(source):
            for target in param.targets or types:
                found.setdefault(target, []).append(f"{source}:{code}")
    return found


def _system_search_params() -> list[dict[str, Any]]:
    """What GET [base]?... searches every type by: the resource table's columns, the
    parameters defined on Resource (each where indexed), and _type."""
    types = sorted(bindings.resource_types())
    out: list[dict[str, Any]] = [{"name": n, "type": k} for n, k in RESOURCE_COLUMNS.items()]
    common = {
        code: param
        for t in types
        for code, param in params_for(t).items()
        if param.url.startswith(RESOURCE_PARAM_URL) and code not in RESOURCE_COLUMNS
    }
    for code, param in sorted(common.items()):
        lacking = [t for t in types if not _indexed(t, code)]
        if len(lacking) == len(types):
            continue
        entry = {"name": code, "type": param.type, "definition": param.url}
        if lacking:
            entry["documentation"] = f"not searchable on {', '.join(lacking)}"
        out.append(entry)
    out.append(LIST_PARAM)
    out.append({"name": "_type", "type": "token", "documentation": "the resource types searched"})
    return out


# R4 search.html#list: no SearchParameter defines it (it is of type special)
LIST_PARAM = {
    "name": "_list",
    "type": "special",
    "documentation": "the resources a List names in entry.item (by the List's id)",
}


def _indexed(rtype: str, code: str) -> bool:
    param = params_for(rtype).get(code)
    return param is not None and indexed_param(rtype, param)


def _search_params(rtype: str) -> list[dict[str, Any]]:
    out = [{"name": name, "type": kind} for name, kind in RESOURCE_COLUMNS.items()]
    out.append(LIST_PARAM)
    for code, param in sorted(params_for(rtype).items()):
        if code not in RESOURCE_COLUMNS and indexed_param(rtype, param):
            entry = {"name": code, "type": param.type, "definition": param.url}
            if (rtype, code) in PARAM_NOTES:
                entry["documentation"] = PARAM_NOTES[rtype, code]
            out.append(entry)
    return out
