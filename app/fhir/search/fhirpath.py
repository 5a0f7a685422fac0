"""A small, fast evaluator for the FHIRPath expressions of search parameters.

Search parameters are data: at write time every SearchParameter expression of a resource's
type is evaluated and the results become index rows. fhirpathpy evaluates them correctly but
slowly (an ANTLR tree walk that wraps every value in a node object), so this module compiles
the expression shapes that occur in the R4 definitions into plain Python closures over the
JSON dicts, and falls back to fhirpathpy for anything else.

Results are the JSON nodes themselves (dicts for complex types; str/int/bool/Decimal for
primitives), never copies: exactly the values fhirpathpy returns in ``returnRawData`` mode,
unwrapped. The test-suite proves this on every official example (tests/test_search_fhirpath.py).

Natively compiled: unions ``a | b``; paths through arrays; choice types (``value`` means the
one ``valueX`` present) with ``as T``, ``as(T)``, ``ofType(T)``; ``[n]``, ``first()``,
``exists()``, ``empty()``; ``where()`` with ``resolve() is T``, ``x = 'lit'``/``!=``, ``and``;
``extension('url')``; ``%resource``. Types come from fhirpathpy's own R4 model, statically:
the compiler knows at each step which element types it may see.

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
"""

from __future__ import annotations

import contextvars
import functools
import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, NamedTuple, Protocol

Items = list[Any]
Step = Callable[[Items, Any], Items]  # (items, root resource) -> items
Types = tuple[str, ...] | None  # static type paths of a collection; None: unknown


class Evaluator(Protocol):
    def __call__(self, node: Any, resource: Any = None) -> Items: ...


class Unsupported(Exception):
    """The native compiler does not handle this expression: use fhirpathpy instead."""


# =========================================================================== public API


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


def reference_type(reference: Any, root: Any = None) -> str | None:
    """The resource type a Reference points to, as ``resolve() is T`` needs it.

    ``Patient/1``, ``Patient/1/_history/2``, ``http://x/fhir/Patient/1``: the segment before
    the id; ``#id``: the contained resource's type; otherwise ``Reference.type``.
    """
    if not isinstance(reference, dict):
        return None
    ref = reference.get("reference")
    if isinstance(ref, str):
        found = _contained_type(ref, root) if ref.startswith("#") else _url_type(ref)
        if found:
            return found
    declared = reference.get("type")
    if isinstance(declared, str) and declared:
        return declared.rsplit("/", 1)[-1]
    return None


_HISTORY = re.compile(r"/_history/[^/]*$")
_TYPE_NAME = re.compile(r"[A-Z][A-Za-z]+")


def _url_type(ref: str) -> str | None:
    parts = _HISTORY.sub("", ref.split("?", 1)[0]).split("/")
    if len(parts) >= 2 and _TYPE_NAME.fullmatch(parts[-2]) and parts[-1]:
        return parts[-2]
    return None


def _contained_type(ref: str, root: Any) -> str | None:
    if not isinstance(root, dict):
        return None
    for contained in root.get("contained") or ():
        if isinstance(contained, dict) and contained.get("id") == ref[1:]:
            rtype = contained.get("resourceType")
            return rtype if isinstance(rtype, str) else None
    return None


# =========================================================================== the R4 model


@functools.cache
def _model() -> dict[str, dict[str, Any]]:
    from fhirpathpy.models import models

    return models["r4"]


class Member(NamedTuple):
    """How ``<parent type>.<key>`` is read: one key, or the variants of a choice."""

    key: str
    choices: tuple[tuple[str, str], ...]  # (json key, type path) per choice type; () if none
    type_path: str  # of a non-choice element


@functools.cache
def _member(parent: str, key: str) -> Member:
    """Resolve an element exactly as fhirpathpy's member invocation does."""
    model = _model()
    child = f"{parent}.{key}"
    child = model["pathsDefinedElsewhere"].get(child, child)
    choice = model["choiceTypePaths"].get(child)
    if choice:
        variants = tuple((key + t, model["path2Type"].get(child + t, child + t)) for t in choice)
        return Member(key, variants, "")
    if key == "extension":
        return Member(key, (), "Extension")
    return Member(key, (), model["path2Type"].get(child, child))


def _type_name(type_path: str) -> tuple[str, str]:
    """(namespace, name) of a node typed ``type_path`` (fhirpathpy's get_type_info)."""
    if type_path.startswith("System."):
        return "System", type_path[7:]
    if "." not in type_path:
        return "FHIR", type_path
    return "FHIR", "BackboneElement"


@functools.lru_cache(maxsize=4096)  # bounded: reference types come from client data
def _is_a(type_path: str, wanted: str) -> bool:
    """``node is wanted`` for a node typed ``type_path`` (fhirpathpy's TypeInfo.is_)."""
    namespace, name = _type_name(type_path)
    want_ns, _, want_name = wanted.rpartition(".")
    if want_ns and want_ns != namespace:
        return False
    if namespace == "System":
        return name == want_name
    model = _model()
    current: str | None = name
    while current:
        if current == want_name:
            return True
        current = model["type2Parent"].get(current) or model["path2Type"].get(current)
    return False


def _is_primitive(type_path: str) -> bool:
    return type_path[:1].islower() or type_path.startswith("System.")


def _is_resource_type(name: str) -> bool:
    return _is_a(name, "Resource")


# =========================================================================== parsing

_TOKEN = re.compile(
    r"""\s+
    | (?P<str>'(?:[^'\\]|\\.)*')
    | (?P<num>\d+(?:\.\d+)?)
    | (?P<id>[A-Za-z_][A-Za-z0-9_]*|`[^`]+`)
    | (?P<var>%[A-Za-z_][A-Za-z0-9_]*|\$this)
    | (?P<op>!=|[.()\[\]|=,])
    """,
    re.VERBOSE,
)
_ESCAPES = {"'": "'", '"': '"', "`": "`", "\\": "\\", "/": "/", "r": "\r", "n": "\n"}
_ESCAPES |= {"t": "\t", "f": "\f"}


class Token(NamedTuple):
    kind: str  # str | num | id | var | op | end
    text: str
    value: Any = None


def _unescape(body: str) -> str:
    def repl(m: re.Match[str]) -> str:
        esc = m.group(1)
        if esc.startswith("u"):
            return chr(int(esc[1:], 16))
        if esc not in _ESCAPES:
            raise Unsupported(f"string escape \\{esc}")
        return _ESCAPES[esc]

    return re.sub(r"\\(u[0-9a-fA-F]{4}|.)", repl, body)


def tokenize(expression: str) -> list[Token]:
    tokens: list[Token] = []
    pos = 0
    while pos < len(expression):
        m = _TOKEN.match(expression, pos)
        if m is None:
            raise Unsupported(f"unexpected {expression[pos : pos + 10]!r}")
        pos = m.end()
        kind = m.lastgroup
        if kind is None:  # whitespace
            continue
        text = m.group()
        value: Any = text
        if kind == "str":
            value = _unescape(text[1:-1])
        elif kind == "num":
            if "." in text:
                raise Unsupported("decimal literal")
            value = int(text)
        elif kind == "id" and text.startswith("`"):
            value = text[1:-1]
        tokens.append(Token(kind, text, value))
    tokens.append(Token("end", ""))
    return tokens


# AST nodes ------------------------------------------------------------------------------


class Literal(NamedTuple):
    value: Any


class Var(NamedTuple):
    name: str  # %resource, %rootResource, $this


class Call(NamedTuple):
    name: str
    args: tuple[Any, ...]


class Field(NamedTuple):
    name: str


class Index(NamedTuple):
    position: int


class Path(NamedTuple):
    head: Any  # None: the input collection; otherwise an AST node
    steps: tuple[Any, ...]  # Field | Call | Index


class Union(NamedTuple):
    branches: tuple[Any, ...]


class And(NamedTuple):
    left: Any
    right: Any


class Compare(NamedTuple):
    op: str  # = | !=
    left: Any
    right: Any


class IsType(NamedTuple):
    operand: Any
    type_name: str


_UNSUPPORTED_KEYWORDS = frozenset({"or", "xor", "implies", "div", "mod", "in", "contains"})


class Parser:
    """Recursive descent over the FHIRPath subset; anything else raises Unsupported.

    Precedence (FHIRPath): ``.``/``[]`` > ``is``/``as`` > ``|`` > ``=``/``!=`` > ``and``.
    ``x as T`` and ``x.as(T)`` become an ``ofType(T)`` step (the native semantics).
    """

    def __init__(self, expression: str) -> None:
        self.tokens = tokenize(expression)
        self.pos = 0

    def parse(self) -> Any:
        node = self.parse_and()
        if self.peek().kind != "end":
            raise Unsupported(f"unexpected {self.peek().text!r}")
        return node

    def peek(self, ahead: int = 0) -> Token:
        return self.tokens[min(self.pos + ahead, len(self.tokens) - 1)]

    def take(self, text: str | None = None) -> Token:
        token = self.peek()
        if text is not None and token.text != text:
            raise Unsupported(f"expected {text!r}, got {token.text!r}")
        self.pos += 1
        return token

    def at_keyword(self, word: str) -> bool:
        token = self.peek()
        return token.kind == "id" and token.text == word and self.peek(1).text != "("

    def parse_and(self) -> Any:
        node = self.parse_equality()
        while self.at_keyword("and"):
            self.take()
            node = And(node, self.parse_equality())
        if self.peek().kind == "id" and self.peek().text in _UNSUPPORTED_KEYWORDS:
            raise Unsupported(f"operator {self.peek().text}")
        return node

    def parse_equality(self) -> Any:
        node = self.parse_union()
        if self.peek().text in ("=", "!="):
            op = self.take().text
            node = Compare(op, node, self.parse_union())
        return node

    def parse_union(self) -> Any:
        branches = [self.parse_type()]
        while self.peek().text == "|":
            self.take()
            branches.append(self.parse_type())
        return branches[0] if len(branches) == 1 else Union(tuple(branches))

    def parse_type(self) -> Any:
        node = self.parse_postfix()
        while self.at_keyword("as") or self.at_keyword("is"):
            op = self.take().text
            type_name = self.parse_type_name()
            if op == "is":
                node = IsType(node, type_name)
            else:
                node = _append(node, (Call("ofType", (type_name,)),))
        return node

    def parse_type_name(self) -> str:
        parts = [self.take_identifier()]
        while self.peek().text == "." and self.peek(1).kind == "id":
            self.take(".")
            parts.append(self.take_identifier())
        return ".".join(parts)

    def take_identifier(self) -> str:
        token = self.take()
        if token.kind != "id":
            raise Unsupported(f"expected a name, got {token.text!r}")
        return str(token.value)

    def parse_postfix(self) -> Any:
        node = self.parse_term()
        steps: list[Any] = []
        while True:
            if self.peek().text == ".":
                self.take()
                steps.append(self.parse_invocation())
            elif self.peek().text == "[":
                self.take()
                token = self.take()
                if token.kind != "num":
                    raise Unsupported("non-literal index")
                self.take("]")
                steps.append(Index(token.value))
            else:
                return _append(node, tuple(steps)) if steps else node

    def parse_term(self) -> Any:
        token = self.peek()
        if token.text == "(":
            self.take()
            node = self.parse_and()
            self.take(")")
            return node
        if token.kind in ("str", "num"):
            self.take()
            return Literal(token.value)
        if token.kind == "id" and token.text in ("true", "false"):
            self.take()
            return Literal(token.text == "true")
        if token.kind == "var":
            self.take()
            return Var(token.text)
        if token.kind == "id":
            return Path(None, (self.parse_invocation(),))
        raise Unsupported(f"unexpected {token.text!r}")

    def parse_invocation(self) -> Any:
        name = self.take_identifier()
        if self.peek().text != "(":
            return Field(name)
        self.take("(")
        args: list[Any] = []
        while self.peek().text != ")":
            if args:
                self.take(",")
            args.append(self.parse_and())
        self.take(")")
        if name in ("as", "ofType", "is"):
            return Call("ofType" if name != "is" else "is", (_type_arg(args),))
        return Call(name, tuple(args))


def _type_arg(args: list[Any]) -> str:
    """The type specifier argument of as()/ofType()/is(): a dotted name."""
    if len(args) != 1 or not isinstance(args[0], Path) or args[0].head is not None:
        raise Unsupported("type argument")
    if not all(isinstance(step, Field) for step in args[0].steps):
        raise Unsupported("type argument")
    return ".".join(step.name for step in args[0].steps)


def _append(node: Any, steps: tuple[Any, ...]) -> Path:
    """``node`` followed by more steps; a parenthesised path just grows."""
    if isinstance(node, Path):
        return Path(node.head, node.steps + steps)
    return Path(node, steps)


def parse(expression: str) -> Any:
    return Parser(expression).parse()


# =========================================================================== native compiler


class Compiled(NamedTuple):
    fn: Step
    types: Types
    boolean: bool = False  # the result is [] or [bool]


@dataclass(frozen=True)
class Scope:
    """Static context: the input's types, the root resource's type, predicate mode."""

    types: Types
    root_type: str | None
    in_predicate: bool = False


def _compile_node(node: Any, scope: Scope) -> Compiled:
    if isinstance(node, Path):
        return _compile_path(node, scope)
    if isinstance(node, Union):
        return _compile_union(node, scope)
    if isinstance(node, And):
        return _compile_and(node, scope)
    if isinstance(node, Compare):
        return _compile_compare(node, scope)
    if isinstance(node, IsType):
        return _compile_is(node, scope)
    if isinstance(node, Var):
        return _compile_var(node, scope)
    if isinstance(node, Literal):
        value = node.value
        return Compiled(lambda items, root: [value], None)
    raise Unsupported(type(node).__name__)


def _compile_var(node: Var, scope: Scope) -> Compiled:
    if node.name in ("%resource", "%rootResource"):
        if scope.root_type is None:
            raise Unsupported("%resource of an unknown type")
        return Compiled(lambda items, root: [root], (scope.root_type,))
    if node.name == "$this" and scope.in_predicate:
        return Compiled(lambda items, root: items, scope.types)
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
    fns = tuple(_compile_node(b, scope).fn for b in node.branches)

    def union(items: Items, root: Any) -> Items:
        out: Items = []
        for fn in fns:
            out += fn(items, root)
        return _distinct(out)

    # fhirpathpy forgets element types after a union, so nothing typed may follow it.
    return Compiled(union, None)


# --- boolean operators ----------------------------------------------------------------------


def _compile_and(node: And, scope: Scope) -> Compiled:
    left = _compile_node(node.left, scope)
    right = _compile_node(node.right, scope)
    if not (left.boolean and right.boolean):
        raise Unsupported("'and' of non-boolean operands")
    lfn, rfn = left.fn, right.fn

    def and_(items: Items, root: Any) -> Items:
        a = lfn(items, root)
        b = rfn(items, root)
        if (a and a[0] is False) or (b and b[0] is False):
            return [False]
        return [True] if a and b else []  # three-valued: empty means unknown

    return Compiled(and_, None, boolean=True)


def _compile_compare(node: Compare, scope: Scope) -> Compiled:
    if not isinstance(node.right, Literal):
        raise Unsupported("comparison with a non-literal")
    left = _compile_node(node.left, scope)
    if left.boolean or left.types is None or not all(_is_primitive(t) for t in left.types):
        # fhirpathpy compares Quantities and other complex values specially.
        raise Unsupported("comparison of a non-primitive")
    lfn, literal, negate = left.fn, node.right.value, node.op == "!="

    def compare(items: Items, root: Any) -> Items:
        values = lfn(items, root)
        if not values:
            return []
        equal = len(values) == 1 and values[0] == literal
        return [equal is not negate]

    return Compiled(compare, None, boolean=True)


def _compile_is(node: IsType, scope: Scope) -> Compiled:
    """Only ``resolve() is T`` (inside where()) is native: the search 'target type' test."""
    operand = node.operand
    if not (
        scope.in_predicate
        and isinstance(operand, Path)
        and operand.head is None
        and operand.steps == (Call("resolve", ()),)
    ):
        raise Unsupported("'is' other than resolve() is T")
    wanted = node.type_name

    def resolves_to(items: Items, root: Any) -> Items:
        if not items:
            return []
        found = reference_type(items[0], root)
        return [_is_a(found, wanted)] if found else []

    return Compiled(resolves_to, None, boolean=True)


# --- paths ----------------------------------------------------------------------------------


def _compile_path(node: Path, scope: Scope) -> Compiled:
    if node.head is None:
        fns: list[Step] = []
        types = scope.types
    else:
        head = _compile_node(node.head, scope)
        if head.boolean and node.steps:
            raise Unsupported("navigation from a boolean")
        fns, types = [head.fn], head.types
    steps = list(node.steps)
    boolean = False
    if node.head is None and steps and isinstance(steps[0], Field) and steps[0].name[0].isupper():
        fn, types = _type_filter_root(steps.pop(0).name, types)
        fns.append(fn)
    i = 0
    while i < len(steps):
        if boolean:
            raise Unsupported("navigation from a boolean")
        step = steps[i]
        if isinstance(step, Field):
            fn, types, i = _compile_field(step.name, steps, i, types)
        else:
            fn, types, boolean = _compile_function(step, types, scope)
            i += 1
        fns.append(fn)
    # exists()/empty() (always last: nothing navigates from a boolean) answer on empty input.
    chain = _chain(fns[:-1], fns[-1]) if boolean else _chain(fns)
    return Compiled(chain, types, boolean)


def _chain(fns: list[Step], last: Step | None = None) -> Step:
    """Run steps in turn, stopping at the first empty result (navigation of nothing is
    nothing); ``last`` always runs."""
    if last is not None:
        head = _chain(fns)

        def chain_then(items: Items, root: Any) -> Items:
            return last(head(items, root), root)

        return chain_then
    if not fns:
        return lambda items, root: items
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
    if not _is_resource_type(name) or types is None:
        raise Unsupported(f"leading {name}")
    if name in ("Resource", "DomainResource"):
        kept = tuple(t for t in types if _is_a(t, name))
        if any(not _is_resource_type(t) or t in ("Resource", "DomainResource") for t in kept):
            raise Unsupported(f"{name} of an abstract input")

        def is_kind(items: Items, root: Any) -> Items:
            return [x for x in items if isinstance(x, dict) and _is_a_resource(x, name)]

        return is_kind, kept

    def is_type(items: Items, root: Any) -> Items:
        return [x for x in items if isinstance(x, dict) and x.get("resourceType") == name]

    return is_type, (name,)


def _is_a_resource(resource: dict[str, Any], wanted: str) -> bool:
    rtype = resource.get("resourceType")
    return isinstance(rtype, str) and _is_a(rtype, wanted)


def _compile_field(name: str, steps: list[Any], i: int, types: Types) -> tuple[Step, Types, int]:
    """One element step; a choice element also swallows the type filters that follow it."""
    if types is None or not types:
        raise Unsupported(f"{name} of an untyped collection")
    if name[0].isupper():
        raise Unsupported(f"member {name}")  # fhirpathpy filters by resourceType
    if name == "length" and any(_is_primitive(t) for t in types):
        raise Unsupported("length of a primitive")  # fhirpathpy: the string's length
    if any(t in ("Resource", "DomainResource") for t in types):
        raise Unsupported(f"{name} of a resource of unknown type")
    members = {_member(t, name) for t in types}
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
        variants = tuple(v for v in variants if _is_a(v[1], wanted))
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

    if len(types) == 1 and not _is_primitive(types[0]):
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
    raise Unsupported(f"function {name}()")


def _compile_of_type(wanted: str, types: Types) -> tuple[Step, Types, bool]:
    """ofType/as on non-choice nodes: decided statically, or by resourceType at run time."""
    if types is None:
        raise Unsupported("ofType of an untyped collection")
    if all(t in ("Resource", "DomainResource") for t in types) and _is_resource_type(wanted):

        def of_resource_type(items: Items, root: Any) -> Items:
            return [x for x in items if isinstance(x, dict) and _is_a_resource(x, wanted)]

        return of_resource_type, (wanted,), False
    kept = tuple(t for t in types if _is_a(t, wanted))
    if not kept:
        return (lambda items, root: []), (), False
    if len(kept) != len(types):
        raise Unsupported("ofType that depends on each node's type")
    return (lambda items, root: items), kept, False


def _compile_where(predicate: Any, types: Types, scope: Scope) -> Step:
    inner = _compile_node(predicate, Scope(types, scope.root_type, in_predicate=True))
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


# =========================================================================== entry points


def _native(expression: str, base: str) -> Evaluator:
    scope = Scope((base,), base.split(".", 1)[0])
    fn = _compile_node(parse(expression), scope).fn

    def evaluate(node: Any, resource: Any = None) -> Items:
        return fn([node], node if resource is None else resource)

    return evaluate


@functools.lru_cache(maxsize=8192)
def _compile(expression: str, base: str) -> tuple[Evaluator, bool]:
    try:
        return _native(expression, base), True
    except Unsupported:
        return _Fallback(expression, base), False


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
                else _Fallback(expression, None)
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
        typed = [_single_typed(_compile_node(parse(b), scope)) for b in branches]
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
    finders = [_Fallback(b, base) for b in branches]

    def rows(resource: Any) -> CompositeRows:
        out: CompositeRows = []
        for finder in finders:
            for node, type_path in finder.typed(resource):
                comps = [compile_expression(c, type_path) for c in components]
                out.append(tuple(comp(node, resource) for comp in comps))
        return out

    return rows


def split_union(expression: str) -> list[str]:
    """Source text of the top-level ``|`` branches (quotes and parens respected)."""
    branches: list[str] = []
    depth, start, quote, i = 0, 0, "", 0
    while i < len(expression):
        ch = expression[i]
        if quote:
            if ch == "\\":
                i += 1
            elif ch == quote:
                quote = ""
        elif ch in "'`":
            quote = ch
        elif ch in "([":
            depth += 1
        elif ch in ")]":
            depth -= 1
        elif ch == "|" and depth == 0:
            branches.append(expression[start:i].strip())
            start = i + 1
        i += 1
    branches.append(expression[start:].strip())
    return [b for b in branches if b]


# =========================================================================== fhirpathpy fallback

_ROOT: contextvars.ContextVar[Any] = contextvars.ContextVar("fhirpath_root", default=None)
# fhirpathpy keeps evaluation state in module globals (TypeInfo.model, constants).
_FHIRPATHPY_LOCK = threading.Lock()
_ABSTRACT_HEAD = re.compile(r"(^|[|(]\s*)(Resource|DomainResource)\.")
_AS_OPERATOR = re.compile(r"\s+as\s+([A-Za-z][A-Za-z.]*)")


def _resolve_stub(inputs: Items) -> Items:
    """``resolve()`` for fhirpathpy: the contained resource, or a typed empty stand-in."""
    from fhirpathpy.engine.nodes import ResourceNode

    root = _ROOT.get()
    out: Items = []
    for ref in inputs:
        if isinstance(ref, dict) and str(ref.get("reference", "")).startswith("#"):
            for contained in (root or {}).get("contained") or ():
                if isinstance(contained, dict) and contained.get("id") == ref["reference"][1:]:
                    out.append(ResourceNode.create_node(contained))
                    break
            continue
        rtype = reference_type(ref, root)
        if rtype:
            out.append(ResourceNode.create_node({"resourceType": rtype}))
    return out


class _Fallback:
    """fhirpathpy, compiled once per (expression, resource type), results unwrapped."""

    def __init__(self, expression: str, base: str | None) -> None:
        self.expression = expression
        self.base = base
        self._compiled: dict[tuple[str, bool], Callable[..., Items]] = {}

    def __call__(self, node: Any, resource: Any = None) -> Items:
        return [data for data, _ in self.typed(node, resource)]

    def typed(self, node: Any, resource: Any = None) -> list[tuple[Any, str]]:
        """(value, type path) of each result, dropping value-less primitive nodes."""
        from fhirpathpy.engine.nodes import ResourceNode

        root = node if resource is None else resource
        rtype = root.get("resourceType") if isinstance(root, dict) else None
        rtype_key = rtype if isinstance(rtype, str) else ""
        fn = self._function(rtype_key)
        # A resource goes in as is: fhirpathpy's `Patient.` filter reads raw dicts only.
        typed = self.base and not (isinstance(node, dict) and "resourceType" in node)
        start = ResourceNode.create_node(node, self.base) if typed else node
        context = {"resource": root, "rootResource": root}
        token = _ROOT.set(root)
        try:
            with _FHIRPATHPY_LOCK:
                try:
                    raw = fn(start, context)
                except ValueError as exc:
                    if "Expected singleton on left side of 'as'" not in str(exc):
                        raise
                    raw = self._function(rtype_key, as_filters=True)(start, context)
        finally:
            _ROOT.reset(token)
        out: list[tuple[Any, str]] = []
        for item in raw:
            if not isinstance(item, ResourceNode):
                out.append((item, ""))
            elif item.data is not None and not (
                isinstance(item.data, dict) and item.path and _is_primitive(item.path)
            ):
                out.append((item.data, item.path or ""))
        return out

    def _function(self, resource_type: str, as_filters: bool = False) -> Callable[..., Items]:
        """fhirpathpy's compiled expression, with ``Resource.`` made concrete and, when
        ``as_filters``, ``as T`` turned into ``ofType(T)`` (fhirpathpy raises on several)."""
        fn = self._compiled.get((resource_type, as_filters))
        if fn is None:
            import fhirpathpy

            text = self.expression
            if as_filters:
                text = _AS_OPERATOR.sub(r".ofType(\1)", text).replace(".as(", ".ofType(")
            if resource_type and _is_resource_type(resource_type):
                text = _ABSTRACT_HEAD.sub(
                    lambda m: (
                        m.group(1)
                        + (resource_type if _is_a(resource_type, m.group(2)) else m.group(2))
                        + "."
                    ),
                    text,
                )
            options = {
                "returnRawData": True,
                "userInvocationTable": {"resolve": {"fn": _resolve_stub}},
            }
            fn = fhirpathpy.compile(text, model=_model(), options=options)
            self._compiled[(resource_type, as_filters)] = fn
        return fn
