"""Required terminology bindings of the FHIR R4 core types.

The tables come from ``fhir_profiles/r4_core/`` (written by
``python -m fhir_profiles.generate_core_tables``): ``elements.json`` describes every core
type's child elements and ``valuesets.json`` holds the codes of each required value set that
can be expanded offline.

:func:`check_required_bindings` walks a resource as parsed from JSON and reports every coded
element whose value is outside its required value set. It only looks at terminology: a wrong
JSON shape is another validator's job, so anything unexpected is silently skipped.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from types import MappingProxyType
from typing import Any, NamedTuple

import fhir_profiles

# What the walker does with an element; resolved once so the hot loop only compares ints.
_WALK = 0  # complex type or backbone element: recurse with the type's own field table
_CODE = 1  # code/string/uri with a required binding: check the string itself
_CODING = 2  # Coding with a required binding
_CONCEPT = 3  # CodeableConcept with a required binding
_RESOURCE = 4  # a nested resource (contained, Bundle.entry.resource, ...): use its resourceType

# Deeper JSON than this is not real FHIR; stop there instead of hitting RecursionError
# (each level costs two Python frames, and parsers accept up to ~1000 levels).
_MAX_DEPTH = 200

# How a required binding is checked, by the bound element's type.
_BOUND_ACTIONS = {
    "code": _CODE,
    "string": _CODE,
    "uri": _CODE,
    "Coding": _CODING,
    "CodeableConcept": _CONCEPT,
}


@dataclass(frozen=True)
class BindingViolation:
    """A code outside the required value set of the element at ``path``."""

    path: str  # FHIRPath-style, e.g. "Patient.name[0].use"
    code: str
    value_set: str


class _Field(NamedTuple):
    is_array: bool
    action: int
    type_code: str
    # Field table of the element's own type, to recurse into (None for primitives/resources).
    # Held directly so the hot loop needs no lookup by type name.
    children: _Fields | None
    value_set: str = ""  # the remaining fields only matter for bound elements
    codes: frozenset[str] = frozenset()
    systems: frozenset[str] = frozenset()


_Fields = dict[str, _Field]


# --------------------------------------------------------------------------- table loading


@cache
def _data_dir() -> Path:
    """``fhir_profiles/r4_core``, whether fhir_profiles imports as a package or namespace.

    importlib.resources is not used because an editable install made before
    ``fhir_profiles/__init__.py`` existed exposes a namespace path it cannot read.
    """
    for entry in fhir_profiles.__path__:
        candidate = Path(entry) / "r4_core"
        if (candidate / "elements.json").is_file():
            return candidate
    raise FileNotFoundError(
        "fhir_profiles/r4_core/elements.json is missing; run "
        "python -m fhir_profiles.generate_core_tables"
    )


def _load_json(name: str) -> Any:
    return json.loads((_data_dir() / name).read_text(encoding="utf-8"))


@cache
def _elements_doc() -> dict[str, Any]:
    return _load_json("elements.json")


@cache
def _valuesets_doc() -> dict[str, Any]:
    return _load_json("valuesets.json")


def element_table() -> Mapping[str, list[list[Any]]]:
    """``types`` of elements.json: type or backbone path -> ``[name, isArray, type, vs]`` rows.

    Shared with other modules; treat the rows as read-only.
    """
    return MappingProxyType(_elements_doc()["types"])


@cache
def resource_types() -> frozenset[str]:
    """Names of all concrete R4 resource types (no abstract Resource/DomainResource)."""
    return frozenset(_elements_doc()["resourceTypes"])


@cache
def _field_tables() -> dict[str, _Fields]:
    """Per-type ``json name -> _Field`` tables, pruned to what can lead to a required binding.

    A type is *relevant* when it has a bound element, a nested resource, or a child of a
    relevant type. Only elements that are bound or of a relevant type get a table entry, so
    the walker never descends into subtrees that cannot hold a violation. (Extension.value[x]
    allows Quantity, Identifier, ... so in practice every complex type is relevant through
    its ``extension``; what gets pruned is the many unbound primitive elements.)
    """
    types: dict[str, list[list[Any]]] = _elements_doc()["types"]
    relevant = _relevant_types(types)
    vs_doc = _valuesets_doc()
    valuesets = {
        url: (frozenset(codes), frozenset(vs_doc["systems"][url]))
        for url, codes in vs_doc["codes"].items()
    }
    primitives = _elements_doc()["primitiveTypes"]

    # Create every (empty) table first so fields can point at the table of their type.
    tables: dict[str, _Fields] = {name: {} for name in types}
    for type_name, rows in types.items():
        fields = tables[type_name]
        for name, is_array, type_code, vs_url in rows:
            field = _make_field(is_array, type_code, vs_url, relevant, tables, valuesets)
            if field is not None:
                fields[name] = field
            # Extensions on a primitive travel in "_name" as an Element (or list of them).
            if type_code in primitives and "Element" in relevant:
                fields["_" + name] = _Field(is_array, _WALK, "Element", tables["Element"])
    return tables


def _make_field(
    is_array: bool,
    type_code: str,
    vs_url: str | None,
    relevant: frozenset[str],
    tables: dict[str, _Fields],
    valuesets: dict[str, tuple[frozenset[str], frozenset[str]]],
) -> _Field | None:
    """The walker's view of one element, or None when nothing below it can be violated."""
    children = tables.get(type_code) if type_code in relevant else None
    if vs_url is not None and vs_url in valuesets:
        codes, systems = valuesets[vs_url]
        action = _BOUND_ACTIONS.get(type_code)
        if action is not None:
            return _Field(is_array, action, type_code, children, vs_url, codes, systems)
    if type_code == "Resource":
        return _Field(is_array, _RESOURCE, type_code, None)
    if children is not None:
        return _Field(is_array, _WALK, type_code, children)
    return None


def _relevant_types(types: dict[str, list[list[Any]]]) -> frozenset[str]:
    """Fixpoint: types that can (transitively) contain an element with a required binding."""
    bound = set(_valuesets_doc()["codes"])
    relevant = {
        name
        for name, rows in types.items()
        if any(row[3] in bound or row[2] == "Resource" for row in rows)
    }
    changed = True
    while changed:
        changed = False
        for name, rows in types.items():
            if name not in relevant and any(row[2] in relevant for row in rows):
                relevant.add(name)
                changed = True
    return frozenset(relevant)


# --------------------------------------------------------------------------- walking


def check_required_bindings(resource: dict[str, Any]) -> list[BindingViolation]:
    """Every code in ``resource`` that is outside its element's required value set.

    Unknown or missing ``resourceType`` yields no violations (nothing to check against).
    """
    if not isinstance(resource, dict):
        return []
    resource_type = resource.get("resourceType")
    if not isinstance(resource_type, str) or resource_type not in resource_types():
        return []
    out: list[BindingViolation] = []
    _walk(resource, _field_tables()[resource_type], resource_type, 0, out)
    return out


def _walk(
    obj: dict[str, Any], fields: _Fields, path: str, depth: int, out: list[BindingViolation]
) -> None:
    if depth > _MAX_DEPTH:
        return
    depth += 1
    for key, value in obj.items():
        field = fields.get(key)
        if field is None:  # unknown key or a subtree without required bindings
            continue
        if not field.is_array:
            _visit(value, field, f"{path}.{key}", depth, out)
        elif isinstance(value, list):
            for index, item in enumerate(value):
                _visit(item, field, f"{path}.{key}[{index}]", depth, out)
        # An array element given as a scalar is a shape error: not ours to report.


def _visit(value: Any, field: _Field, path: str, depth: int, out: list[BindingViolation]) -> None:
    action = field.action
    if action == _CODE:
        if isinstance(value, str) and value not in field.codes:
            out.append(BindingViolation(path, value, field.value_set))
        return
    if not isinstance(value, dict):
        return
    if action == _RESOURCE:
        nested_type = value.get("resourceType")
        if isinstance(nested_type, str) and nested_type in resource_types():
            _walk(value, _field_tables()[nested_type], path, depth, out)
        return
    if action == _CODING:
        _check_coding(value, field, path, out)
    elif action == _CONCEPT:
        codings = value.get("coding")
        if isinstance(codings, list):
            for index, coding in enumerate(codings):
                if isinstance(coding, dict):
                    _check_coding(coding, field, f"{path}.coding[{index}]", out)
    # Bound or not, the datatype's own children (extensions ...) may hold more bindings.
    if field.children:
        _walk(value, field.children, path, depth, out)


def _check_coding(
    coding: dict[str, Any], field: _Field, path: str, out: list[BindingViolation]
) -> None:
    """A Coding is only judged when it claims (or leaves open) the value set's own system."""
    code = coding.get("code")
    if not isinstance(code, str):
        return
    system = coding.get("system")
    if system is not None and system not in field.systems:
        return
    if code not in field.codes:
        out.append(BindingViolation(f"{path}.code", code, field.value_set))
