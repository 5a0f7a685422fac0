"""The R4 search parameter definitions, with their expressions compiled.

The table ``fhir_profiles/r4_core/search_parameters.json`` is generated from the official
definitions by ``python -m fhir_profiles.generate_search_parameters``; it is loaded once.
Each definition's FHIRPath expression is compiled for its resource type (natively when
possible, see app.fhir.search.fhirpath), so indexing is ``param.evaluate(resource)``.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import fhir_profiles
from app.fhir.search.fhirpath import (
    CompositeRows,
    Evaluator,
    compile_composite,
    compile_expression,
)

TABLE_FILE = "search_parameters.json"
NARROWED_FILE = "indexed_search_parameters.json"  # in fhir_profiles/medisentinel/


@dataclass(frozen=True)
class ComponentDef:
    """One part of a composite parameter: the component parameter's code and the
    expression evaluated on each node of the composite's expression."""

    definition: str
    expression: str


@dataclass(frozen=True)
class SearchParamDef:
    code: str
    type: str  # number | date | string | token | reference | composite | quantity | uri | special
    expression: str  # the union branches that apply to this resource type
    targets: tuple[str, ...]
    modifiers: tuple[str, ...]
    comparators: tuple[str, ...]
    components: tuple[ComponentDef, ...]
    url: str
    evaluate: Evaluator  # evaluate(resource) -> the values to index
    # For composites: evaluate_components(resource) -> per node, each component's values.
    evaluate_components: Callable[[Any], CompositeRows] | None = None


@functools.cache
def _table() -> dict[str, Any]:
    path = data_file()
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def data_file(folder: str = "r4_core", name: str = TABLE_FILE) -> Path:
    for entry in fhir_profiles.__path__:  # a package or a namespace package
        candidate = Path(entry) / folder / name
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"fhir_profiles/{folder}/{name} is missing (r4_core: run "
        "python -m fhir_profiles.generate_search_parameters)"
    )


@functools.cache
def _narrowed() -> dict[str, frozenset[str]]:
    data = json.loads(data_file("medisentinel", NARROWED_FILE).read_text(encoding="utf-8"))
    return {rtype: frozenset(v["parameters"]) for rtype, v in data.items() if rtype[0] != "_"}


def offered(resource_type: str, code: str) -> bool:
    """False for a parameter our profiles leave out of a type's index (see the file)."""
    kept = _narrowed().get(resource_type)
    return kept is None or code in kept


def _build(resource_type: str, code: str, row: dict[str, Any]) -> SearchParamDef:
    components = tuple(ComponentDef(c["definition"], c["expression"]) for c in row["components"])
    evaluate_components = None
    if components:
        evaluate_components = compile_composite(
            row["expression"], [c.expression for c in components], resource_type
        )
    return SearchParamDef(
        code=code,
        type=row["type"],
        expression=row["expression"],
        targets=tuple(row["targets"]),
        modifiers=tuple(row["modifiers"]),
        comparators=tuple(row["comparators"]),
        components=components,
        url=row["url"],
        evaluate=compile_expression(row["expression"], resource_type),
        evaluate_components=evaluate_components,
    )


_NONE: Mapping[str, SearchParamDef] = MappingProxyType({})


def params_for(resource_type: str) -> Mapping[str, SearchParamDef]:
    """code -> definition for one resource type (empty for unknown types); read-only."""
    if resource_type.startswith("_") or resource_type not in _table():
        return _NONE  # not cached: the type may come from a client's URL
    return _params(resource_type)


@functools.cache
def _params(resource_type: str) -> Mapping[str, SearchParamDef]:
    rows: dict[str, Any] = _table()[resource_type]
    return MappingProxyType({code: _build(resource_type, code, row) for code, row in rows.items()})


def resource_types() -> list[str]:
    return [key for key in _table() if not key.startswith("_")]


def all_params() -> dict[str, Mapping[str, SearchParamDef]]:
    return {resource_type: params_for(resource_type) for resource_type in resource_types()}


@functools.cache
def special_params() -> frozenset[str]:
    """Codes implemented in code, not by an expression (_content, _has, _list, ...)."""
    return frozenset(_table()["_special"])
