"""The rest of FHIRPath N1 the R4 invariants use: tree navigation (``children()``,
``descendants()``), ``tail()``, the collection functions (``combine()``, ``union()``,
``intersect()``, ``exclude()``, ``subsetOf()``, ``supersetOf()``) and string tests of a
computed argument, whose arguments are evaluated on ``$this`` (parser.OnThis), ``iif()``,
``toString()``, ``replaceMatches()``, the ``&`` and ``contains`` operators, ``is`` of any
type, and the ``%context`` variable. Search expressions use none of them, so what the
invariants need decides the shapes compiled here.

Empty propagation as in N1: a function of an empty input is empty (``descendants()``,
``tail()``, ``toString()``), except ``&``, where an empty operand counts as ``''``. A
singleton function given several items is an error in N1; here it is empty (unknown), which
fails an invariant as the reference validator's error does (only true passes).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from decimal import Decimal
from functools import cache
from typing import Any

from app.fhir.search.fhirpath.compiled import Compiled, Items, NodeCompiler, Scope, Step, Types
from app.fhir.search.fhirpath.evaluation import bundle_entry
from app.fhir.search.fhirpath.model import reference_type
from app.fhir.search.fhirpath.operators import STRING_TESTS, is_boolean
from app.fhir.search.fhirpath.parser import (
    Call,
    Compare,
    Concat,
    IsType,
    Literal,
    OnThis,
    Path,
    Union,
    Unsupported,
)

STRING: Types = ("System.String",)

# --- operators ----------------------------------------------------------------------------


def compile_concat(node: Concat, scope: Scope, compile_node: NodeCompiler) -> Compiled:
    """``a & b``: string concatenation; an empty operand is ``''`` (N1 "String Concatenation")."""
    lfn, rfn = compile_node(node.left, scope).fn, compile_node(node.right, scope).fn

    def concat(items: Items, root: Any) -> Items:
        a, b = _one_string(lfn(items, root)), _one_string(rfn(items, root))
        return [a + b] if a is not None and b is not None else []

    return Compiled(concat, STRING)


def _one_string(values: Items) -> str | None:
    if not values:
        return ""
    if len(values) == 1 and isinstance(values[0], str):
        return values[0]
    return None  # several items or a non-string: an error in N1, unknown here


def compile_contains(node: Compare, scope: Scope, compile_node: NodeCompiler) -> Compiled:
    """``collection contains item`` (N1 "Collections"): empty if the item is empty, false
    if the collection is."""
    lfn, rfn = compile_node(node.left, scope).fn, compile_node(node.right, scope).fn

    def contains(items: Items, root: Any) -> Items:
        wanted = rfn(items, root)
        if len(wanted) != 1:
            return []
        return [wanted[0] in lfn(items, root)]

    return Compiled(contains, None, boolean=True)


def compile_on_this(node: OnThis, scope: Scope, compile_node: NodeCompiler) -> Compiled:
    """``left.f(other)`` with ``left`` and ``other`` both evaluated on ``$this`` (parser.OnThis):
    the collection functions (N1 "Combining", "Subsetting", "Existence") and a string test
    given a computed argument."""
    name, argument = node.call.name, node.call.args[0]
    if name == "union":  # a.union(b) is a | b (N1)
        return compile_node(Union((node.left, argument)), scope)
    left, other = compile_node(node.left, scope), compile_node(argument, scope)
    lfn, ofn = left.fn, other.fn
    if name == "combine":  # both, duplicates kept
        types: Types = None
        if left.types is not None and other.types is not None:
            types = tuple(dict.fromkeys(left.types + other.types))
        return Compiled(lambda items, root: lfn(items, root) + ofn(items, root), types)
    if name in ("intersect", "exclude"):
        return Compiled(
            _intersect(lfn, ofn) if name == "intersect" else _exclude(lfn, ofn), left.types
        )
    if name in ("subsetOf", "supersetOf"):
        inner, outer = (lfn, ofn) if name == "subsetOf" else (ofn, lfn)
        return Compiled(_subset_of(inner, outer), None, boolean=True)
    return Compiled(_string_test_of(STRING_TESTS[name], lfn, ofn), None, boolean=True)


class _Members:
    """The items of a collection, for membership by ``=`` (N1: intersect(), exclude(),
    subsetOf(), supersetOf()): primitives through a set, so large collections stay linear
    (1, 1.0 alike, as ``=`` has them; a boolean is no number), complex values compared whole."""

    __slots__ = ("complex", "primitives")

    def __init__(self, items: Items) -> None:
        self.primitives: set[Any] = set()
        self.complex: Items = []
        for item in items:
            self.add(item)

    def add(self, item: Any) -> None:
        if isinstance(item, dict | list):
            self.complex.append(item)
        else:
            self.primitives.add(_member_key(item))

    def __contains__(self, item: Any) -> bool:
        if isinstance(item, dict | list):
            return item in self.complex
        return _member_key(item) in self.primitives


def _member_key(value: Any) -> Any:
    return ("boolean", value) if isinstance(value, bool) else value


def _intersect(lfn: Step, ofn: Step) -> Step:
    """The items of the input also in ``other``, duplicates removed, in input order."""

    def intersect(items: Items, root: Any) -> Items:
        values = lfn(items, root)
        if not values:
            return []
        others = _Members(ofn(items, root))
        seen = _Members([])
        out: Items = []
        for value in values:
            if value in others and value not in seen:
                seen.add(value)
                out.append(value)
        return out

    return intersect


def _exclude(lfn: Step, ofn: Step) -> Step:
    """The items of the input not in ``other``, duplicates and order kept."""

    def exclude(items: Items, root: Any) -> Items:
        values = lfn(items, root)
        if not values:
            return []
        others = _Members(ofn(items, root))
        return [value for value in values if value not in others]

    return exclude


def _subset_of(inner: Step, outer: Step) -> Step:
    """Every item of ``inner`` is in ``outer``: true when ``inner`` is empty (N1)."""

    def subset_of(items: Items, root: Any) -> Items:
        values = inner(items, root)
        if not values:
            return [True]
        members = _Members(outer(items, root))
        return [all(value in members for value in values)]

    return subset_of


def _string_test_of(test: Callable[[str, str], bool], lfn: Step, argument: Step) -> Step:
    """A string test of one string against a computed one (sdf-8: ``path.startsWith(
    %resource.snapshot.element.first().path & '.')``); empty unless both are one string."""

    def string_test_of(items: Items, root: Any) -> Items:
        values = lfn(items, root)
        if len(values) != 1 or not isinstance(values[0], str):
            return []
        wanted = argument(items, root)
        if len(wanted) != 1 or not isinstance(wanted[0], str):
            return []
        return [test(values[0], wanted[0])]

    return string_test_of


def compile_is(node: IsType, scope: Scope, compile_node: NodeCompiler) -> Compiled:
    """``x is T`` (N1 "is"): x has one item, of type T or a subtype; empty if x is empty.

    Decided as ``x.ofType(T)`` kept that item, so choice elements (``probability is decimal``)
    are told apart by the variant present, as ofType does."""
    operand = compile_node(node.operand, scope).fn
    path = node.operand if isinstance(node.operand, Path) else Path(node.operand, ())
    of_type = compile_node(
        Path(path.head, path.steps + (Call("ofType", (node.type_name,)),)), scope
    )
    kept = of_type.fn

    def is_type(items: Items, root: Any) -> Items:
        if len(operand(items, root)) != 1:
            return []
        return [len(kept(items, root)) == 1]

    return Compiled(is_type, None, boolean=True)


# --- functions ----------------------------------------------------------------------------


def compile_function(
    call: Call, types: Types, scope: Scope, compile_node: NodeCompiler
) -> tuple[Step, Types, bool] | None:
    """One of this module's functions, or None when it is not one of them."""
    name, args = call.name, call.args
    if name == "children" and not args:
        return _children_of, None, False
    if name == "descendants" and not args:
        return _descendants, None, False
    if name == "tail" and not args:
        return (lambda items, root: items[1:]), types, False
    if name == "toString" and not args:
        return _to_string, STRING, False
    if name == "replaceMatches" and len(args) == 2 and all(isinstance(a, Literal) for a in args):
        return _replace_matches(args[0].value, args[1].value), STRING, False
    if name == "iif" and len(args) in (2, 3):
        return _compile_iif(args, types, scope, compile_node)
    return None


def resolve_type(items: Items, root: Any) -> Items:
    """resolve() for the invariants, without the store: a local ``#id`` is the contained
    resource itself; any other reference a stand-in of the type it names (``Type/id``, an
    absolute URL, ``Reference.type``) with no other content; else, inside a Bundle, the entry
    whose fullUrl it is (a ``urn:uuid:`` of a document's or a transaction's entry:
    evaluation.bundle_entries); nothing otherwise (an identifier only, a fullUrl no entry
    has), as an unresolvable reference is. Enough for ctm-1
    (``member.resolve().iif(empty(), true, ofType(Practitioner).exists())``), the only R4
    invariant that resolves; one reading a stored target's content would need the store."""
    out: Items = []
    for reference in items:
        if not isinstance(reference, dict):
            continue
        target = reference.get("reference")
        if isinstance(target, str) and target.startswith("#"):
            out += [
                c
                for c in (root.get("contained") or () if isinstance(root, dict) else ())
                if isinstance(c, dict) and c.get("id") == target[1:]
            ][:1]
            continue
        found = reference_type(reference, root)
        if found is not None:
            out.append({"resourceType": found})
        elif isinstance(target, str) and (entry := bundle_entry(target)) is not None:
            out.append(entry)
    return out


def _children(node: Any) -> Items:
    """The child nodes of one node (N1 "children"): its elements' values, in document order.
    ``resourceType`` is no element; a primitive's ``_name`` partner holds the primitive's own
    children (id, extensions), not the node's."""
    if not isinstance(node, dict):
        return []
    out: Items = []
    for key, value in node.items():
        if key == "resourceType" or key.startswith("_"):
            continue
        if type(value) is list:
            out += [x for x in value if x is not None]
        elif value is not None:
            out.append(value)
    return out


def _children_of(items: Items, root: Any) -> Items:
    out: Items = []
    for item in items:
        out += _children(item)
    return out


def _descendants(items: Items, root: Any) -> Items:
    """Every node below the input (N1 "descendants": children, recursively), primitives'
    extensions included."""
    out: Items = []
    pending = list(items)
    while pending:
        node = pending.pop()
        found = _children(node)
        if isinstance(node, dict):
            for key, value in node.items():
                if key.startswith("_"):  # a primitive's id and extensions are below it
                    for part in value if type(value) is list else [value]:
                        found += _children(part)
        out += found
        pending += found
    return out


def _to_string(items: Items, root: Any) -> Items:
    """toString() of one primitive (N1 "Conversion"); empty for a complex value (a Quantity's
    string form is not needed here) or for several items."""
    if len(items) != 1:
        return []
    value = items[0]
    if isinstance(value, bool):
        return ["true" if value else "false"]
    if isinstance(value, str):
        return [value]
    if isinstance(value, Decimal):
        return [getattr(value, "literal", None) or str(value)]  # as written: 1.0 stays 1.0
    if isinstance(value, int | float):
        return [str(value)]
    return []


@cache
def _regex(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern, re.DOTALL)


def _replace_matches(pattern: Any, substitution: Any) -> Step:
    """replaceMatches(regex, substitution) of one string (N1); ``$1`` names a group."""
    if not isinstance(pattern, str) or not isinstance(substitution, str):
        raise Unsupported("replaceMatches() of non-strings")
    regex = _regex(pattern)
    template = re.sub(r"\$(\d+)", r"\\g<\1>", substitution.replace("\\", "\\\\"))

    def replace_matches(items: Items, root: Any) -> Items:
        if len(items) != 1 or not isinstance(items[0], str):
            return []
        return [regex.sub(template, items[0])]

    return replace_matches


def _compile_iif(
    args: tuple[Any, ...], types: Types, scope: Scope, compile_node: NodeCompiler
) -> tuple[Step, Types, bool]:
    """iif(criterion, true-result [, otherwise-result]) (N1): otherwise-result, or empty,
    when the criterion is false or empty. Arguments see the input as ``$this``."""
    inner = scope.inner(types)
    criterion = compile_node(args[0], inner)
    if not is_boolean(criterion):
        raise Unsupported("iif() with a non-boolean criterion")
    branches = [compile_node(arg, inner) for arg in args[1:]]
    test = criterion.fn
    then = branches[0].fn
    otherwise = branches[1].fn if len(branches) == 2 else None

    def iif(items: Items, root: Any) -> Items:
        if test(items, root) == [True]:
            return then(items, root)
        return otherwise(items, root) if otherwise is not None else []

    if all(is_boolean(b) for b in branches):
        return iif, None, True
    out_types = branches[0].types if len({b.types for b in branches}) == 1 else None
    return iif, out_types, False
