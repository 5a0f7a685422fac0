"""_summary and _elements: return a subset of each resource, marked SUBSETTED."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import fhir_profiles
from app.errors import InvalidRequest
from app.fhir.bindings import element_table
from app.fhir.exchange import FhirRequest, RawJson

SUBSETTED = {
    "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue",
    "code": "SUBSETTED",
}
SUMMARY_MODES = {"true", "false", "text", "data", "count"}
ALWAYS_KEPT = ("resourceType", "id", "meta")


@cache
def _summary_table() -> dict[str, dict[str, Any]]:
    """summary.json (fhir_profiles/generate_core_tables.py): per resource type its summary
    and mandatory top-level names, and each backbone element's summary children."""
    path = Path(fhir_profiles.__file__).parent / "r4_core" / "summary.json"
    result: dict[str, dict[str, Any]] = json.loads(path.read_text())
    return result


@cache
def _child_types(path: str) -> dict[str, str]:
    """The children of a type or backbone path: JSON name -> type code (a backbone's type
    code is its own path, or the path it reuses: Questionnaire.item.item)."""
    return {row[0]: row[2] for row in element_table().get(path, [])}


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


def shape_response(body: Any, request: FhirRequest) -> Any:
    """What a GET (or POST _search) answers, per its _summary / _elements: the resource read,
    or each match of a searchset. An HTTP request and a Bundle entry's GET alike."""
    pairs = list(request.query)
    post_search = request.method == "POST" and request.path.rsplit("/", 1)[-1] == "_search"
    if post_search and isinstance(request.body, list):
        pairs += request.body  # POST _search means what GET means: URL and form together
    params = dict(pairs)
    summary = params.get("_summary")
    elements = tuple(e for e in params.get("_elements", "").split(",") if e)
    check_summary(summary)
    if not (request.method == "GET" or post_search) or (
        summary in (None, "false") and not elements
    ):
        return body
    if isinstance(body, RawJson):
        return shape(body.parse(), summary, elements)
    if (
        isinstance(body, dict)
        and body.get("resourceType") == "Bundle"
        and body.get("type") == "searchset"
    ):
        for entry in body.get("entry", []):
            resource = entry.get("resource")
            # R4 search 3.1.1.5.9: "The list of elements does not apply to included resources."
            chosen = () if entry.get("search", {}).get("mode") == "include" else elements
            if isinstance(resource, RawJson) and (chosen or summary not in (None, "false")):
                entry["resource"] = shape(resource.parse(), summary, chosen)
    return body


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
        subset = _subset(resource, set(table.get("summary", [])))
        return _trim_backbones(subset, rtype, table.get("backbones", {}))
    if summary == "text":
        return _subset(resource, {"text", *table.get("mandatory", [])})
    if summary == "data":
        return _subset(resource, set(resource) - {"text"})
    return resource


def _trim_backbones(
    obj: dict[str, Any], path: str, backbones: dict[str, list[str]]
) -> dict[str, Any]:
    """R4 search.html _summary=true: only the elements marked summary, inside backbone
    elements too (an Observation.component keeps code and value, not its referenceRange).
    A backbone element left with nothing is dropped: an empty object is not valid FHIR."""
    types = _child_types(path)
    trimmed: dict[str, Any] = {}
    for key, value in obj.items():
        child = types.get(key)
        if child not in backbones:
            trimmed[key] = value
            continue
        if isinstance(value, list):
            items = [_trim_item(item, child, backbones) for item in value]
            kept = [item for item in items if item]
            if kept:
                trimmed[key] = kept
        elif (item := _trim_item(value, child, backbones)) is not None:
            trimmed[key] = item
    return trimmed


def _trim_item(value: Any, path: str, backbones: dict[str, list[str]]) -> Any:
    if not isinstance(value, dict):
        return value
    keep = set(backbones[path])
    inner = {k: v for k, v in value.items() if k in keep or k.lstrip("_") in keep}
    return _trim_backbones(inner, path, backbones) or None


def _subset(resource: dict[str, Any], keep: set[str]) -> dict[str, Any]:
    # A primitive's extensions travel with it: keep `_birthDate` whenever `birthDate` is kept.
    result = {
        k: v for k, v in resource.items() if k in keep or k.lstrip("_") in keep or k in ALWAYS_KEPT
    }
    meta = dict(result.get("meta") or {})
    meta["tag"] = [*meta.get("tag", []), SUBSETTED]
    result["meta"] = meta
    return result
