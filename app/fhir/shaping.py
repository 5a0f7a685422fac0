"""_summary and _elements: return a subset of each resource, marked SUBSETTED."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import fhir_profiles
from app.errors import InvalidRequest

SUBSETTED = {
    "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue",
    "code": "SUBSETTED",
}
SUMMARY_MODES = {"true", "false", "text", "data", "count"}
ALWAYS_KEPT = ("resourceType", "id", "meta")


@cache
def _summary_table() -> dict[str, dict[str, list[str]]]:
    path = Path(fhir_profiles.__file__).parent / "r4_core" / "summary.json"
    result: dict[str, dict[str, list[str]]] = json.loads(path.read_text())
    return result


def check_summary(mode: str | None) -> None:
    if mode is not None and mode not in SUMMARY_MODES:
        raise InvalidRequest(
            f"_summary must be one of {sorted(SUMMARY_MODES)}", expression="_summary"
        )


def shape(
    resource: dict[str, Any], summary: str | None, elements: tuple[str, ...]
) -> dict[str, Any]:
    """The resource reduced per _summary / _elements (unchanged when neither applies)."""
    rtype = resource.get("resourceType", "")
    if elements:
        keep = set(elements) | set(_summary_table().get(rtype, {}).get("mandatory", []))
        return _subset(resource, keep)
    if summary in (None, "false"):
        return resource
    table = _summary_table().get(rtype, {})
    if summary == "true":
        return _subset(resource, set(table.get("summary", [])))
    if summary == "text":
        return _subset(resource, {"text", *table.get("mandatory", [])})
    if summary == "data":
        return _subset(resource, set(resource) - {"text"})
    return resource


def _subset(resource: dict[str, Any], keep: set[str]) -> dict[str, Any]:
    # A primitive's extensions travel with it: keep `_birthDate` whenever `birthDate` is kept.
    result = {
        k: v for k, v in resource.items() if k in keep or k.lstrip("_") in keep or k in ALWAYS_KEPT
    }
    meta = dict(result.get("meta") or {})
    meta["tag"] = [*meta.get("tag", []), SUBSETTED]
    result["meta"] = meta
    return result
