"""GET /metadata: a CapabilityStatement built from what this server really does.

Keep it true: when an interaction, format or search parameter lands, it is listed here from
the same tables the code uses (resource types, supported search parameters).
"""

from __future__ import annotations

from functools import cache
from typing import Any

from app.fhir import bindings
from app.fhir.search.params import SUPPORTED_CRITERIA

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
PARAM_DOCS = {
    "_id": "Logical id of the resource",
    "_lastUpdated": "When the resource version last changed",
    "identifier": "A business identifier (system|value)",
}


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
                "resource": [_resource(t) for t in sorted(bindings.resource_types())],
                "interaction": [
                    {"code": "transaction"},
                    {"code": "batch"},
                    {"code": "history-system"},
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
        "searchParam": [
            {"name": name, "type": kind, "documentation": PARAM_DOCS[name]}
            for name, kind in SUPPORTED_CRITERIA.items()
            if name != "identifier" or _has_identifier(rtype)
        ],
    }


def _has_identifier(rtype: str) -> bool:
    return any(row[0] == "identifier" for row in bindings.element_table().get(rtype, []))
