"""Required terminology bindings and JSON kinds of the FHIR R4 core types.

The tables come from ``fhir_profiles/r4_core/`` (written by
``python -m fhir_profiles.generate_core_tables``): ``elements.json`` describes every core
type's child elements and ``valuesets.json`` holds the codes of each required value set that
can be expanded offline.

Both checks walk a resource as parsed from JSON (:func:`app.fhir.jsonio.loads`) with the
same traversal (:class:`_Walker`), each with its own field tables:

* :func:`check_required_bindings` reports every coded element whose value is outside its
  required value set. It only looks at terminology: a wrong JSON shape is skipped silently.
* :func:`check_json_kinds` reports every value whose JSON kind is wrong for its element
  (``"active": "yes"``, ``"given": "Jim"``, ``"multipleBirthInteger": 1.0`` ...). Unknown
  elements are left to the structural validator.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from functools import cache
from pathlib import Path
from types import MappingProxyType
from typing import Any, NamedTuple

import fhir_profiles
from app.fhir.jsonio import IntegerLiteral

# What the binding walker does with an element; resolved once so the hot loop only compares
# ints.
_NONE = -1  # nothing to check (only in the unpruned tables of the kind check)
_WALK = 0  # complex type or backbone element: recurse with the type's own field table
_CODE = 1  # code/string/uri with a required binding: check the string itself
_CODING = 2  # Coding with a required binding
_CONCEPT = 3  # CodeableConcept with a required binding
_RESOURCE = 4  # a nested resource (contained, Bundle.entry.resource, ...): use its resourceType

# The JSON kind an element's value must have. The primitive kinds come last so that
# ``kind >= _K_STRING`` means "a primitive".
_K_OBJECT = 0  # complex type or backbone element
_K_RESOURCE = 1  # a nested resource: an object with its own resourceType
_K_PARTNER = 2  # "_name": the Element (id, extensions) of primitive "name"; null in arrays
_K_STRING = 3
_K_BOOLEAN = 4
_K_INTEGER = 5  # integer, positiveInt, unsignedInt
_K_DECIMAL = 6

_EXPECTED = {
    _K_OBJECT: "a JSON object",
    _K_RESOURCE: "a JSON object (a resource)",
    _K_PARTNER: "a JSON object",
    _K_STRING: "a JSON string",
    _K_BOOLEAN: "a JSON boolean (true or false)",
    _K_INTEGER: "a JSON integer",
    _K_DECIMAL: "a JSON number",
}

# base64Binary: R4's regex plus the "/" base64 needs (later releases add it), \s as XML
# Schema's. The models decode leniently: "!!!" passed, read natively as empty content.
BASE64 = re.compile(r"(?:[ \t\r\n]*[0-9a-zA-Z+/=]{4}[ \t\r\n]*)+")
NOT_BASE64 = "not valid base64"

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
    kind: int
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
    return _build_tables(_relevant_types(types), pruned=True)


@cache
def _kind_tables() -> dict[str, _Fields]:
    """Unpruned tables: every element of every type, for the JSON kind check."""
    return _build_tables(frozenset(_elements_doc()["types"]), pruned=False)


def _build_tables(relevant: frozenset[str], *, pruned: bool) -> dict[str, _Fields]:
    types: dict[str, list[list[Any]]] = _elements_doc()["types"]
    vs_doc = _valuesets_doc()
    valuesets = {
        url: (frozenset(codes), frozenset(vs_doc["systems"][url]))
        for url, codes in vs_doc["codes"].items()
    }
    primitives: dict[str, str] = _elements_doc()["primitiveTypes"]

    # Create every (empty) table first so fields can point at the table of their type.
    tables: dict[str, _Fields] = {name: {} for name in types}
    for type_name, rows in types.items():
        fields = tables[type_name]
        for name, is_array, type_code, vs_url in rows:
            kind = _json_kind(type_code, primitives)
            field = _make_field(is_array, kind, type_code, vs_url, relevant, tables, valuesets)
            if field is None and not pruned:
                field = _Field(is_array, _NONE, kind, type_code, None)
            if field is not None:
                fields[name] = field
            # Extensions on a primitive travel in "_name" as an Element (or list of them).
            if type_code in primitives and "Element" in relevant:
                fields["_" + name] = _Field(
                    is_array, _WALK, _K_PARTNER, "Element", tables["Element"]
                )
    return tables


def _json_kind(type_code: str, primitives: dict[str, str]) -> int:
    """The ``_K_*`` kind of an element of type ``type_code``."""
    json_kind = primitives.get(type_code)
    if json_kind is None:
        return _K_RESOURCE if type_code == "Resource" else _K_OBJECT
    if json_kind == "boolean":
        return _K_BOOLEAN
    if json_kind == "number":  # elements.json does not tell decimal from the integers
        return _K_DECIMAL if type_code == "decimal" else _K_INTEGER
    return _K_STRING


def _make_field(
    is_array: bool,
    kind: int,
    type_code: str,
    vs_url: str | None,
    relevant: frozenset[str],
    tables: dict[str, _Fields],
    valuesets: dict[str, tuple[frozenset[str], frozenset[str]]],
) -> _Field | None:
    """The binding walker's view of one element, or None when nothing below it can be violated.

    Unbound primitives get None too; the kind check's unpruned tables add them afterwards.
    """
    children = tables.get(type_code) if type_code in relevant else None
    if vs_url is not None and vs_url in valuesets:
        codes, systems = valuesets[vs_url]
        action = _BOUND_ACTIONS.get(type_code)
        if action is not None:
            return _Field(is_array, action, kind, type_code, children, vs_url, codes, systems)
    if type_code == "Resource":
        return _Field(is_array, _RESOURCE, kind, type_code, None)
    if children is not None:
        return _Field(is_array, _WALK, kind, type_code, children)
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


class _Walker:
    """Depth-first traversal of a resource along a set of field tables.

    It follows only the keys its tables know, splits arrays into their items and descends
    into nested resources by their own ``resourceType``. What each item means is up to the
    subclass's :meth:`visit` (which recurses with :meth:`walk` / :meth:`resource`), and what
    a value given as an array where a single one belongs, or vice versa, means is up to
    :meth:`misshapen`.
    """

    __slots__ = ("tables",)

    def __init__(self, tables: dict[str, _Fields]) -> None:
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

    def walk(self, obj: dict[str, Any], fields: _Fields, path: str, depth: int) -> None:
        if depth > _MAX_DEPTH:
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

    def visit(self, value: Any, field: _Field, path: str, depth: int) -> None:
        """One value of ``field`` (an item, for arrays). Override."""
        raise NotImplementedError

    def misshapen(self, value: Any, field: _Field, path: str) -> None:
        """``value`` is a single value where an array belongs, or the other way round."""


class _BindingWalker(_Walker):
    __slots__ = ("out",)

    def __init__(self) -> None:
        super().__init__(_field_tables())
        self.out: list[BindingViolation] = []

    def visit(self, value: Any, field: _Field, path: str, depth: int) -> None:
        action = field.action
        if action == _CODE:
            if isinstance(value, str) and value not in field.codes:
                self.out.append(BindingViolation(path, value, field.value_set))
            return
        if not isinstance(value, dict):
            return
        if action == _RESOURCE:
            self.resource(value, path, depth)
            return
        if action == _CODING:
            self._check_coding(value, field, path)
        elif action == _CONCEPT:
            codings = value.get("coding")
            if isinstance(codings, list):
                for index, coding in enumerate(codings):
                    if isinstance(coding, dict):
                        self._check_coding(coding, field, f"{path}.coding[{index}]")
        # Bound or not, the datatype's own children (extensions ...) may hold more bindings.
        if field.children:
            self.walk(value, field.children, path, depth)

    def _check_coding(self, coding: dict[str, Any], field: _Field, path: str) -> None:
        """A Coding is only judged when it claims (or leaves open) the value set's system."""
        code = coding.get("code")
        if not isinstance(code, str):
            return
        system = coding.get("system")
        if system is not None and system not in field.systems:
            return
        if code not in field.codes:
            self.out.append(BindingViolation(f"{path}.code", code, field.value_set))


def check_required_bindings(resource: dict[str, Any]) -> list[BindingViolation]:
    """Every code in ``resource`` that is outside its element's required value set.

    Unknown or missing ``resourceType`` yields no violations (nothing to check against).
    """
    walker = _BindingWalker()
    walker.run(resource)
    return walker.out


UNKNOWN_ELEMENT = "unknown element"


class _KindWalker(_Walker):
    __slots__ = ("out", "strict", "strict_types")

    def __init__(self, strict_types: frozenset[str]) -> None:
        super().__init__(_kind_tables())
        self.out: list[tuple[str, str]] = []
        self.strict_types = strict_types
        self.strict = False  # inside a resource of strict_types: report unknown elements

    def resource(self, obj: dict[str, Any], path: str | None, depth: int) -> None:
        outer, self.strict = self.strict, obj.get("resourceType") in self.strict_types
        super().resource(obj, path, depth)
        self.strict = outer

    def walk(self, obj: dict[str, Any], fields: _Fields, path: str, depth: int) -> None:
        if self.strict:
            self.out.extend(
                (f"{path}.{key}", UNKNOWN_ELEMENT)
                for key in obj
                if key not in fields and key != "resourceType"
            )
        super().walk(obj, fields, path, depth)

    def visit(self, value: Any, field: _Field, path: str, depth: int) -> None:
        kind = field.kind
        if kind == _K_STRING:
            if isinstance(value, str):
                if field.type_code == "base64Binary" and not BASE64.fullmatch(value):
                    self.out.append((path, NOT_BASE64))
                return
        elif kind == _K_OBJECT:
            if isinstance(value, dict):
                if field.children:
                    self.walk(value, field.children, path, depth)
                return
        elif kind == _K_BOOLEAN:
            if value is True or value is False:
                return
        elif kind == _K_INTEGER:
            # not bool, not a decimal (even an integral 1.0); -0 and huge literals are integers
            if type(value) is int or isinstance(value, IntegerLiteral):
                return
        elif kind == _K_DECIMAL:
            if isinstance(value, int | Decimal | float) and not isinstance(value, bool):
                return
        elif kind == _K_PARTNER:
            if isinstance(value, dict):
                if field.children:
                    self.walk(value, field.children, path, depth)
                return
        elif kind == _K_RESOURCE:
            if isinstance(value, dict):
                if value.get("resourceType") not in resource_types():
                    self.out.append((f"{path}.resourceType", "must be an R4 resource type"))
                self.resource(value, path, depth)
                return
        # Primitive arrays (and their "_name" partners) may hold null placeholders that keep
        # the two arrays aligned.
        if value is None and field.is_array and kind >= _K_PARTNER:
            return
        self.out.append((path, f"must be {_EXPECTED[kind]}, not {_describe(value)}"))

    def misshapen(self, value: Any, field: _Field, path: str) -> None:
        if field.is_array:
            self.out.append((path, "must be an array"))
        else:
            self.out.append((path, "must be a single value, not an array"))


def _describe(value: Any) -> str:
    """The JSON kind of a parsed value, for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"a boolean ({'true' if value else 'false'})"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, int | IntegerLiteral):
        return "an integer"
    if isinstance(value, Decimal | float):
        literal = getattr(value, "literal", None) or str(value)
        return f"a decimal number ({literal})"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "an array"
    return f"a {type(value).__name__}"


def check_json_kinds(
    resource: dict[str, Any], strict_types: frozenset[str] = frozenset()
) -> list[tuple[str, str]]:
    """``(path, message)`` for every value whose JSON kind is wrong for its element.

    Covers primitives of the wrong kind (a boolean given as ``"yes"`` or ``1``, an integer as
    ``"3"``, ``true`` or ``1.0``, a string as a number, base64Binary that is not ...), arrays
    where a single value belongs and the reverse, and objects where a primitive belongs and
    the reverse. Null is accepted only as an item of a primitive array or of its ``_name``
    partner. A nested
    resource without an R4 ``resourceType`` is reported; the top-level ``resourceType`` (the
    caller's check) is not, nor are unknown elements, except in resources of
    ``strict_types`` (those no other check looks at).
    """
    walker = _KindWalker(strict_types)
    walker.run(resource)
    return walker.out


# (container, key or index, type code, path) of one element value
TypedElement = tuple[dict[str, Any] | list[Any], str | int, str, str]


class _TypedWalker(_Walker):
    """Collects where the elements of some types sit."""

    __slots__ = ("out", "wanted")

    def __init__(self, wanted: frozenset[str]) -> None:
        super().__init__(_kind_tables())
        self.wanted = wanted
        self.out: list[TypedElement] = []

    def walk(self, obj: dict[str, Any], fields: _Fields, path: str, depth: int) -> None:
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

    def visit(self, value: Any, field: _Field, path: str, depth: int) -> None:
        if not isinstance(value, dict):
            return
        if field.kind == _K_RESOURCE:
            self.resource(value, path, depth)
        elif field.children:
            self.walk(value, field.children, path, depth)


def typed_elements(resource: dict[str, Any], type_codes: frozenset[str]) -> list[TypedElement]:
    """Where in `resource` (nested resources included) elements of `type_codes` sit, as
    (container, key or index, type code, path), so that a caller can check or rewrite them."""
    walker = _TypedWalker(type_codes)
    walker.run(resource)
    return walker.out
