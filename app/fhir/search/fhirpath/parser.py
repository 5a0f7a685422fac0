"""The FHIRPath subset of search expressions: tokens, syntax tree, recursive-descent parser;
anything outside the subset raises :class:`Unsupported` (the caller falls back to fhirpathpy).
Also the text-level union splitter the search-parameter generator shares."""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any, NamedTuple


class Unsupported(Exception):
    """The native compiler does not handle this expression: use fhirpathpy instead."""


_TOKEN = re.compile(
    r"""\s+
    | (?P<str>'(?:[^'\\]|\\.)*')
    | (?P<num>\d+(?:\.\d+)?)
    | (?P<id>[A-Za-z_][A-Za-z0-9_]*|`[^`]+`)
    | (?P<var>%[A-Za-z_][A-Za-z0-9_]*|\$this)
    | (?P<op>!=|<=|>=|[.()\[\]{}|=,<>+&])
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
            # a Decimal keeps the literal's precision: 1.50 is written and compared as 1.50
            value = Decimal(text) if "." in text else int(text)
        elif kind == "id" and text.startswith("`"):
            value = text[1:-1]
        tokens.append(Token(kind, text, value))
    tokens.append(Token("end", ""))
    return tokens


# AST nodes ------------------------------------------------------------------------------


class Literal(NamedTuple):
    value: Any


class Empty(NamedTuple):
    """``{}``: the empty collection (N1 "Literals", the grammar's nullLiteral)."""


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
    op: str  # = | != | < | > | <= | >=
    left: Any
    right: Any


class Plus(NamedTuple):
    """``+`` (of counts, in the invariants)."""

    left: Any
    right: Any


class Concat(NamedTuple):
    """``&``: string concatenation, an empty operand counting as ``''``."""

    left: Any
    right: Any


class OnThis(NamedTuple):
    """``left.f(args)`` where the arguments are evaluated on ``$this`` (the input of the whole
    path: the context, or the item of the enclosing where()/all()/select()), not on ``left``,
    the function's focus (N1: only a parameter of type ``expression`` iterates the focus;
    fhirpath.js, HAPI and Firely evaluate the others against ``$this``). The collection
    functions (``combine``, ``union``, ``intersect``, ``exclude``, ``subsetOf``,
    ``supersetOf``) and the string tests given a computed argument take this form."""

    left: Any
    call: Any  # Call


# Functions whose arguments are collections evaluated on $this (see OnThis).
COLLECTION_FUNCTIONS = frozenset(
    {"combine", "union", "intersect", "exclude", "subsetOf", "supersetOf"}
)
# Functions of one string argument: a literal one stays a plain step, a computed one is OnThis.
STRING_TEST_NAMES = frozenset({"matches", "startsWith", "endsWith", "contains"})


class Logic(NamedTuple):
    """``or``, ``xor``, ``implies`` (``and`` is :class:`And`, which search expressions use)."""

    op: str
    left: Any
    right: Any


class IsType(NamedTuple):
    operand: Any
    type_name: str


_UNSUPPORTED_KEYWORDS = frozenset({"div", "mod"})
_ORDERING = frozenset({"<", ">", "<=", ">="})


class Parser:
    """Recursive descent over the FHIRPath subset; anything else raises Unsupported.

    Precedence: N1's table (``.``/``[]`` > ``+``/``&`` > ``is``/``as`` > ``|`` >
    ``<``/``>``/``<=``/``>=`` > ``=``/``!=`` > ``in``/``contains`` > ``and`` > ``or``/``xor``
    > ``implies``), which is the order of the alternatives of ``expression`` in N1's ANTLR
    grammar (fhirpath.g4: ``#typeExpression`` before ``#unionExpression``), so
    ``1 > 2 is Boolean`` is ``1 > (2 is Boolean)``. ``is T``/``as T`` is a suffix there, and
    ANTLR goes on matching operators after it: those that bind tighter (``.``, ``[]``, ``+``,
    ``&``) take the type expression as their left operand (``x as T.exists()`` is
    ``(x as T).exists()``, ``x is T + 1`` is ``(x is T) + 1``); a dotted name stops before a
    function call (``T.exists(`` is not a type name).
    ``x as T`` and ``x.as(T)`` become an ``ofType(T)`` step (the native semantics).
    """

    def __init__(self, expression: str) -> None:
        self.tokens = tokenize(expression)
        self.pos = 0

    def parse(self) -> Any:
        node = self.parse_implies()
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
        """The operator `word` here; `as(` and `is(` are the functions of the same name,
        while `and (`, `or (` ... are operators before a parenthesis."""
        token = self.peek()
        if token.kind != "id" or token.text != word:
            return False
        return word not in ("as", "is") or self.peek(1).text != "("

    def parse_implies(self) -> Any:
        node = self.parse_or()
        while self.at_keyword("implies"):
            self.take()
            node = Logic("implies", node, self.parse_or())
        return node

    def parse_or(self) -> Any:
        node = self.parse_and()
        while self.at_keyword("or") or self.at_keyword("xor"):
            op = self.take().text
            node = Logic(op, node, self.parse_and())
        return node

    def parse_and(self) -> Any:
        node = self.parse_membership()
        while self.at_keyword("and"):
            self.take()
            node = And(node, self.parse_membership())
        if self.peek().kind == "id" and self.peek().text in _UNSUPPORTED_KEYWORDS:
            raise Unsupported(f"operator {self.peek().text}")
        return node

    def parse_membership(self) -> Any:
        node = self.parse_equality()
        if self.at_keyword("in") or self.at_keyword("contains"):
            op = self.take().text
            node = Compare(op, node, self.parse_equality())
        return node

    def parse_equality(self) -> Any:
        node = self.parse_ordering()
        if self.peek().text in ("=", "!="):
            op = self.take().text
            node = Compare(op, node, self.parse_ordering())
        return node

    def parse_ordering(self) -> Any:
        node = self.parse_union()
        if self.peek().kind == "op" and self.peek().text in _ORDERING:
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
        node = self.parse_additive()
        while self.at_keyword("as") or self.at_keyword("is"):
            op = self.take().text
            type_name = self.parse_type_name()
            if op == "is":
                node = IsType(node, type_name)
            else:
                node = _append(node, (Call("ofType", (type_name,)),))
            # the grammar's loop after a suffix: tighter operators take it as left operand
            node = self.parse_additive(self.parse_postfix(node))
        return node

    def parse_additive(self, first: Any = None) -> Any:
        node = self.parse_postfix() if first is None else first
        while self.peek().text in ("+", "&"):
            op = self.take().text
            node = (Plus if op == "+" else Concat)(node, self.parse_postfix())
        return node

    def parse_type_name(self) -> str:
        parts = [self.take_identifier()]
        # `T.exists()`: the name ends before a function, which applies to the type expression
        while self.peek().text == "." and self.peek(1).kind == "id" and self.peek(2).text != "(":
            self.take(".")
            parts.append(self.take_identifier())
        return ".".join(parts)

    def take_identifier(self) -> str:
        token = self.take()
        if token.kind != "id":
            raise Unsupported(f"expected a name, got {token.text!r}")
        return str(token.value)

    def parse_postfix(self, term: Any = None) -> Any:
        node = self.parse_term() if term is None else term
        steps: list[Any] = []
        while True:
            if self.peek().text == ".":
                self.take()
                step = self.parse_invocation()
                if _on_this(step):
                    node, steps = OnThis(_append(node, tuple(steps)), step), []
                    continue
                if isinstance(step, Call) and step.name == "is":  # x.is(T) is x is T
                    node, steps = IsType(_append(node, tuple(steps)), step.args[0]), []
                    continue
                steps.append(step)
            elif self.peek().text == "[":
                self.take()
                token = self.take()
                if token.kind != "num" or not isinstance(token.value, int):
                    raise Unsupported("non-literal index")
                self.take("]")
                steps.append(Index(token.value))
            else:
                return _append(node, tuple(steps)) if steps else node

    def parse_term(self) -> Any:
        token = self.peek()
        if token.text == "(":
            self.take()
            node = self.parse_implies()
            self.take(")")
            return node
        if token.kind in ("str", "num"):
            self.take()
            return Literal(token.value)
        if token.text == "{":
            self.take()
            self.take("}")
            return Empty()
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
            args.append(self.parse_implies())
        self.take(")")
        if name in ("as", "ofType", "is"):
            return Call("ofType" if name != "is" else "is", (_type_arg(args),))
        return Call(name, tuple(args))


def _on_this(step: Any) -> bool:
    if not isinstance(step, Call) or len(step.args) != 1:
        return False
    if step.name in COLLECTION_FUNCTIONS:
        return True
    return step.name in STRING_TEST_NAMES and not isinstance(step.args[0], Literal)


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
