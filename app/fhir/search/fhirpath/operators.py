"""The boolean side of the native compiler: ``and``, ``or``, ``xor``, ``implies``, comparisons,
and the functions that answer with a boolean or a count (``not()``, ``exists(criteria)``,
``all()``, ``count()``, ``hasValue()``, ``matches()``, ``startsWith()``, ``endsWith()``,
``contains()`` of a literal, ``isDistinct()``, ``is(T)``), with ``select()``, ``toInteger()``
and ``trace()``. Search expressions need few of them; the invariants of the R4 definitions
(app.fhir.constraints) need the rest.

FHIRPath's three-valued logic: ``[]`` is "unknown". Comparing dates of different precision
that agree as far as both go is unknown too (FHIRPath "Comparison"); so is an ordering of
values the compiler cannot order (an error in FHIRPath). An invariant holds only when its
answer is true (app.fhir.constraints), so an unknown one refuses.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from functools import cache
from typing import Any

from app.fhir import ucum
from app.fhir.jsonio import IntegerLiteral
from app.fhir.search.fhirpath.compiled import Compiled, Items, NodeCompiler, Scope, Step, Types
from app.fhir.search.fhirpath.model import is_a, is_primitive, is_resource_type
from app.fhir.search.fhirpath.parser import (
    And,
    Call,
    Compare,
    Literal,
    Logic,
    Union,
    Unsupported,
)

INTEGER: Types = ("System.Integer",)
EMPTY: Types = ()  # the static types of {}: no items at all
QUANTITIES = frozenset({("Quantity",), ("SimpleQuantity",)})
# Every type whose values are Quantities: equal only in comparable units (_quantities_equal)
QUANTITY_KINDS = frozenset(
    {"Quantity", "SimpleQuantity", "Age", "Count", "Distance", "Duration", "MoneyQuantity"}
)
BOOLEAN_TYPES = frozenset({"boolean", "System.Boolean"})


def compile_and(node: And, scope: Scope, compile_node: NodeCompiler) -> Compiled:
    lfn, rfn = _boolean_operands(node.left, node.right, scope, compile_node)

    def and_(items: Items, root: Any) -> Items:
        a = lfn(items, root)
        b = rfn(items, root)
        if (a and a[0] is False) or (b and b[0] is False):
            return [False]
        return [True] if a and b else []  # three-valued: empty means unknown

    return Compiled(and_, None, boolean=True)


def compile_logic(node: Logic, scope: Scope, compile_node: NodeCompiler) -> Compiled:
    lfn, rfn = _boolean_operands(node.left, node.right, scope, compile_node)
    if node.op == "or":

        def or_(items: Items, root: Any) -> Items:
            a = lfn(items, root)
            if a and a[0] is True:
                return a
            b = rfn(items, root)
            if b and b[0] is True:
                return b
            return [False] if a and b else []

        return Compiled(or_, None, boolean=True)
    if node.op == "xor":

        def xor(items: Items, root: Any) -> Items:
            a = lfn(items, root)
            b = rfn(items, root)
            return [a[0] is not b[0]] if a and b else []

        return Compiled(xor, None, boolean=True)

    def implies(items: Items, root: Any) -> Items:
        a = lfn(items, root)
        if a and a[0] is False:
            return [True]
        b = rfn(items, root)
        if b and b[0] is True:
            return b
        return b if a else []  # true implies b is b; unknown implies false is unknown

    return Compiled(implies, None, boolean=True)


def _boolean_operands(
    left: Any, right: Any, scope: Scope, compile_node: NodeCompiler
) -> tuple[Step, Step]:
    lhs, rhs = compile_node(left, scope), compile_node(right, scope)
    if not (is_boolean(lhs) and is_boolean(rhs)):
        raise Unsupported("logic of non-boolean operands")
    return lhs.fn, rhs.fn


def is_boolean(compiled: Compiled) -> bool:
    """A boolean result, a path to boolean elements (``abstract and ...``), or ``{}``
    (an empty operand is unknown: ``true and {}`` is empty, ``false and {}`` false)."""
    if compiled.boolean or compiled.types == EMPTY:
        return True
    return bool(compiled.types) and set(compiled.types or ()) <= BOOLEAN_TYPES


def compile_compare(node: Compare, scope: Scope, compile_node: NodeCompiler) -> Compiled:
    ordering = node.op not in ("=", "!=", "in")
    # Quantities are compared with Quantities (_quantity_values); = against a literal, or `in`
    # a list of them, is left to fhirpathpy as before (a literal is never a Quantity here)
    quantities = ordering or not (node.op == "in" or isinstance(node.right, Literal))
    equality = node.op in ("=", "!=")
    left = _comparable(node.left, scope, compile_node, quantities, equality)
    if node.op == "in":
        return _compile_in(left, node.right)
    if isinstance(node.right, Literal):
        literal = node.right.value
        lfn = left.fn
        if ordering:
            op = node.op

            def order_literal(items: Items, root: Any) -> Items:
                values = lfn(items, root)
                return _order(op, values[0], literal) if len(values) == 1 else []

            return Compiled(order_literal, None, boolean=True)
        negate = node.op == "!="

        def compare(items: Items, root: Any) -> Items:
            values = lfn(items, root)
            if not values:
                return []
            equal = len(values) == 1 and values[0] == literal
            return [equal is not negate]

        return Compiled(compare, None, boolean=True)
    right = _comparable(node.right, scope, compile_node, quantities, equality)
    lfn, rfn = left.fn, right.fn
    op = node.op
    if not ordering and (left.types in QUANTITIES or right.types in QUANTITIES):
        if not (left.types in QUANTITIES and right.types in QUANTITIES):
            raise Unsupported("equality of a Quantity and another type")  # fhirpathpy's
        return Compiled(_quantities_equal(lfn, rfn, op == "="), None, boolean=True)

    def compare_both(items: Items, root: Any) -> Items:
        a, b = lfn(items, root), rfn(items, root)
        if not a or not b:
            return []
        if ordering:
            return _order(op, a[0], b[0]) if len(a) == len(b) == 1 else []
        return [(a == b) is (op == "=")]

    return Compiled(compare_both, None, boolean=True)


def _compile_in(left: Compiled, right: Any) -> Compiled:
    """``x in ('a' | 'b')``: membership in a list of literals."""
    options = right.branches if isinstance(right, Union) else (right,)
    if not all(isinstance(o, Literal) for o in options):
        raise Unsupported("in other than a list of literals")
    values = [o.value for o in options]
    lfn = left.fn

    def is_in(items: Items, root: Any) -> Items:
        found = lfn(items, root)
        return [found[0] in values] if len(found) == 1 else []

    return Compiled(is_in, None, boolean=True)


def _comparable(
    node: Any,
    scope: Scope,
    compile_node: NodeCompiler,
    quantities: bool = False,
    equality: bool = False,
) -> Compiled:
    compiled = compile_node(node, scope)
    if compiled.boolean:
        return compiled
    if quantities and compiled.types in QUANTITIES:
        return compiled  # compared in comparable units (_quantity_values; rng-2: low <= high)
    if compiled.types is None:
        raise Unsupported("comparison of values of unknown types")
    if all(is_primitive(t) for t in compiled.types):
        return compiled
    if equality and not QUANTITY_KINDS.intersection(compiled.types):
        # N1 "Equality": complex values are equal when all their children are, recursively:
        # the JSON objects' == (decimals by value: 1.0 = 1.00, as N1 has it for decimals)
        return compiled
    # orderings of complex values are errors in N1; Quantities are compared by their units
    raise Unsupported("comparison of a non-primitive")


_DATE_TIME = re.compile(
    r"\d{4}(-\d{2}(-\d{2}(T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:\d{2})?)?)?)?"
)


def _order(op: str, a: Any, b: Any) -> Items:
    """``a op b`` for two singletons, [] when unknown (dates of different precision that
    agree, date-times without a timezone, values of kinds that do not order)."""
    if isinstance(a, dict) and isinstance(b, dict):
        a, b = _quantity_values(a, b)
    if isinstance(a, str) and isinstance(b, str):
        if _DATE_TIME.fullmatch(a) and _DATE_TIME.fullmatch(b):
            keys = _date_keys(a, b)
            if keys is None:
                return []
            a, b = keys
    elif not (is_number(a) and is_number(b)):
        return []
    if op == "<":
        return [a < b]
    if op == ">":
        return [a > b]
    if op == "<=":
        return [a <= b]
    return [a >= b]


def _quantities_equal(lfn: Step, rfn: Step, equal: bool) -> Step:
    """``=`` / ``!=`` of two Quantities (FHIRPath "Equality": comparable units are converted;
    values of incomparable units, or of a Quantity and anything else, are unknown)."""

    def quantities_equal(items: Items, root: Any) -> Items:
        a, b = lfn(items, root), rfn(items, root)
        if not a or not b:
            return []
        if len(a) != 1 or len(b) != 1 or not isinstance(a[0], dict):
            return []
        first, second = _quantity_values(a[0], b[0]) if isinstance(b[0], dict) else (None, None)
        if not (is_number(first) and is_number(second)):
            return []
        return [(first == second) is equal]

    return quantities_equal


def _quantity_values(a: dict[str, Any], b: dict[str, Any]) -> tuple[Any, Any]:
    """The values of two Quantities in one unit: as they are when they have the same system
    and code (or the same unit without codes); in UCUM base units when both are UCUM codes
    that convert to the same ones (FHIRPath "Comparison": `1 'kg' > 500 'g'`, rng-2 with a low
    in g and a high in kg); None when the engine cannot tell (incomparable units, special
    units such as Cel, other systems' different codes)."""
    if (a.get("system"), a.get("code")) == (b.get("system"), b.get("code")):
        if a.get("code") is None and a.get("unit") != b.get("unit"):
            return None, None
        return a.get("value"), b.get("value")
    first, second = _in_base_units(a), _in_base_units(b)
    if first is None or second is None or first[1] != second[1]:
        return None, None
    return first[0], second[0]


def _in_base_units(quantity: dict[str, Any]) -> tuple[Decimal, str] | None:
    value, code = quantity.get("value"), quantity.get("code")
    if quantity.get("system") != ucum.UCUM_SYSTEM or not isinstance(code, str):
        return None
    if not is_number(value):
        return None
    return ucum.to_canonical(Decimal(str(value)), code)


def is_number(value: Any) -> bool:
    return isinstance(value, int | Decimal | float) and not isinstance(value, bool)


def _date_keys(a: str, b: str) -> tuple[Any, Any] | None:
    if "T" in a and "T" in b and len(a) > 16 and len(b) > 16:
        try:
            first, second = datetime.fromisoformat(a), datetime.fromisoformat(b)
        except ValueError:
            return None
        if (first.tzinfo is None) != (second.tzinfo is None):
            return None
        return first, second
    # Compare as far as both go (dates, or a date against a date-time): decided only where
    # the shared precision differs.
    shared = min(len(a.split("T")[0]), len(b.split("T")[0]))
    if a[:shared] != b[:shared]:
        return a[:shared], b[:shared]
    if a == b:
        return a, b
    return None


# --- functions ------------------------------------------------------------------------------


def compile_function(
    call: Call, types: Types, scope: Scope, compile_node: NodeCompiler
) -> tuple[Step, Types, bool] | None:
    """A boolean or counting function, or None when it is not one of these."""
    name, args = call.name, call.args
    if name == "count" and not args:
        return (lambda items, root: [len(items)]), INTEGER, False
    if name == "not" and not args:
        if not types or not set(types) <= BOOLEAN_TYPES:
            raise Unsupported("not() of a non-boolean")
        return negate, None, True
    if name == "hasValue" and not args:
        if types is None:
            raise Unsupported("hasValue() of an untyped collection")
        primitive = all(is_primitive(t) for t in types)
        return (lambda items, root: [primitive and len(items) == 1]), None, True
    if name == "trace" and len(args) == 1:  # logging only: the input, unchanged
        return (lambda items, root: items), types, False
    if name == "select" and len(args) == 1:
        inner = compile_node(args[0], scope.inner(types))
        return _select(inner.fn), None if inner.boolean else inner.types, False
    if name == "toInteger" and not args:
        return _to_integer, INTEGER, False
    if name == "convertsToInteger" and not args:
        return _converts_to_integer, None, True
    if name == "is" and len(args) == 1 and is_resource_type(args[0]):
        if types is None or not all(is_resource_type(t) for t in types):
            raise Unsupported("is() of other than resources")
        return _is_resource(args[0]), None, True
    if name == "isDistinct" and not args:
        return _is_distinct, None, True
    if name in ("exists", "all") and len(args) == 1:
        return _quantifier(name, _predicate(args[0], types, scope, compile_node)), None, True
    if name in STRING_TESTS and len(args) == 1 and isinstance(args[0], Literal):
        # a computed argument is evaluated on $this: parser.OnThis, functions.compile_on_this
        if not isinstance(args[0].value, str):
            raise Unsupported("string test of a non-string")
        return _string_test(STRING_TESTS[name], args[0].value), None, True
    return None


def _select(projection: Step) -> Step:
    def select(items: Items, root: Any) -> Items:
        out: Items = []
        for item in items:
            out += projection([item], root)
        return out

    return select


# N1 toInteger(): "(\+|-)?\d+" meaning ASCII digits (Python's \d takes any Unicode digit,
# and int() reads "١٢" as 12). Leading zeros are split off so that the length check below
# sees the significant digits only ("000…0" is 0).
_INTEGER = re.compile(r"([+-]?)0*([0-9]+)", re.ASCII)
# N1 Integer (and FHIR integer) is 32 bits: -2^31 .. 2^31-1, at most 10 significant digits
INTEGER_MIN, INTEGER_MAX = -(2**31), 2**31 - 1


def _to_integer(items: Items, root: Any) -> Items:
    """toInteger() of one integer, boolean or integer-like string; [] otherwise, and for a
    value beyond the 32-bit Integer range (N1 toInteger: "not convertible" is empty). The
    digits are counted before int() is asked: Python refuses strings of more than 4,300."""
    if len(items) != 1:
        return []
    value = items[0]
    if isinstance(value, bool):
        return [int(value)]
    if isinstance(value, IntegerLiteral):  # a JSON integer's "-0" or a literal beyond 64 bits
        value = value.literal
    if isinstance(value, int):
        number = value
    elif isinstance(value, str) and (match := _INTEGER.fullmatch(value)):
        sign, digits = match.groups()
        if len(digits) > 10:
            return []
        number = int(sign + digits)
    else:
        return []
    return [number] if INTEGER_MIN <= number <= INTEGER_MAX else []


def _converts_to_integer(items: Items, root: Any) -> Items:
    """convertsToInteger(): whether toInteger() gives a value; empty for no item or several
    (several is an error in N1, unknown here, as for toInteger())."""
    return [bool(_to_integer(items, root))] if len(items) == 1 else []


def _is_resource(wanted: str) -> Step:
    """is(T) of a resource: its resourceType is T or a kind of T (the `%resource is T` of
    bdl-11, bdl-12)."""

    def is_resource(items: Items, root: Any) -> Items:
        if len(items) != 1 or not isinstance(items[0], dict):
            return []
        rtype = items[0].get("resourceType")
        return [isinstance(rtype, str) and is_a(rtype, wanted)]

    return is_resource


def negate(items: Items, root: Any) -> Items:
    """not(): of a single boolean; unknown stays unknown."""
    if len(items) == 1 and isinstance(items[0], bool):
        return [not items[0]]
    return []


def _is_distinct(items: Items, root: Any) -> Items:
    try:  # primitives hash as they compare (1 == 1.0 == True): linear, for csd-1's thousands
        return [len(set(items)) == len(items)]
    except TypeError:  # dicts: compared pairwise
        pass
    unique: Items = []
    for item in items:
        if item not in unique:
            unique.append(item)
    return [len(unique) == len(items)]


def _predicate(criterion: Any, types: Types, scope: Scope, compile_node: NodeCompiler) -> Step:
    inner = compile_node(criterion, scope.inner(types))
    if not is_boolean(inner):
        raise Unsupported("criteria that are not boolean")
    return inner.fn


def _quantifier(name: str, test: Step) -> Step:
    if name == "exists":

        def exists(items: Items, root: Any) -> Items:
            return [any(test([item], root) == [True] for item in items)]

        return exists

    def all_(items: Items, root: Any) -> Items:
        return [all(test([item], root) == [True] for item in items)]

    return all_


@cache
def _search(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern, re.DOTALL)


STRING_TESTS: dict[str, Callable[[str, str], bool]] = {
    # fhirpathpy's matches() finds the pattern anywhere (re.search), as FHIRPath N1 reads
    "matches": lambda value, arg: _search(arg).search(value) is not None,
    "startsWith": lambda value, arg: value.startswith(arg),
    "endsWith": lambda value, arg: value.endswith(arg),
    "contains": lambda value, arg: arg in value,
}


def _string_test(test: Callable[[str, str], bool], arg: str) -> Step:
    def string_test(items: Items, root: Any) -> Items:
        if len(items) != 1 or not isinstance(items[0], str):
            return []
        return [test(items[0], arg)]

    return string_test
