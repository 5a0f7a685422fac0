"""One evaluation of an invariant: its ``%context`` and the values computed once in it.

A subexpression that reads only the environment (``%resource``, ``%rootResource``,
``%context``) and not its input is the same for every item of a loop around it; the compiler
marks it (:func:`environment_only`) and :func:`once_per_evaluation` keeps its value for the
evaluation the loop opens (:func:`shared_across_items`), or :func:`with_context` for an
invariant that reads ``%context``. And, while a Bundle's invariants run, its entries by
fullUrl (:func:`bundle_entries`), which resolve() finds.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from app.fhir.search.fhirpath.compiled import Compiled, Items, Scope, Step
from app.fhir.search.fhirpath.parser import (
    And,
    Compare,
    Concat,
    Empty,
    IsType,
    Literal,
    Logic,
    OnThis,
    Path,
    Plus,
    Union,
    Unsupported,
    Var,
)


class _Evaluation:
    """One run of an invariant on one element: its ``%context``, and the values of the
    subexpressions that depend on nothing but the root resource and ``%context`` (computed
    once, however many items the loop around them visits: sdf-8's
    ``%resource.snapshot.element.first().path`` in an ``all()`` over every element)."""

    __slots__ = ("context", "memo")

    def __init__(self, context: Items) -> None:
        self.context = context
        self.memo: dict[Step, Items] = {}


# A context variable, not an argument, because the closures only pass (items, root) and few
# invariants need it.
_EVALUATION: ContextVar[_Evaluation | None] = ContextVar("fhirpath_evaluation", default=None)


def compile_context(scope: Scope) -> Compiled:
    if scope.context_types is None:
        raise Unsupported("%context outside an invariant")

    def context(items: Items, root: Any) -> Items:
        evaluation = _EVALUATION.get()
        return evaluation.context if evaluation is not None else []

    return Compiled(context, scope.context_types)


def with_context(test: Step) -> Step:
    """``test`` as one evaluation: ``%context`` set to its input (the constraint's context
    element), and the values of :func:`once_per_evaluation` steps kept until it returns."""

    def run(items: Items, root: Any) -> Items:
        token = _EVALUATION.set(_Evaluation(items))
        try:
            return test(items, root)
        finally:
            _EVALUATION.reset(token)

    return run


def shared_across_items(loop: Step) -> Step:
    """``loop`` (a where(), all(), exists() or select() whose argument holds an
    :func:`environment_only` part) with an evaluation open while it visits two or more items,
    so that part is computed once for all of them; an evaluation already open (an outer loop,
    :func:`with_context`) is used as it is. A loop over one item or none costs nothing more."""

    def run(items: Items, root: Any) -> Items:
        if len(items) < 2 or _EVALUATION.get() is not None:
            return loop(items, root)
        token = _EVALUATION.set(_Evaluation([]))  # no %context read here: with_context sets it
        try:
            return loop(items, root)
        finally:
            _EVALUATION.reset(token)

    return run


def contains_environment_only(nodes: Any) -> bool:
    """Whether any node of the syntax trees ``nodes`` is :func:`environment_only`."""
    if isinstance(nodes, tuple):  # the AST nodes are NamedTuples; their fields nest
        if environment_only(nodes):
            return True
        return any(contains_environment_only(part) for part in nodes)
    return False


def once_per_evaluation(fn: Step) -> Step:
    """``fn``, a step whose value depends only on the root and ``%context`` (never on its
    input), computed once per :func:`with_context` run; outside one, on every call. The
    value is shared, so no caller may change a result list in place (none does)."""

    def memo(items: Items, root: Any) -> Items:
        evaluation = _EVALUATION.get()
        if evaluation is None:
            return fn(items, root)
        found = evaluation.memo.get(memo)
        if found is None:
            found = evaluation.memo[memo] = fn(items, root)
        return found

    return memo


# The environment variables: fixed for one evaluation of an invariant.
_ENVIRONMENT = frozenset({"%resource", "%rootResource", "%context"})


def environment_only(node: Any) -> bool:
    """A node worth computing once: it reads the environment and not its input ($this)."""
    return not isinstance(node, Var) and _reads_environment(node) and _input_free(node)


def _reads_environment(node: Any) -> bool:
    if isinstance(node, Var):
        return node.name in _ENVIRONMENT
    if isinstance(node, tuple):  # the AST nodes are NamedTuples; their fields nest
        return any(_reads_environment(part) for part in node)
    return False


def _input_free(node: Any) -> bool:
    """The node's value does not depend on its input (``$this``): literals, environment
    variables, and paths, operators and functions built on them alone."""
    if isinstance(node, Literal | Empty):
        return True
    if isinstance(node, Var):
        return node.name in _ENVIRONMENT or node.name == "%ucum"
    if isinstance(node, Path):
        # the steps' arguments iterate the path's own items, never the input
        return node.head is not None and _input_free(node.head)
    if isinstance(node, Union):
        return all(_input_free(b) for b in node.branches)
    if isinstance(node, OnThis):
        return _input_free(node.left) and all(_input_free(a) for a in node.call.args)
    if isinstance(node, IsType):
        return _input_free(node.operand)
    if isinstance(node, And | Compare | Logic | Plus | Concat):
        return _input_free(node.left) and _input_free(node.right)
    return False


# The resources of the Bundle being validated, by their entries' fullUrl: resolve() in an
# invariant finds another entry there (R4 bundle.html "Resolving references in Bundles": an
# absolute reference, urn:uuid: and urn:oid: included, is the entry with that fullUrl).
_BUNDLE_ENTRIES: ContextVar[dict[str, Any] | None] = ContextVar(
    "fhirpath_bundle_entries", default=None
)


@contextmanager
def bundle_entries(resource: Any) -> Iterator[None]:
    """While the invariants of ``resource``, a Bundle, run: its entries for
    :func:`bundle_entry`. Only the outermost Bundle's: an entry of a Bundle inside an entry
    does not resolve (as before: nothing, which ctm-1 lets pass)."""
    entries: dict[str, Any] = {}
    for entry in resource.get("entry") or ():
        if isinstance(entry, dict):
            url, found = entry.get("fullUrl"), entry.get("resource")
            if isinstance(url, str) and isinstance(found, dict):
                entries.setdefault(url, found)  # bdl-7: fullUrls are unique anyway
    token = _BUNDLE_ENTRIES.set(entries)
    try:
        yield
    finally:
        _BUNDLE_ENTRIES.reset(token)


def bundle_entry(url: str) -> Any:
    """The resource of the validated Bundle's entry with this fullUrl, or None."""
    entries = _BUNDLE_ENTRIES.get()
    return entries.get(url) if entries else None
