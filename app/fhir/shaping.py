"""_summary and _elements: return a subset of each resource, marked SUBSETTED."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import fhir_profiles
from app.errors import InvalidRequest
from app.fhir.bindings import element_table

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


@cache
def _choice_names(rtype: str) -> dict[str, frozenset[str]]:
    """The top-level choice elements of `rtype`: base name -> typed names (value ->
    valueQuantity, valueString ...). A name is a choice's when it is a base plus its type's
    name and at least one other element has the same base that way (birthDate is alone)."""
    rows = element_table().get(rtype, [])
    groups: dict[str, set[str]] = {}
    for name, _is_array, type_code, _vs in rows:
        suffix = type_code[:1].upper() + type_code[1:]
        if len(name) > len(suffix) and name.endswith(suffix):
            groups.setdefault(name.removesuffix(suffix), set()).add(name)
    elements = {row[0] for row in rows}  # NutritionOrder has instantiates and instantiatesUri
    return {
        base: frozenset(names)
        for base, names in groups.items()
        if len(names) > 1 and base not in elements
    }


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
        keep = set(_summary_table().get(rtype, {}).get("mandatory", []))
        for name in elements:
            keep.add(name)
            # A choice element is asked for by its base name ("value" or "value[x]"); it sits
            # in the resource under a typed name (valueQuantity).
            keep.update(_choice_names(rtype).get(name.removesuffix("[x]"), ()))
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
