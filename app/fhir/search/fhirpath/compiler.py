"""The native compiler: a parsed search expression becomes plain Python closures over the
JSON dicts, typed statically at each step from the R4 model (model.py). What it cannot
compile raises :class:`Unsupported`; the package's entry points then use fhirpathpy."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from app.fhir.search.fhirpath import arithmetic, evaluation, functions, operators
from app.fhir.search.fhirpath.compiled import (
    Compiled,
    Evaluator,
    Items,
    Scope,
    Step,
    Types,
)
from app.fhir.search.fhirpath.model import (
    choice_keys,
    is_a,
    is_primitive,
    is_resource_type,
    member_of,
    reference_type,
)
from app.fhir.search.fhirpath.parser import (
    And,
    Call,
    Compare,
    Concat,
    Empty,
    Field,
    Index,
    IsType,
    Literal,
    Logic,
    OnThis,
    Path,
    Plus,
    Union,
    Unsupported,
    Var,
    parse,
)


def compile_node(node: Any, scope: Scope) -> Compiled:
    compiled = _compile_any(node, scope)
    if scope.in_predicate and scope.context_types is not None and evaluation.environment_only(node):
        # An invariant's subexpression of the root resource alone, inside a loop (all(),
        # where() ...): computed once per evaluation, not once per item (sdf-8 was quadratic)
        return compiled._replace(fn=evaluation.once_per_evaluation(compiled.fn))
    return compiled


def _compile_any(node: Any, scope: Scope) -> Compiled:
    if isinstance(node, Path):
        return _compile_path(node, scope)
    if isinstance(node, Union):
        return _compile_union(node, scope)
    if isinstance(node, And):
        return _compile_and(node, scope)
    if isinstance(node, Compare):
        return _compile_compare(node, scope)
    if isinstance(node, Logic):
        return _compile_logic(node, scope)
    if isinstance(node, Plus):
        return arithmetic.compile_plus(node, scope, compile_node)
    if isinstance(node, Concat):
        return functions.compile_concat(node, scope, compile_node)
    if isinstance(node, OnThis):
        return functions.compile_on_this(node, scope, compile_node)
    if isinstance(node, IsType):
        return _compile_is(node, scope)
    if isinstance(node, Var):
        return _compile_var(node, scope)
    if isinstance(node, Literal):
        value = node.value
        return Compiled(lambda items, root: [value], _literal_types(value))
    if isinstance(node, Empty):  # {}: no items, so no types (operators.EMPTY)
        return Compiled(lambda items, root: [], ())
    raise Unsupported(type(node).__name__)


def _literal_types(value: Any) -> Types:
    """A literal's System type (FHIRPath "Literals"): ``true`` is a boolean operand
    (``iif(empty(), true, ...)``), ``1 + 4`` adds integers, ``'a' = 'A'`` compares strings."""
    if isinstance(value, bool):
        return ("System.Boolean",)
    if isinstance(value, int):
        return ("System.Integer",)
    if isinstance(value, Decimal):
        return ("System.Decimal",)
    if isinstance(value, str):
        return ("System.String",)
    return None


def _compile_var(node: Var, scope: Scope) -> Compiled:
    if node.name in ("%resource", "%rootResource"):
        if scope.root_type is None:
            raise Unsupported("%resource of an unknown type")
        return Compiled(lambda items, root: [root], (scope.root_type,))
    if node.name == "%ucum":  # FHIR's environment variable for UCUM's system URI
        return Compiled(lambda items, root: ["http://unitsofmeasure.org"], ("System.String",))
    if node.name == "$this":  # outside any function, $this is the input itself
        return Compiled(lambda items, root: items, scope.types)
    if node.name == "%context":
        return evaluation.compile_context(scope)
    raise Unsupported(node.name)


# --- unions -------------------------------------------------------------------------------


def _distinct(items: Items) -> Items:
    """``|`` removes duplicates, keeping the first of each."""
    if len(items) < 2:
        return items
    out: Items = []
    for x in items:
        if not any(_same(x, y) for y in out):
            out.append(x)
    return out


def _same(x: Any, y: Any) -> bool:
    """Duplicate test of fhirpathpy's union: JSON-identical, so ``1.0`` and ``1.00`` differ.

    Keeping both matters for search: their precision gives different match ranges.
    """
    if x is y:
        return True
    if type(x) is not type(y):
        return False
    if isinstance(x, dict):
        return x.keys() == y.keys() and all(_same(v, y[k]) for k, v in x.items())
    if isinstance(x, list):
        return len(x) == len(y) and all(map(_same, x, y))
    if isinstance(x, Decimal):
        return str(x) == str(y)
    return bool(x == y)


def _compile_union(node: Union, scope: Scope) -> Compiled:
    fns = tuple(compile_node(b, scope).fn for b in node.branches)

    def union(items: Items, root: Any) -> Items:
        out: Items = []
        for fn in fns:
            out += fn(items, root)
        return _distinct(out)

    # fhirpathpy forgets element types after a union, so only untyped steps may follow it
    # (a key by name: _compile_field; functions that need no types).
    return Compiled(union, None)


# --- boolean operators ----------------------------------------------------------------------


def _compile_and(node: And, scope: Scope) -> Compiled:
    return operators.compile_and(node, scope, compile_node)


def _compile_logic(node: Logic, scope: Scope) -> Compiled:
    return operators.compile_logic(node, scope, compile_node)


def _compile_compare(node: Compare, scope: Scope) -> Compiled:
    if node.op == "contains":
        return functions.compile_contains(node, scope, compile_node)
    return operators.compile_compare(node, scope, compile_node)


def _compile_is(node: IsType, scope: Scope) -> Compiled:
    """``resolve() is T`` (inside where()): the search 'target type' test; any other ``x is T``
    is the invariants' (functions.py)."""
    operand = node.operand
    if not (
        scope.in_predicate
        and isinstance(operand, Path)
        and operand.head is None
        and operand.steps == (Call("resolve", ()),)
    ):
        return functions.compile_is(node, scope, compile_node)
    wanted = node.type_name

    def resolves_to(items: Items, root: Any) -> Items:
        if not items:
            return []
        found = reference_type(items[0], root)
        return [is_a(found, wanted)] if found else []

    return Compiled(resolves_to, None, boolean=True)


# --- paths ----------------------------------------------------------------------------------


def _compile_path(node: Path, scope: Scope) -> Compiled:
    boolean = False
    if node.head is None:
        fns: list[Step] = []
        types = scope.types
    else:
        head = compile_node(node.head, scope)
        fns, types, boolean = [head.fn], head.types, head.boolean
    # From this step on every step runs, even on nothing: exists(), count(), not() ... answer
    # on empty input (and nothing but not() follows a boolean).
    total_from = 1 if boolean else None
    steps = list(node.steps)
    if node.head is None and steps and isinstance(steps[0], Field) and steps[0].name[0].isupper():
        fn, types = _type_filter_root(steps.pop(0).name, types)
        fns.append(fn)
    i = 0
    while i < len(steps):
        step = steps[i]
        if boolean:
            if step != Call("not", ()):
                raise Unsupported("navigation from a boolean")
            fns.append(operators.negate)
            i += 1
            continue
        if isinstance(step, Field):
            fn, types, i = _compile_field(step.name, steps, i, types)
        else:
            fn, types, boolean = _compile_function(step, types, scope)
            if _shares_values(step, scope):
                fn = evaluation.shared_across_items(fn)
            if total_from is None and (boolean or step == Call("count", ())):
                total_from = len(fns)
            i += 1
        fns.append(fn)
    if total_from is None:
        return Compiled(_chain(fns), types, boolean)
    return Compiled(_then_always(_chain(fns[:total_from]), fns[total_from:]), types, boolean)


_LOOPS = frozenset({"where", "select", "all", "exists"})


def _shares_values(step: Any, scope: Scope) -> bool:
    """An invariant's loop whose argument holds a value computed once per evaluation."""
    return (
        isinstance(step, Call)
        and step.name in _LOOPS
        and scope.context_types is not None
        and evaluation.contains_environment_only(step.args)
    )


def _then_always(head: Step, tail: list[Step]) -> Step:
    if head is _identity and len(tail) == 1:
        return tail[0]
    rest = tuple(tail)

    def run(items: Items, root: Any) -> Items:
        items = head(items, root)
        for step in rest:
            items = step(items, root)
        return items

    return run


def _identity(items: Items, root: Any) -> Items:
    return items


def _chain(fns: list[Step]) -> Step:
    """Run steps in turn, stopping at the first empty result (navigation of nothing is
    nothing)."""
    if not fns:
        return _identity
    if len(fns) == 1:
        return fns[0]
    if len(fns) == 2:
        first, second = fns

        def chain2(items: Items, root: Any) -> Items:
            items = first(items, root)
            return second(items, root) if items else items

        return chain2
    steps = tuple(fns)

    def chain(items: Items, root: Any) -> Items:
        for step in steps:
            items = step(items, root)
            if not items:
                break
        return items

    return chain


def _type_filter_root(name: str, types: Types) -> tuple[Step, Types]:
    """A leading ``Observation.`` keeps only Observations (``Resource.``: any resource)."""
    if not is_resource_type(name) or types is None:
        raise Unsupported(f"leading {name}")
    if name in ("Resource", "DomainResource"):
        kept = tuple(t for t in types if is_a(t, name))
        if any(not is_resource_type(t) or t in ("Resource", "DomainResource") for t in kept):
            raise Unsupported(f"{name} of an abstract input")

        def is_kind(items: Items, root: Any) -> Items:
            return [x for x in items if isinstance(x, dict) and _is_a_resource(x, name)]

        return is_kind, kept

    def is_type(items: Items, root: Any) -> Items:
        return [x for x in items if isinstance(x, dict) and x.get("resourceType") == name]

    return is_type, (name,)


def _is_a_resource(resource: dict[str, Any], wanted: str) -> bool:
    rtype = resource.get("resourceType")
    return isinstance(rtype, str) and is_a(rtype, wanted)


def _compile_field(name: str, steps: list[Any], i: int, types: Types) -> tuple[Step, Types, int]:
    """One element step; a choice element also swallows the type filters that follow it."""
    if name[0].isupper():
        raise Unsupported(f"member {name}")  # fhirpathpy filters by resourceType
    if types is None:
        # After descendants(), children(), a union ...: the key itself, and where the name is
        # a choice element's in some type (``code`` of DeviceRequest) any of its variants:
        # valid data holds one of these keys at most.
        if name == "length":
            raise Unsupported("length of an untyped collection")
        keys = choice_keys().get(name)
        if keys is None:
            return _plain_field(name, ()), None, i + 1  # no types: drops JSON nulls too
        return _choice_field((name, *keys)), None, i + 1
    if not types:
        raise Unsupported(f"{name} of an empty type set")
    if name == "length" and any(is_primitive(t) for t in types):
        raise Unsupported("length of a primitive")  # fhirpathpy: the string's length
    if any(t in ("Resource", "DomainResource") for t in types):
        raise Unsupported(f"{name} of a resource of unknown type")
    members = {member_of(t, name) for t in types}
    if len(members) != 1:
        # The same name in differently typed nodes: choice-ness may differ per node.
        if any(m.choices for m in members) or len({m.key for m in members}) != 1:
            raise Unsupported(f"{name} on mixed types")
        out_types = tuple(sorted({m.type_path for m in members}))
        return _plain_field(name, out_types), out_types, i + 1
    member = members.pop()
    if not member.choices:
        return _plain_field(name, (member.type_path,)), (member.type_path,), i + 1
    variants = member.choices
    i += 1
    while i < len(steps) and isinstance(steps[i], Call) and steps[i].name == "ofType":
        wanted = steps[i].args[0]
        variants = tuple(v for v in variants if is_a(v[1], wanted))
        i += 1
    out_types = tuple(dict.fromkeys(tp for _, tp in variants))
    return _choice_field(tuple(key for key, _ in variants)), out_types, i


def _plain_field(key: str, types: tuple[str, ...]) -> Step:
    def complex_field(items: Items, root: Any) -> Items:
        out: Items = []
        for item in items:
            if isinstance(item, dict):
                value = item.get(key)
                if value is not None:
                    if type(value) is list:
                        out += value
                    else:
                        out.append(value)
        return out

    if len(types) == 1 and not is_primitive(types[0]):
        return complex_field  # complex elements never hold nulls: no scan on the hot path

    def field(items: Items, root: Any) -> Items:
        out = complex_field(items, root)
        if None in out:  # JSON null placeholders of primitive arrays are not values
            out = [x for x in out if x is not None]
        return out

    return field


def _choice_field(keys: tuple[str, ...]) -> Step:
    """``value`` of a choice element: the variant present among the wanted ones."""
    if not keys:
        return lambda items, root: []

    def choice(items: Items, root: Any) -> Items:
        out: Items = []
        for item in items:
            if isinstance(item, dict):
                for key in keys:
                    value = item.get(key)
                    if value is not None:
                        if type(value) is list:  # a choice is never repeating; be safe
                            out += [x for x in value if x is not None]
                        else:
                            out.append(value)
                        break
        return out

    return choice


# --- functions ------------------------------------------------------------------------------


def _compile_function(call: Any, types: Types, scope: Scope) -> tuple[Step, Types, bool]:
    if isinstance(call, Index):
        n = call.position
        return (lambda items, root: items[n : n + 1]), types, False
    name, args = call.name, call.args
    if name == "first" and not args:
        return (lambda items, root: items[:1]), types, False
    if name == "exists" and not args:
        return (lambda items, root: [bool(items)]), None, True
    if name == "empty" and not args:
        return (lambda items, root: [not items]), None, True
    if name == "ofType":
        return _compile_of_type(args[0], types)
    if name == "where" and len(args) == 1:
        return _compile_where(args[0], types, scope), types, False
    if name == "extension" and len(args) == 1 and isinstance(args[0], Literal):
        return _compile_extension(args[0].value), ("Extension",), False
    found = operators.compile_function(call, types, scope, compile_node)
    if found is None:
        found = functions.compile_function(call, types, scope, compile_node)
    if found is None and name == "resolve" and not args:
        if scope.context_types is None:  # search: fhirpathpy's resolve() stand-in
            raise Unsupported("resolve() outside an invariant")
        # ctm-1 asks only which type the member is: no store lookup on the write path
        return functions.resolve_type, ("Resource",), False
    if found is None:
        raise Unsupported(f"function {name}()")
    return found


def _compile_of_type(wanted: str, types: Types) -> tuple[Step, Types, bool]:
    """ofType/as on non-choice nodes: decided statically, or by resourceType at run time."""
    if types is None:
        raise Unsupported("ofType of an untyped collection")
    if all(t in ("Resource", "DomainResource") for t in types) and is_resource_type(wanted):

        def of_resource_type(items: Items, root: Any) -> Items:
            return [x for x in items if isinstance(x, dict) and _is_a_resource(x, wanted)]

        return of_resource_type, (wanted,), False
    kept = tuple(t for t in types if is_a(t, wanted))
    if not kept:
        return (lambda items, root: []), (), False
    if len(kept) != len(types):
        raise Unsupported("ofType that depends on each node's type")
    return (lambda items, root: items), kept, False


def _compile_where(predicate: Any, types: Types, scope: Scope) -> Step:
    inner = compile_node(predicate, scope.inner(types))
    if not inner.boolean:
        raise Unsupported("where() with a non-boolean criterion")
    test = inner.fn

    def where(items: Items, root: Any) -> Items:
        out: Items = []
        for item in items:
            result = test([item], root)
            if result and result[0]:
                out.append(item)
        return out

    return where


def _compile_extension(url: Any) -> Step:
    def extension(items: Items, root: Any) -> Items:
        out: Items = []
        for item in items:
            if isinstance(item, dict):
                for ext in item.get("extension") or ():
                    if isinstance(ext, dict) and ext.get("url") == url:
                        out.append(ext)
        return out

    return extension


def compile_native(expression: str, base: str) -> Evaluator:
    scope = Scope((base,), base.split(".", 1)[0])
    fn = compile_node(parse(expression), scope).fn

    def evaluate(node: Any, resource: Any = None) -> Items:
        return fn([node], node if resource is None else resource)

    return evaluate
