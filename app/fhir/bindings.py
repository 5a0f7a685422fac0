"""Required terminology bindings and JSON kinds of the FHIR R4 core types.

The tables come from ``fhir_profiles/r4_core/`` by way of :mod:`app.fhir.element_tables`
(``elements.json``: every core type's child elements; ``valuesets.json``: the codes of each
required value set that can be expanded offline).

Both checks walk a resource as parsed from JSON (:func:`app.fhir.jsonio.loads`) with the
same traversal (:class:`app.fhir.element_tables.Walker`), each with its own field tables:

* :func:`check_required_bindings` reports every coded element whose value is outside its
  required value set. It only looks at terminology: a wrong JSON shape is skipped silently.
* :func:`check_json_kinds` reports every value whose JSON kind is wrong for its element
  (``"active": "yes"``, ``"given": "Jim"``, ``"multipleBirthInteger": 1.0`` ...). Unknown
  elements are left to the structural validator.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from app.fhir.element_tables import (
    ACT_CODE,
    ACT_CODING,
    ACT_CONCEPT,
    ACT_RESOURCE,
    KIND_BOOLEAN,
    KIND_DECIMAL,
    KIND_INTEGER,
    KIND_OBJECT,
    KIND_PARTNER,
    KIND_RESOURCE,
    KIND_STRING,
    Field,
    Fields,
    TypedElement,
    Walker,
    binding_tables,
    element_table,
    kind_tables,
    resource_types,
    typed_elements,
)
from app.fhir.jsonio import IntegerLiteral

# Shared with other modules through this one.
__all__ = [
    "BASE64",
    "NOT_BASE64",
    "SECOND_CHOICE",
    "UNKNOWN_ELEMENT",
    "BindingViolation",
    "TypedElement",
    "Target",
    "check_json_kinds",
    "check_json_kinds_and_find",
    "check_required_bindings",
    "element_table",
    "resource_types",
    "typed_elements",
]


@dataclass(frozen=True)
class BindingViolation:
    """A code outside the required value set of the element at ``path``."""

    path: str  # FHIRPath-style, e.g. "Patient.name[0].use"
    code: str
    value_set: str


_EXPECTED = {
    KIND_OBJECT: "a JSON object",
    KIND_RESOURCE: "a JSON object (a resource)",
    KIND_PARTNER: "a JSON object",
    KIND_STRING: "a JSON string",
    KIND_BOOLEAN: "a JSON boolean (true or false)",
    KIND_INTEGER: "a JSON integer",
    KIND_DECIMAL: "a JSON number",
}

# base64Binary: R4's regex plus the "/" base64 needs (later releases add it), \s as XML
# Schema's. The models decode leniently: "!!!" passed, read natively as empty content.
BASE64 = re.compile(r"(?:[ \t\r\n]*[0-9a-zA-Z+/=]{4}[ \t\r\n]*)+")
NOT_BASE64 = "not valid base64"


class _BindingWalker(Walker):
    __slots__ = ("out",)

    def __init__(self) -> None:
        super().__init__(binding_tables())
        self.out: list[BindingViolation] = []

    def visit(self, value: Any, field: Field, path: str, depth: int) -> None:
        action = field.action
        if action == ACT_CODE:
            if isinstance(value, str) and value not in field.codes:
                self.out.append(BindingViolation(path, value, field.value_set))
            return
        if not isinstance(value, dict):
            return
        if action == ACT_RESOURCE:
            self.resource(value, path, depth)
            return
        if action == ACT_CODING:
            self._check_coding(value, field, path)
        elif action == ACT_CONCEPT:
            codings = value.get("coding")
            if isinstance(codings, list):
                for index, coding in enumerate(codings):
                    if isinstance(coding, dict):
                        self._check_coding(coding, field, f"{path}.coding[{index}]")
        # Bound or not, the datatype's own children (extensions ...) may hold more bindings.
        if field.children:
            self.walk(value, field.children, path, depth)

    def _check_coding(self, coding: dict[str, Any], field: Field, path: str) -> None:
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
# A second typed name of one choice element (both valueString and valueQuantity).
SECOND_CHOICE = "only one type of a choice element may be given:"


# (object, its type or backbone path, its path, the resource it is in) of an element whose
# type has invariants, collected by the kind walk for app.fhir.constraints
Target = tuple[dict[str, Any], str, str, dict[str, Any]]


class _KindWalker(Walker):
    __slots__ = ("constrained", "out", "root", "strict", "strict_types", "targets")

    def __init__(self, strict_types: frozenset[str], constrained: frozenset[str]) -> None:
        super().__init__(kind_tables())
        self.out: list[tuple[str, str]] = []
        self.strict_types = strict_types
        self.strict = False  # inside a resource of strict_types: report unknown elements
        self.constrained = constrained
        self.targets: list[Target] = []
        self.root: dict[str, Any] = {}

    def resource(self, obj: dict[str, Any], path: str | None, depth: int) -> None:
        rtype = obj.get("resourceType")
        outer, self.strict = self.strict, rtype in self.strict_types
        outer_root, self.root = self.root, obj
        if rtype in self.constrained:
            self.targets.append((obj, rtype, path or rtype, obj))
        super().resource(obj, path, depth)
        self.strict, self.root = outer, outer_root

    def walk(self, obj: dict[str, Any], fields: Fields, path: str, depth: int) -> None:
        if self.strict:
            chosen: dict[str, str] | None = None  # choice element -> the typed name given
            for key in obj:
                field = fields.get(key)
                if field is None:
                    if key != "resourceType":
                        self.out.append((f"{path}.{key}", UNKNOWN_ELEMENT))
                elif field.choice:
                    chosen = self._choose(chosen, field.choice, key, path)
        super().walk(obj, fields, path, depth)

    def _choose(
        self, chosen: dict[str, str] | None, choice: str, key: str, path: str
    ) -> dict[str, str]:
        """R4 json.html: a choice element appears under one of its names only; "_valueX" is
        the partner of "valueX", not another value."""
        name = key.removeprefix("_")
        if chosen is None:
            return {choice: name}
        first = chosen.setdefault(choice, name)
        if first != name:
            message = f"{SECOND_CHOICE} {choice}[x]: {first} is given already"
            self.out.append((f"{path}.{key}", message))
        return chosen

    def visit(self, value: Any, field: Field, path: str, depth: int) -> None:
        kind = field.kind
        if kind == KIND_STRING:
            if isinstance(value, str):
                if field.type_code == "base64Binary" and not BASE64.fullmatch(value):
                    self.out.append((path, NOT_BASE64))
                return
        elif kind == KIND_OBJECT:
            if isinstance(value, dict):
                if field.type_code in self.constrained:
                    self.targets.append((value, field.type_code, path, self.root))
                if field.children:
                    self.walk(value, field.children, path, depth)
                return
        elif kind == KIND_BOOLEAN:
            if value is True or value is False:
                return
        elif kind == KIND_INTEGER:
            # not bool, not a decimal (even an integral 1.0); -0 and huge literals are integers
            if type(value) is int or isinstance(value, IntegerLiteral):
                return
        elif kind == KIND_DECIMAL:
            if isinstance(value, int | Decimal | float) and not isinstance(value, bool):
                return
        elif kind == KIND_PARTNER:
            if isinstance(value, dict):
                if field.children:
                    self.walk(value, field.children, path, depth)
                return
        elif kind == KIND_RESOURCE:
            if isinstance(value, dict):
                if value.get("resourceType") not in resource_types():
                    self.out.append((f"{path}.resourceType", "must be an R4 resource type"))
                self.resource(value, path, depth)
                return
        # Primitive arrays (and their "_name" partners) may hold null placeholders that keep
        # the two arrays aligned.
        if value is None and field.is_array and kind >= KIND_PARTNER:
            return
        self.out.append((path, f"must be {_EXPECTED[kind]}, not {_describe(value)}"))

    def misshapen(self, value: Any, field: Field, path: str) -> None:
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
    return check_json_kinds_and_find(resource, strict_types, frozenset())[0]


def check_json_kinds_and_find(
    resource: dict[str, Any], strict_types: frozenset[str], constrained: frozenset[str]
) -> tuple[list[tuple[str, str]], list[Target]]:
    """check_json_kinds, and on the same walk, where the elements and resources of the types
    in `constrained` are (the invariants' targets)."""
    walker = _KindWalker(strict_types, constrained)
    walker.run(resource)
    return walker.out, walker.targets
