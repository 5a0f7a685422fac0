"""The generated element tables of the FHIR R4 core types, and the walk along them.

The tables come from ``fhir_profiles/r4_core/`` (written by
``python -m fhir_profiles.generate_core_tables``): ``elements.json`` describes every core
type's child elements and ``valuesets.json`` holds the codes of each required value set that
can be expanded offline. They are turned into per-type field tables (:class:`Field`), which
:class:`Walker` follows through a resource as parsed from JSON; the checks built on it live in
app.fhir.bindings (required bindings, JSON kinds) and app.fhir.invariants.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from types import MappingProxyType
from typing import Any, NamedTuple

import fhir_profiles

# What the binding walker does with an element; resolved once so the hot loop only compares
# ints.
ACT_NONE = -1  # nothing to check (only in the unpruned tables of the kind check)
ACT_WALK = 0  # complex type or backbone element: recurse with the type's own field table
ACT_CODE = 1  # code/string/uri with a required binding: check the string itself
ACT_CODING = 2  # Coding with a required binding
ACT_CONCEPT = 3  # CodeableConcept with a required binding
ACT_RESOURCE = 4  # a nested resource (contained, Bundle.entry.resource, ...): use its resourceType

# The JSON kind an element's value must have. The primitive kinds come last so that
# ``kind >= KIND_STRING`` means "a primitive".
KIND_OBJECT = 0  # complex type or backbone element
KIND_RESOURCE = 1  # a nested resource: an object with its own resourceType
KIND_PARTNER = 2  # "_name": the Element (id, extensions) of primitive "name"; null in arrays
KIND_STRING = 3
KIND_BOOLEAN = 4
KIND_INTEGER = 5  # integer, positiveInt, unsignedInt
KIND_DECIMAL = 6

# Deeper JSON than this is not real FHIR; stop there instead of hitting RecursionError
# (each level costs two Python frames, and parsers accept up to ~1000 levels).
MAX_DEPTH = 200

# How a required binding is checked, by the bound element's type.
_BOUND_ACTIONS = {
    "code": ACT_CODE,
    "string": ACT_CODE,
    "uri": ACT_CODE,
    "Coding": ACT_CODING,
    "CodeableConcept": ACT_CONCEPT,
}


class Field(NamedTuple):
    is_array: bool
    action: int
    kind: int
    type_code: str
    # Field table of the element's own type, to recurse into (None for primitives/resources).
    # Held directly so the hot loop needs no lookup by type name.
    children: Fields | None
    value_set: str = ""  # the next three fields only matter for bound elements
    codes: frozenset[str] = frozenset()
    systems: frozenset[str] = frozenset()
    # The choice element this typed name belongs to (``valueQuantity``: ``value``), or "".
    choice: str = ""


Fields = dict[str, Field]


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


def load_json(name: str) -> Any:
    """One of the generated tables (fhir_profiles/r4_core/*.json)."""
    return json.loads((_data_dir() / name).read_text(encoding="utf-8"))


@cache
def _elements_doc() -> dict[str, Any]:
    return load_json("elements.json")


@cache
def _valuesets_doc() -> dict[str, Any]:
    return load_json("valuesets.json")


def element_table() -> Mapping[str, list[list[Any]]]:
    """``types`` of elements.json: type or backbone path -> ``[name, isArray, type, vs]`` rows.

    Shared with other modules; treat the rows as read-only.
    """
    return MappingProxyType(_elements_doc()["types"])


@cache
def choice_names() -> dict[str, dict[str, str]]:
    """choices.json: type or backbone path -> {typed JSON name: its choice element}."""
    doc: dict[str, dict[str, str]] = load_json("choices.json")
    return doc


@cache
def required_elements() -> dict[str, tuple[tuple[str, frozenset[str]], ...]]:
    """required.json: type or backbone path -> its min >= 1 elements, each as (name, the
    JSON names that satisfy it: a choice's typed names)."""
    doc: dict[str, list[list[Any]]] = load_json("required.json")
    return {
        path: tuple((name, frozenset(names)) for name, names in rows) for path, rows in doc.items()
    }


@cache
def resource_types() -> frozenset[str]:
    """Names of all concrete R4 resource types (no abstract Resource/DomainResource)."""
    return frozenset(_elements_doc()["resourceTypes"])


@cache
def binding_tables() -> dict[str, Fields]:
    """Per-type ``json name -> Field`` tables, pruned to what can lead to a required binding.

    A type is *relevant* when it has a bound element, a nested resource, or a child of a
    relevant type. Only elements that are bound or of a relevant type get a table entry, so
    the walker never descends into subtrees that cannot hold a violation. (Extension.value[x]
    allows Quantity, Identifier, ... so in practice every complex type is relevant through
    its ``extension``; what gets pruned is the many unbound primitive elements.)
    """
    types: dict[str, list[list[Any]]] = _elements_doc()["types"]
    return _build_tables(_relevant_types(types), pruned=True)


@cache
def kind_tables() -> dict[str, Fields]:
    """Unpruned tables: every element of every type, for the JSON kind check."""
    return _build_tables(frozenset(_elements_doc()["types"]), pruned=False)


def _build_tables(relevant: frozenset[str], *, pruned: bool) -> dict[str, Fields]:
    types: dict[str, list[list[Any]]] = _elements_doc()["types"]
    vs_doc = _valuesets_doc()
    valuesets = {
        url: (frozenset(codes), frozenset(vs_doc["systems"][url]))
        for url, codes in vs_doc["codes"].items()
    }
    primitives: dict[str, str] = _elements_doc()["primitiveTypes"]
    choices = choice_names()

    # Create every (empty) table first so fields can point at the table of their type.
    tables: dict[str, Fields] = {name: {} for name in types}
    for type_name, rows in types.items():
        fields = tables[type_name]
        type_choices = choices.get(type_name, {})
        for name, is_array, type_code, vs_url in rows:
            kind = _json_kind(type_code, primitives)
            choice = type_choices.get(name, "")
            field = _make_field(is_array, kind, type_code, vs_url, relevant, tables, valuesets)
            if field is None and not pruned:
                field = Field(is_array, ACT_NONE, kind, type_code, None)
            if field is not None:
                fields[name] = field._replace(choice=choice) if choice else field
            # Extensions on a primitive travel in "_name" as an Element (or list of them).
            if type_code in primitives and "Element" in relevant:
                partner = Field(is_array, ACT_WALK, KIND_PARTNER, "Element", tables["Element"])
                fields["_" + name] = partner._replace(choice=choice)
    return tables


def _json_kind(type_code: str, primitives: dict[str, str]) -> int:
    """The ``_K_*`` kind of an element of type ``type_code``."""
    json_kind = primitives.get(type_code)
    if json_kind is None:
        return KIND_RESOURCE if type_code == "Resource" else KIND_OBJECT
    if json_kind == "boolean":
        return KIND_BOOLEAN
    if json_kind == "number":  # elements.json does not tell decimal from the integers
        return KIND_DECIMAL if type_code == "decimal" else KIND_INTEGER
    return KIND_STRING


def _make_field(
    is_array: bool,
    kind: int,
    type_code: str,
    vs_url: str | None,
    relevant: frozenset[str],
    tables: dict[str, Fields],
    valuesets: dict[str, tuple[frozenset[str], frozenset[str]]],
) -> Field | None:
    """The binding walker's view of one element, or None when nothing below it can be violated.

    Unbound primitives get None too; the kind check's unpruned tables add them afterwards.
    """
    children = tables.get(type_code) if type_code in relevant else None
    if vs_url is not None and vs_url in valuesets:
        codes, systems = valuesets[vs_url]
        action = _BOUND_ACTIONS.get(type_code)
        if action is not None:
            return Field(is_array, action, kind, type_code, children, vs_url, codes, systems)
    if type_code == "Resource":
        return Field(is_array, ACT_RESOURCE, kind, type_code, None)
    if children is not None:
        return Field(is_array, ACT_WALK, kind, type_code, children)
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


class Walker:
    """Depth-first traversal of a resource along a set of field tables.

    It follows only the keys its tables know, splits arrays into their items and descends
    into nested resources by their own ``resourceType``. What each item means is up to the
    subclass's :meth:`visit` (which recurses with :meth:`walk` / :meth:`resource`), and what
    a value given as an array where a single one belongs, or vice versa, means is up to
    :meth:`misshapen`.
    """

    __slots__ = ("tables",)

    def __init__(self, tables: dict[str, Fields]) -> None:
        self.tables = tables

    def run(self, resource: Any) -> None:
        """Walk a top-level resource; non-objects and unknown types are skipped."""
        if isinstance(resource, dict):
            self.resource(resource, None, 0)

    def resource(self, obj: dict[str, Any], path: str | None, depth: int) -> None:
        """Walk a (possibly nested) resource, whose path defaults to its resourceType."""
        resource_type = obj.get("resourceType")
        if isinstance(resource_type, str) and resource_type in resource_types():
            self.walk(obj, self.tables[resource_type], path or resource_type, depth)

    def walk(self, obj: dict[str, Any], fields: Fields, path: str, depth: int) -> None:
        if depth > MAX_DEPTH:
            return
        depth += 1
        visit = self.visit
        for key, value in obj.items():
            field = fields.get(key)
            if field is None:  # unknown key, or a subtree these tables leave out
                continue
            if field.is_array:
                if isinstance(value, list):
                    for index, item in enumerate(value):
                        visit(item, field, f"{path}.{key}[{index}]", depth)
                else:
                    self.misshapen(value, field, f"{path}.{key}")
            elif isinstance(value, list):
                self.misshapen(value, field, f"{path}.{key}")
            else:
                visit(value, field, f"{path}.{key}", depth)

    def visit(self, value: Any, field: Field, path: str, depth: int) -> None:
        """One value of ``field`` (an item, for arrays). Override."""
        raise NotImplementedError

    def misshapen(self, value: Any, field: Field, path: str) -> None:
        """``value`` is a single value where an array belongs, or the other way round."""


# (container, key or index, type code, path) of one element value
TypedElement = tuple[dict[str, Any] | list[Any], str | int, str, str]


class _TypedWalker(Walker):
    """Collects where the elements of some types sit."""

    __slots__ = ("out", "wanted")

    def __init__(self, wanted: frozenset[str]) -> None:
        super().__init__(kind_tables())
        self.wanted = wanted
        self.out: list[TypedElement] = []

    def walk(self, obj: dict[str, Any], fields: Fields, path: str, depth: int) -> None:
        for key, value in obj.items():
            field = fields.get(key)
            if field is None or field.type_code not in self.wanted:
                continue
            if isinstance(value, list):
                self.out.extend(
                    (value, i, field.type_code, f"{path}.{key}[{i}]") for i in range(len(value))
                )
            else:
                self.out.append((obj, key, field.type_code, f"{path}.{key}"))
        super().walk(obj, fields, path, depth)

    def visit(self, value: Any, field: Field, path: str, depth: int) -> None:
        if not isinstance(value, dict):
            return
        if field.kind == KIND_RESOURCE:
            self.resource(value, path, depth)
        elif field.children:
            self.walk(value, field.children, path, depth)


def typed_elements(resource: dict[str, Any], type_codes: frozenset[str]) -> list[TypedElement]:
    """Where in `resource` (nested resources included) elements of `type_codes` sit, as
    (container, key or index, type code, path), so that a caller can check or rewrite them."""
    walker = _TypedWalker(type_codes)
    walker.run(resource)
    return walker.out


def pointer_type(resource_type: str, pointer: str) -> str | None:
    """The type code of the element a JSON Pointer (a JSON Patch path: `/identifier/0/value`)
    names in a resource of `resource_type`; None where the tables cannot tell (an unknown
    element, or below a nested resource)."""
    fields = kind_tables().get(resource_type)
    type_code: str | None = resource_type
    for raw in pointer.split("/")[1:]:
        segment = raw.replace("~1", "/").replace("~0", "~")
        if segment == "-" or segment.isdigit():  # an item of the array just named
            continue
        field = fields.get(segment) if fields is not None else None
        if field is None:
            return None
        type_code, fields = field.type_code, field.children
    return type_code


def typed_elements_in(value: Any, type_code: str, type_codes: frozenset[str]) -> list[TypedElement]:
    """typed_elements for a value of type `type_code` (an object, or a list of them) that is
    not a resource of its own: what a JSON Patch adds at a typed path."""
    walker = _TypedWalker(type_codes)
    field = Field(
        isinstance(value, list), ACT_WALK, KIND_OBJECT, type_code, walker.tables.get(type_code)
    )
    if type_code == "Resource":
        field = field._replace(kind=KIND_RESOURCE)
    for item in value if isinstance(value, list) else [value]:
        walker.visit(item, field, "", 0)
    return walker.out
