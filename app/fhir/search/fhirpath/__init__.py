"""A small, fast evaluator for the FHIRPath expressions of search parameters.

Search parameters are data: at write time every SearchParameter expression of a resource's
type is evaluated and the results become index rows. fhirpathpy evaluates them correctly but
slowly (an ANTLR tree walk that wraps every value in a node object), so this package compiles
the expression shapes that occur in the R4 definitions into plain Python closures over the
JSON dicts, and falls back to fhirpathpy for anything else: parser.py reads the subset,
compiler.py turns it into closures typed by model.py (the R4 types), fallback.py runs
fhirpathpy; the entry points below pick one per (expression, type) and cache it.

Results are the JSON nodes themselves (dicts for complex types; str/int/bool/Decimal for
primitives), never copies: exactly the values fhirpathpy returns in ``returnRawData`` mode,
unwrapped. The test-suite proves this on every official example (tests/test_search_fhirpath.py).

Natively compiled: unions ``a | b``; paths through arrays; choice types (``value`` means the
one ``valueX`` present) with ``as T``, ``as(T)``, ``ofType(T)``; ``[n]``, ``first()``,
``exists()``, ``empty()``; ``where()`` with ``resolve() is T``, ``x = 'lit'``/``!=``, ``and``;
``extension('url')``; ``%resource``; and what the R4 invariants need (app.fhir.constraints
compiles them here too, without the fallback): ``or``, ``xor``, ``implies``, ``in``,
orderings, ``+`` of counts, ``not()``, ``exists(criteria)``, ``all()``, ``count()``,
``hasValue()``, string tests, ``isDistinct()``, ``select()``, ... (operators.py);
``&``, ``contains``, ``combine()``, ``union()``, ``intersect()``, ``exclude()``, ``subsetOf()``,
``supersetOf()``, ``children()``, ``descendants()``, ``tail()``,
``toString()``, ``replaceMatches()``, ``iif()``, ``is T``, ``%context`` (functions.py);
``+`` of numbers and strings (arithmetic.py); decimal literals, ``{}``, and ``=``/``!=`` of
complex values.
Types come from fhirpathpy's own R4 model, statically: the compiler knows at each step which
element types it may see.

Deliberate differences from fhirpathpy (the fallback shares the first three):

* ``Resource.x`` / ``DomainResource.x`` apply to every (domain) resource; fhirpathpy only
  matches the literal resourceType and returns nothing.
* ``as`` on a collection of several items filters them like ``ofType`` (what search
  expressions such as ``(Observation.component.value as Quantity)`` mean); fhirpathpy raises.
* ``resolve()`` knows the referenced type only (from ``Type/id``, an absolute URL, a
  ``#contained`` id, or ``Reference.type``); fhirpathpy has no ``resolve()`` at all.
* JSON ``null`` placeholders of primitive arrays and value-less primitive-extension nodes
  (``_given``) carry no value and are never returned; fhirpathpy returns the ``null``. The
  native code ignores ``_given``-style nodes inside expressions too (``exists()`` of a
  primitive that only has an extension is false; fhirpathpy counts it).
* ``extension(url)`` returns every matching extension; fhirpathpy only the first.
* Invalid data with two ``value[x]`` variants: fhirpathpy takes the first type in model order;
  the native code takes the first type *asked for* (one dict lookup instead of eleven).
* ``toInteger()`` / ``convertsToInteger()`` are 32-bit (N1 Integer): beyond the range
  empty / false; fhirpathpy converts any size.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

from app.fhir.search.fhirpath.compiler import (
    Compiled,
    Evaluator,
    Items,
    Scope,
    Step,
    compile_native,
    compile_node,
)
from app.fhir.search.fhirpath.fallback import Fallback
from app.fhir.search.fhirpath.model import reference_type
from app.fhir.search.fhirpath.parser import Unsupported, parse, split_union

__all__ = [
    "CompositeRows",
    "Evaluator",
    "Unsupported",
    "compile_composite",
    "compile_expression",
    "compile_report",
    "is_native",
    "is_native_composite",
    "parse",
    "reference_type",
    "result_types",
    "split_union",
]


def compile_expression(expression: str, base: str | None = None) -> Evaluator:
    """Compile a search expression into ``evaluate(node, resource=None) -> list``.

    ``base`` is the FHIR type path of ``node`` (``"Observation"``, or
    ``"Observation.component"`` for a composite's component expressions); ``resource`` is
    the root resource for ``%resource`` and ``#contained`` references (default: ``node``).
    Without ``base`` the node's ``resourceType`` is used, compiled once per type.
    """
    if base is None:
        return _by_resource_type(expression)
    return _compile(expression, base)[0]


@functools.lru_cache(maxsize=8192)
def result_types(expression: str, base: str) -> tuple[str, ...] | None:
    """The static type paths of what the expression returns on a ``base`` node (each
    union branch's), or None when the compiler cannot tell (fhirpathpy would run it)."""
    try:
        return compile_node(parse(expression), Scope((base,), base.split(".", 1)[0])).types
    except Unsupported:
        return None


def is_native(expression: str, base: str) -> bool:
    """Whether ``compile_expression(expression, base)`` runs natively (no fhirpathpy)."""
    return _compile(expression, base)[1]


CompositeRows = list[tuple[Items, ...]]


def compile_composite(
    expression: str, components: Sequence[str], base: str
) -> Callable[[Any], CompositeRows]:
    """For each node of a composite expression, the values of each component expression.

    Component expressions are relative to the composite's nodes, whose types differ per
    union branch (``Observation | Observation.component``): each branch is compiled on its
    own so its components see the right element type.
    """
    return _compile_composite(expression, tuple(components), base)[0]


def is_native_composite(expression: str, components: Sequence[str], base: str) -> bool:
    return _compile_composite(expression, tuple(components), base)[1]


def compile_report() -> dict[str, Any]:
    """How many expressions of the search parameter table compile natively."""
    from app.fhir.search.definitions import all_params

    native = fallback = 0
    fallbacks: list[str] = []
    for resource_type, params in all_params().items():
        for code, param in params.items():
            checks = [is_native(param.expression, resource_type)]
            if param.components:
                comps = [c.expression for c in param.components]
                checks.append(is_native_composite(param.expression, comps, resource_type))
            if all(checks):
                native += 1
            else:
                fallback += 1
                fallbacks.append(f"{resource_type}.{code}: {param.expression}")
    return {
        "total": native + fallback,
        "native": native,
        "fallback": fallback,
        "fallback_expressions": sorted(fallbacks),
    }


@functools.lru_cache(maxsize=8192)
def _compile(expression: str, base: str) -> tuple[Evaluator, bool]:
    try:
        return compile_native(expression, base), True
    except Unsupported:
        return Fallback(expression, base), False


def _by_resource_type(expression: str) -> Evaluator:
    """Compile lazily for each resourceType met (the types steer choice resolution)."""
    per_type: dict[Any, Evaluator] = {}

    def evaluate(node: Any, resource: Any = None) -> Items:
        rtype = node.get("resourceType") if isinstance(node, dict) else None
        fn = per_type.get(rtype)
        if fn is None:
            fn = (
                _compile(expression, rtype)[0]
                if isinstance(rtype, str)
                else Fallback(expression, None)
            )
            per_type[rtype] = fn
        return fn(node, resource)

    return evaluate


@functools.lru_cache(maxsize=2048)
def _compile_composite(
    expression: str, components: tuple[str, ...], base: str
) -> tuple[Callable[[Any], CompositeRows], bool]:
    branches = split_union(expression)
    try:
        scope = Scope((base,), base.split(".", 1)[0])
        typed = [_single_typed(compile_node(parse(b), scope)) for b in branches]
    except Unsupported:
        return _composite_fallback(branches, components, base), False
    plans = [
        (fn, [compile_expression(c, type_path) for c in components]) for fn, type_path in typed
    ]
    native = all(is_native(c, type_path) for _, type_path in typed for c in components)

    def rows(resource: Any) -> CompositeRows:
        out: CompositeRows = []
        for fn, comps in plans:
            for node in fn([resource], resource):
                out.append(tuple(comp(node, resource) for comp in comps))
        return out

    return rows, native


def _single_typed(compiled: Compiled) -> tuple[Step, str]:
    """A composite branch must have one static node type for its components to compile."""
    if compiled.boolean or compiled.types is None or len(compiled.types) != 1:
        raise Unsupported("composite branch without one static type")
    return compiled.fn, compiled.types[0]


def _composite_fallback(
    branches: list[str], components: tuple[str, ...], base: str
) -> Callable[[Any], CompositeRows]:
    """fhirpathpy finds the nodes and their types; components compile per type met."""
    finders = [Fallback(b, base) for b in branches]

    def rows(resource: Any) -> CompositeRows:
        out: CompositeRows = []
        for finder in finders:
            for node, type_path in finder.typed(resource):
                comps = [compile_expression(c, type_path) for c in components]
                out.append(tuple(comp(node, resource) for comp in comps))
        return out

    return rows
