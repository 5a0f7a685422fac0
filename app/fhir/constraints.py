"""The invariants (constraints of severity error) of the R4 types, resources and backbone
elements, from ``constraints.json`` (generated from the official StructureDefinitions by
``fhir_profiles/generate_constraints.py``) and evaluated with the native FHIRPath compiler
(app.fhir.search.fhirpath): obs-6, pat-1, per-1, att-1, bdl-*, tim-* ...

Each expression is compiled once, for its context type. Those the compiler cannot compile
are not checked, and :func:`unchecked` says why, as do the ones the table itself marks
(checked elsewhere, or known wrong in R4); ``resolve()`` (ctm-1) gives the referenced type
only, without the store (functions.resolve_type). There is no fhirpathpy fallback here:
validation is on every write's path, and a compiled invariant costs a few closure calls.

A constraint holds only when its expression evaluates to `true`: `false` and an empty answer
(unknown, in FHIRPath's three-valued logic) both refuse, as FHIR defines a constraint
("Condition that must evaluate to true", ElementDefinition.constraint) and the reference
validator checks it (FHIRPathEngine.convertToBoolean: empty is false). The R4 expressions that
are empty for valid data (bdl-8 without fullUrl, ras-2 without probability) are corrected in
the table as the validator corrects them (fhir_profiles/generate_constraints.py). The
elements are found by the kind walk (app.fhir.bindings), which meets every typed object anyway.

A constraint the engine fails to evaluate (an error inside it, on data of the kinds the walk
let by) is not met either: the reference validator's InstanceValidator.checkInvariant counts
an exception from the FHIRPath engine as a failed invariant (an error naming the key), so an
engine gap can never let an invalid resource in.
"""

from __future__ import annotations

import logging
from functools import cache
from typing import Any, NamedTuple

from app.errors import Issue
from app.fhir.bindings import Target
from app.fhir.element_tables import load_json
from app.fhir.search.fhirpath.compiled import Scope, Step
from app.fhir.search.fhirpath.compiler import compile_node
from app.fhir.search.fhirpath.evaluation import bundle_entries, with_context
from app.fhir.search.fhirpath.model import is_resource_type
from app.fhir.search.fhirpath.parser import Unsupported, parse

log = logging.getLogger(__name__)


class Constraint(NamedTuple):
    key: str
    human: str
    test: Step


class Table(NamedTuple):
    checked: dict[str, tuple[Constraint, ...]]  # context type path -> its invariants
    unchecked: dict[str, str]  # key -> why it is not checked


@cache
def table() -> Table:
    checked: dict[str, list[Constraint]] = {}
    unchecked: dict[str, str] = {}
    rows: dict[str, list[list[Any]]] = load_json("constraints.json")
    for context, constraints in rows.items():
        for key, human, expression, reason in constraints:
            if reason is None:
                try:
                    checked.setdefault(context, []).append(
                        Constraint(key, human, _compile(expression, context))
                    )
                    continue
                except Unsupported as exc:
                    reason = f"the FHIRPath engine cannot evaluate it: {exc}"
            unchecked[key] = reason
    return Table({k: tuple(v) for k, v in checked.items()}, unchecked)


def _compile(expression: str, context: str) -> Step:
    root = context.split(".", 1)[0]
    scope = Scope((context,), root if is_resource_type(root) else None, context_types=(context,))
    compiled = compile_node(parse(expression), scope)
    if not compiled.boolean:
        raise Unsupported("not a boolean expression")
    # only ig-1 and ig-2 read %context: the others skip the context variable's cost (a loop
    # over values of %resource opens its own evaluation: evaluation.shared_across_items)
    return with_context(compiled.fn) if "%context" in expression else compiled.fn


@cache
def constrained_types() -> frozenset[str]:
    """The type and backbone paths that have invariants to check."""
    return frozenset(table().checked)


def unchecked() -> dict[str, str]:
    return table().unchecked


def constraint_issues(targets: list[Target], resource: Any = None) -> list[Issue]:
    """The broken invariants of the kind walk's ``targets`` in ``resource`` (the validated
    resource: a Bundle's entries are what resolve() finds for a reference to one, ctm-1)."""
    if isinstance(resource, dict) and resource.get("resourceType") == "Bundle":
        with bundle_entries(resource):
            return _issues(targets)
    return _issues(targets)


def _issues(targets: list[Target]) -> list[Issue]:
    checked = table().checked
    issues: list[Issue] = []
    for node, context, path, root in targets:
        for constraint in checked[context]:
            try:
                result = constraint.test([node], root)
            except Exception as exc:  # fail closed: an engine error is not a pass
                log.warning(
                    "invariant %s at %s could not be evaluated", constraint.key, path, exc_info=True
                )
                issues.append(_not_evaluated(constraint, path, exc))
                continue
            if result != [True]:  # false, or empty (unknown): not met
                message = f"{path}: {constraint.human} ({constraint.key})"
                issues.append(Issue("error", "invariant", message, (path,)))
    return issues


def _not_evaluated(constraint: Constraint, path: str, exc: Exception) -> Issue:
    """The refusal of a constraint the engine could not evaluate: its key last, as every
    invariant issue has it; only the error's class (the message may quote the data; the
    log has it all)."""
    message = (
        f"{path}: {constraint.human}: the constraint could not be evaluated "
        f"({type(exc).__name__}), so it is not met ({constraint.key})"
    )
    return Issue("error", "invariant", message, (path,))
