"""GET /metadata: a CapabilityStatement built from what this server really does.

Keep it true: when an interaction, format or search parameter lands, it is listed here from
the same tables the code uses (resource types, supported search parameters).
"""

from __future__ import annotations

from functools import cache
from typing import Any

from app.fhir import bindings
from app.fhir.search.definitions import params_for
from app.fhir.search.indexer import indexed_param
from app.fhir.search.params import RESOURCE_COLUMNS

SOFTWARE_VERSION = "0.1.0"
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


def capability_statement(base_url: str) -> dict[str, Any]:
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
                    {"code": "history-system"},
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
    return {
        "type": rtype,
        "interaction": [{"code": code} for code in TYPE_INTERACTIONS],
        "versioning": "versioned-update",
        "readHistory": True,
        "updateCreate": True,
        "conditionalCreate": True,
        "conditionalRead": "full-support",
        "conditionalUpdate": True,
        "conditionalDelete": "single",
        "searchInclude": sorted(
            f"{rtype}:{c}" for c, p in params_for(rtype).items() if p.type == "reference"
        ),
        "searchRevInclude": [],
        "searchParam": _search_params(rtype),
    }


def _search_params(rtype: str) -> list[dict[str, Any]]:
    out = [{"name": name, "type": kind} for name, kind in RESOURCE_COLUMNS.items()]
    for code, param in sorted(params_for(rtype).items()):
        if code not in RESOURCE_COLUMNS and indexed_param(rtype, param):
            out.append({"name": code, "type": param.type, "definition": param.url})
    return out
