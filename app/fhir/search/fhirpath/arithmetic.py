"""``+`` of the native FHIRPath compiler (N1 "Math"): numbers (the invariants add counts) and
strings; ``&`` is functions.compile_concat."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from app.fhir.search.fhirpath.compiled import Compiled, Items, NodeCompiler, Scope, Step, Types
from app.fhir.search.fhirpath.operators import EMPTY, INTEGER, is_number
from app.fhir.search.fhirpath.parser import Plus, Unsupported

DECIMAL: Types = ("System.Decimal",)
STRING: Types = ("System.String",)
# The FHIR primitives that are System.Integer, System.Decimal or System.String in FHIRPath
INTEGER_TYPES = frozenset({"System.Integer", "integer", "positiveInt", "unsignedInt"})
NUMBER_TYPES = INTEGER_TYPES | {"System.Decimal", "decimal"}
STRING_TYPES = frozenset(
    {"System.String", "string", "code", "id", "markdown", "uri", "url", "canonical", "oid"}
    | {"uuid"}
)


def compile_plus(node: Plus, scope: Scope, compile_node: NodeCompiler) -> Compiled:
    """``+`` (N1 "Math"): of numbers (the invariants add counts; an Integer and a Decimal
    add as Decimals, keeping the precision: 1.50 + 1 is 2.50), and of strings
    (concatenation; unlike ``&``, an empty operand makes the result empty). Empty when an
    operand is empty or has several items (an error in N1, unknown here). Dates and
    Quantities are refused (fhirpathpy's, in search)."""
    lhs, rhs = compile_node(node.left, scope), compile_node(node.right, scope)
    if EMPTY in (lhs.types, rhs.types):
        return Compiled(lambda items, root: [], EMPTY)
    if lhs.types == INTEGER and rhs.types == INTEGER:  # counts: the invariants' hot case
        lfn, rfn = lhs.fn, rhs.fn

        def plus(items: Items, root: Any) -> Items:
            a, b = lfn(items, root), rfn(items, root)
            return [a[0] + b[0]] if len(a) == len(b) == 1 else []

        return Compiled(plus, INTEGER)
    kinds = {_plus_kind(lhs.types), _plus_kind(rhs.types)}
    if kinds == {"number"}:
        both_integers = set(lhs.types or ()) | set(rhs.types or ()) <= INTEGER_TYPES
        return Compiled(_add(lhs.fn, rhs.fn, is_number), INTEGER if both_integers else DECIMAL)
    if kinds == {"string"}:
        return Compiled(_add(lhs.fn, rhs.fn, _is_string), STRING)
    raise Unsupported("+ of other than numbers or strings")


def _plus_kind(types: Types) -> str | None:
    if types and set(types) <= NUMBER_TYPES:
        return "number"
    if types and set(types) <= STRING_TYPES:
        return "string"
    return None


def _is_string(value: Any) -> bool:
    return isinstance(value, str)


def _add(lfn: Step, rfn: Step, kind: Callable[[Any], bool]) -> Step:
    def add(items: Items, root: Any) -> Items:
        a, b = lfn(items, root), rfn(items, root)
        if len(a) != 1 or len(b) != 1 or not (kind(a[0]) and kind(b[0])):
            return []
        return [a[0] + b[0]]

    return add
