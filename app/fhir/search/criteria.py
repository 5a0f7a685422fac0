"""Search criteria planned for SQL: one builder per parameter type, over the index tables.

Every criterion answers "does the resource (owner_type, owner_id) match?" as a boolean SQL
expression, so criteria compose freely: AND across parameters, OR across values, and chains
/ reverse chains simply nest a criterion on another resource's id.

Two steps, so that the next search of the same shape can reuse the SQL (engine.py):
1. `plan(c, base_url)`: plain Python data (nested tuples, cheap) naming the SQL needed, each
   searched value wrapped as `Value(...)`. Every decision that depends on a value (token
   `system|code` or `|code`, date prefix, absolute reference, ...) is taken here, so plans
   that differ only in their `Value`s need the same SQL.
2. `plan_sql(plan, owner, ...)` (sql.py): SQLAlchemy over the index tables. A `Value` is
   bound inline; a `Slot` (where `split` took a Value out) is the parameter `:v<n>`, given
   at execution.

Plan nodes, criterion level (tag first):
  ("index", kind, name, mode, cond)   rows of index table `kind` for parameter `name`; mode:
        match | not (token :not) | missing (:missing=true) | present (:missing=false)
  ("id", Value(ids), negate)          the resource id (_id, _id:not)
  ("updated", cond)                   the resource's lastUpdated (cond over "low" / "high")
  ("chain", name, ((target_type, plan), ...))   a reference whose target matches a plan
  ("has", source_type, param, plan)   referenced by a resource that matches a plan (_has)
  ("true",) / ("false",)
Conditions on one index row (`cond`), columns by name:
  ("cmp", op, column, Value)  op: = < <= > >=       ("null", column)
  ("like", column, Value)     ("in", column, Value(tuple))      ("differs", column, column)
  ("starts", column, Value(prefix), Value(LIKE pattern))   the column starts with prefix,
        case and all (sql.py: LIKE where that has case, as on PostgreSQL)
  ("and", (cond, ...)) ("or", (cond, ...)) ("not", cond) ("true",) ("false",)
  ("view", ((name, column), ...), cond)   names in cond mean other columns (composites)
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from app.errors import InvalidRequest
from app.fhir import ucum
from app.fhir.search import values
from app.fhir.search.params import RESOURCE_COLUMNS, Criterion

Owner = tuple[Any, Any]  # (resource type: str or column, resource id: column)
Plan = tuple[Any, ...]
_UNESCAPED_DOLLAR = re.compile(r"(?<!\\)\$")
_PREFIXED = re.compile(r"^(eq|ne|gt|lt|ge|le|sa|eb|ap)(?=[-+0-9.])")
_ESCAPED = re.compile(r"\\(.)")
TRUE: Plan = ("true",)
FALSE: Plan = ("false",)


@dataclass(frozen=True, eq=False)  # never compared: split() replaces every one by a Slot
class Value:
    """A value from the request, as it will be bound."""

    value: Any


@dataclass(frozen=True)
class Slot:
    """Where split() took a Value out: rendered as the parameter `:v<index>`."""

    index: int


def split(node: Any, first: int = 0) -> tuple[Any, list[Any]]:
    """(the plan with each Value replaced by a numbered Slot, from `first` on; the values in
    slot order). The first part is hashable: equal for plans that need the same SQL."""
    found: list[Any] = []

    def walk(item: Any) -> Any:
        if isinstance(item, Value):
            found.append(list(item.value) if isinstance(item.value, tuple) else item.value)
            return Slot(first + len(found) - 1)
        if isinstance(item, tuple):
            return tuple([walk(i) for i in item])
        return item

    return walk(node), found


# ------------------------------------------------------------------ planning


def plan(c: Criterion, base_url: str) -> Plan:
    """The criterion's plan; a value it cannot search by (a date that is no date, ...) is a
    400 located in the query parameter as written (`subject.birthdate`, `date`)."""
    try:
        return _plan(c, base_url)
    except InvalidRequest as error:
        if any(issue.expression for issue in error.issues):
            raise
        raise InvalidRequest(error.message, expression=c.key()) from error


def _plan(c: Criterion, base_url: str) -> Plan:
    if c.has_type:
        assert c.chain is not None
        return ("has", c.has_type, c.has_param, _plan(c.chain, base_url))
    if c.chain is not None:
        return ("chain", c.name, tuple((t, _plan(inner, base_url)) for t, inner in c.targets))
    if c.name in RESOURCE_COLUMNS and c.modifier == "missing":
        return FALSE if c.values == ("true",) else TRUE  # every resource has both
    if c.name == "_id":
        return ("id", Value(c.values), c.modifier == "not")
    if c.name == "_lastUpdated":
        return ("updated", ("or", tuple(_date_condition(v) for v in c.values)))
    kind = c.kind.split(":")[0]
    if c.modifier == "missing":
        return ("index", kind, c.name, "missing" if c.values == ("true",) else "present", TRUE)
    match = ("or", tuple(_value_plan(c, v, base_url) for v in c.values))
    mode = "not" if c.kind == "token" and c.modifier == "not" else "match"
    return ("index", kind, c.name, mode, match)


def _value_plan(c: Criterion, value: str, base_url: str) -> Plan:
    if c.kind.startswith("composite:"):
        return _composite(value, c.kind.split(":")[1], base_url)
    found = _BUILDERS[c.kind](value, c.modifier, base_url)
    if c.implied_system and c.modifier in (None, "not"):
        parts = split_token(value)
        if len(parts) == 2 and parts[0] == c.implied_system and parts[1]:
            # a code element's rows hold no system: the one its value set implies
            return _or(found, _and(("null", "system"), _eq("code", _as_indexed(parts[1]))))
    return found


def _eq(column: str, value: Any) -> Plan:
    return ("cmp", "=", column, Value(value))


def _and(*conds: Plan) -> Plan:
    return ("and", conds)


def _or(*conds: Plan) -> Plan:
    return ("or", conds)


# ------------------------------------------------------------------ composite

_FIRST = (("system", "c1_system"), ("code", "c1_code"))
_SECOND = (
    ("system", "c2_system"), ("code", "c2_code"), ("value", "c2_value"), ("unit", "c2_unit"),
    ("canonical_value", "c2_canonical_value"), ("canonical_code", "c2_canonical_code"),
    ("low", "c2_low"), ("high", "c2_high"), ("exact", "c2_text"),
)  # fmt: skip
_SECOND_STRING = tuple((n, "c2_text" if n == "value" else col) for n, col in _SECOND)


def _composite(value: str, second: str, base_url: str) -> Plan:
    """`code$value` reuses the token and quantity/date/string builders unchanged, with their
    column names mapped to the composite table's columns."""
    parts = _UNESCAPED_DOLLAR.split(value)
    if len(parts) != 2:
        raise InvalidRequest(f"'{value}' must be two values joined by '$'")
    if not parts[0]:  # `$5`: a token that names nothing matched no row at all
        raise InvalidRequest(f"'{value}' has no code before '$'")
    first = ("view", _FIRST, _token(parts[0], None, base_url))
    view = _SECOND_STRING if second == "string" else _SECOND
    return _and(first, ("view", view, _BUILDERS[second](parts[1], None, base_url)))


# ------------------------------------------------------------------ token


def split_token(value: str) -> list[str]:
    """Split on unescaped '|' and resolve the escapes ('\\|', '\\$', '\\\\')."""
    parts, current, escaped = [], "", False
    for char in value:
        if escaped:
            current, escaped = current + char, False
        elif char == "\\":
            escaped = True
        elif char == "|":
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current + ("\\" if escaped else ""))
    return parts


def unescape(value: str) -> str:
    """A single (unsplit) value with its escapes resolved: 'Pipe\\|Line' -> 'Pipe|Line'."""
    return _ESCAPED.sub(r"\1", value)


def _token(value: str, modifier: str | None, _base: str) -> Plan:
    if modifier == "text":
        # R4: a string search on the code's text, so the whole (folded) text equals or starts
        # with the value, as `name=` does; not a word anywhere in it. LIKE rather than the
        # string range: `display` keeps the database's collation, under which a range on
        # PostgreSQL is no prefix test.
        text = _folded(unescape(value))
        return ("like", "display", Value(f"{_like_escape(text)}%"))
    parts = split_token(value)
    if modifier == "of-type":
        if len(parts) != 3 or not all(parts):  # R4: "All 3 parts must be present"
            raise InvalidRequest(f":of-type needs system|code|value, got '{value}'")
        type_match = _and(_eq("type_system", parts[0]), _eq("type_code", parts[1]))
        return _and(type_match, _eq("code", _as_indexed(parts[2])))
    if len(parts) == 1:
        return _eq("code", _as_indexed(parts[0]))
    system, code = _as_indexed(parts[0]), _as_indexed("|".join(parts[1:]))
    if not system and not code:  # `|` alone: it matched every row without a system
        raise InvalidRequest(f"'{value}' names neither a system nor a code")
    conditions = [("null", "system") if system == "" else _eq("system", system)]
    if code:
        conditions.append(_eq("code", code))
    return _and(*conditions)


def _as_indexed(code: str) -> str:
    """A token system or code cut as the index cuts it (values.capped)."""
    return values.capped(code, values.CODE_BYTES)


# ------------------------------------------------------------------ string, uri


def _string(value: str, modifier: str | None, _base: str) -> Plan:
    value = unescape(value)
    if modifier == "exact":
        return _eq("exact", values.canonical_text(value))
    normalized = _folded(value)
    if modifier == "contains":
        return ("like", "value", Value(f"%{_like_escape(normalized)}%"))
    return _prefix_range("value", normalized)


def _folded(value: str) -> str:
    """The value as string search compares it (values.normalize, cut as indexed). One that
    folds to nothing (spaces, combining accents alone) matched every value: a criterion
    silently dropped, as `name=` would be; it is refused like that one."""
    folded = values.capped(values.normalize(value))
    if not folded:
        raise InvalidRequest(f"'{value}' has nothing to search for (spaces or accents only)")
    return folded


def _uri(value: str, modifier: str | None, _base: str) -> Plan:
    value = values.capped(unescape(value))  # as indexed
    if modifier == "below":  # the searched uri or anything under it, by path segment
        # With or without its trailing slash, as for :above: `x/` is at `x`, not under it.
        stem = value.rstrip("/")
        return _or(_eq("value", stem), _prefix_range("value", stem + "/"))
    if modifier == "above":  # the searched uri or one of its path ancestors
        return ("in", "value", Value(tuple(uri_ancestors(value))))
    return _eq("value", value)


def uri_ancestors(uri: str) -> list[str]:
    """'http://a.org/fhir/ValueSet/1' -> itself (and '.../ValueSet/1/'),
    'http://a.org/fhir/ValueSet/', '.../ValueSet', ... 'http://a.org': every path prefix (with
    and without its trailing slash)."""
    scheme_end = uri.find("://")
    start = scheme_end + 3 if scheme_end >= 0 else 0
    stem = uri.rstrip("/")
    found = {uri, stem, stem + "/"}  # the uri itself, with or without its trailing slash
    for i, char in enumerate(uri):
        if char == "/" and i > start:
            found.update((uri[:i], uri[: i + 1]))
    return sorted(found)


def _prefix_range(column: str, prefix: str) -> Plan:
    """column starts with prefix, as an index-friendly range: [prefix, prefix-successor)."""
    if not prefix:
        return TRUE
    successor = _successor(prefix)
    if successor is None:  # only U+10FFFF: every text from the prefix on starts with it
        return ("cmp", ">=", column, Value(prefix))
    return _and(("cmp", ">=", column, Value(prefix)), ("cmp", "<", column, Value(successor)))


_LAST_CHAR = 0x10FFFF
_SURROGATES = (0xD800, 0xE000)  # no text holds one: U+D7FF is followed by U+E000


def _successor(prefix: str) -> str | None:
    """The least text greater than every text that starts with `prefix` (in code point
    order, which is UTF-8's byte order): its last character one up. That character was
    `chr(last + 1)`: after U+10FFFF no character (a 500), after U+D7FF a surrogate, which
    no database takes (a 500 as well); None when nothing is greater."""
    stem = prefix.rstrip(chr(_LAST_CHAR))
    if not stem:
        return None
    following = ord(stem[-1]) + 1
    if following == _SURROGATES[0]:
        following = _SURROGATES[1]
    return stem[:-1] + chr(following)


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


# ------------------------------------------------------------------ reference


def _reference(value: str, modifier: str | None, base_url: str) -> Plan:
    if modifier == "identifier":
        parts = split_token(value)
        if len(parts) == 1:
            return _eq("identifier_value", parts[0])
        given = "|".join(parts[1:])
        if not parts[0] and not given:  # as for a token: `|` alone matched every reference
            raise InvalidRequest("'|' names neither a system nor a value")
        system = _eq("identifier_system", parts[0]) if parts[0] else ("null", "identifier_system")
        return _and(system, _eq("identifier_value", given)) if given else system
    local = local_plan(base_url)
    # A reference search compares the resource named, never its version (docs/search.md,
    # "Versioned references"; version_notes says so in the answer): `Patient/1/_history/2`
    # is Patient/1, as the index holds every reference (versioned or not) by type and id.
    if modifier:  # :[Type]
        # `subject:Patient=Patient/1` names the type twice: the same as `subject:Patient=1`
        # (it matched nothing: the id was taken to be "Patient/1")
        value = value.removeprefix(f"{modifier}/")
        named = values.versionless(f"{modifier}/{value}")[len(modifier) + 1 :]
        if "/" in named:  # `subject:Group=Patient/1`: no id holds a slash
            raise InvalidRequest(f"'{value}' is not the id of a {modifier}")
        return _and(_eq("target_type", modifier), _eq("target_id", named), local)
    value = values.versionless(value)
    if base_url and value.startswith(base_url + "/"):
        value = value[len(base_url) + 1 :]
    if value.startswith(("http:", "https:", "urn:")):
        if "|" in value:  # a canonical with its version: that version only
            return _eq("url", value)
        # Without one: the canonical in any version too (url|version is how one is stored),
        # and a reference to another server's resource in any version (its url as written)
        # (`starts`, not a range: `url` keeps the database's collation, under which a range
        # is no prefix test on PostgreSQL unless that collation is C, as it is in the tests:
        # under en-US, `url|2.0` and `…/_history/2` fell outside theirs and were missed)
        anyhow = [_eq("url", value), _starts("url", value + "|")]
        if values.parse_reference(value)[0] is not None:
            anyhow.append(_starts("url", value + "/_history/"))
        return _or(*anyhow)
    rtype, rid = values.parse_reference(value)
    if rtype:
        return _and(_eq("target_type", rtype), _eq("target_id", rid), local)
    if "/" in value:  # `Patient/`, `/1`, `patient/1`: no id can hold a slash
        raise InvalidRequest(f"'{value}' is not an id, a Type/id or an absolute URL")
    return _and(_eq("target_id", value), local)


def version_notes(criteria: tuple[Criterion, ...]) -> list[str]:
    """A warning per reference search value that names a version (compared without it)."""
    notes = []
    for c in criteria:
        if c.chain is not None:
            notes += version_notes((c.chain,))
        elif c.kind == "reference" and c.modifier != "identifier":
            typed = f"{c.modifier}/" if c.modifier else ""  # subject:Patient=1/_history/2
            notes += [
                f"{c.key()}={value}: a reference search compares the resource, not its "
                f"version: references to any version of it match"
                for value in c.values
                if "/_history/" in value
                and values.versionless(typed + value.removeprefix(typed)) != typed + value
            ]
    return notes


def local_plan(base_url: str) -> Plan:
    """See sql.is_local. `starts`, not LIKE: SQLite's LIKE ignores case, so a reference to
    `http://host/FHIR/Patient/1` was taken for one of ours under `http://host/fhir` (in
    searches, includes and patient compartments) on SQLite only; a URL's path has case."""
    if not base_url:
        return TRUE
    return _or(("null", "url"), _starts("url", base_url + "/"))


def _starts(column: str, prefix: str) -> Plan:
    """The column starts with prefix, case and all, whatever its collation (sql.py)."""
    return ("starts", column, Value(prefix), Value(_like_escape(prefix) + "%"))


# ------------------------------------------------------------------ date


def _date_condition(raw: str) -> Plan:
    """On the columns "low" and "high": the indexed value's range [low, high)."""
    prefix, text = _prefix(raw)
    span = values.date_range(text)
    if span is None:
        raise InvalidRequest(f"'{text}' is not a valid date")
    p_low, p_high = span
    within = _and(("cmp", ">=", "low", Value(p_low)), ("cmp", "<=", "high", Value(p_high)))
    simple = {
        "gt": ("high", ">", p_high), "lt": ("low", "<", p_low),
        "sa": ("low", ">=", p_high), "eb": ("high", "<=", p_low),
    }  # fmt: skip
    if prefix in simple:
        column, op, bound = simple[prefix]
        return ("cmp", op, column, Value(bound))
    if prefix == "eq":
        return within
    if prefix == "ne":
        return ("not", within)
    if prefix == "ge":
        return _or(("cmp", ">", "high", Value(p_high)), within)
    if prefix == "le":
        return _or(("cmp", "<", "low", Value(p_low)), within)
    now = int(datetime.now(UTC).timestamp() * 1_000_000)
    slack = abs(now - p_low) // 10  # ap: within 10% of the distance to now
    return _and(
        ("cmp", ">", "high", Value(p_low - slack)), ("cmp", "<", "low", Value(p_high + slack))
    )


def _prefix(raw: str) -> tuple[str, str]:
    match = _PREFIXED.match(raw)
    return (match.group(1), raw[2:]) if match else ("eq", raw)


# ------------------------------------------------------------------ number, quantity


def _number_condition(raw: str, column: str = "value", scale: Decimal | None = None) -> Plan:
    """On `column` ("value"). `scale`: the indexed values are the searched number times this
    (a UCUM quantity in base units): the range the number's precision and prefix give is
    taken first, in the unit written, and then scaled (`eq5.4|...|mg` is [5.35, 5.45) mg)."""
    prefix, text = _prefix(raw)
    parsed = values.to_decimal(text)
    if parsed is None:
        raise InvalidRequest(f"'{text}' is not a number")
    number = values.bounded(parsed)  # 1e9999999 would overflow the arithmetic below

    def at(bound: Decimal) -> Value:
        # scaled as the index scales (values.canonical_quantity): the same digits kept, so a
        # stored value on a bound compares as that bound does
        return Value(
            values.bounded(bound if scale is None else ucum.CONTEXT.multiply(bound, scale))
        )

    # Precision comes from how the number was written, digit by digit (R4 search.html,
    # number: 100 means [99.5, 100.5), 100.00 [99.995, 100.005)). An exponent form counts its
    # mantissa's digits too: 1e2 is "100, to 1 significant figures precision", [50, 150), and
    # 1.0e2 [95, 105); the spec's table gives [95 ... 105) for 1e2, which contradicts its own
    # "1 significant figures" and the digit rule of every other row (docs/search.md).
    half = Decimal(5).scaleb(number.as_tuple().exponent - 1)  # type: ignore[operator]
    low, high = values.bounded(number - half), values.bounded(number + half)
    if prefix == "eq":
        return _and(("cmp", ">=", column, at(low)), ("cmp", "<", column, at(high)))
    if prefix == "ne":
        return _or(("cmp", "<", column, at(low)), ("cmp", ">=", column, at(high)))
    op = {"gt": ">", "sa": ">", "lt": "<", "eb": "<", "ge": ">=", "le": "<="}.get(prefix)
    if op is not None:
        return ("cmp", op, column, at(number))
    slack = abs(number) / 10  # ap: within 10%
    return _and(
        ("cmp", ">=", column, at(values.bounded(number - slack))),
        ("cmp", "<=", column, at(values.bounded(number + slack))),
    )


def _quantity(value: str, modifier: str | None, _base: str) -> Plan:
    parts = split_token(value)
    if len(parts) not in (1, 3):
        raise InvalidRequest(f"'{value}' is not number|system|code")
    if len(parts) == 3 and parts[1] == ucum.UCUM_SYSTEM and parts[2]:
        converts = ucum.canonical(parts[2])
        if converts is not None:
            # Any comparable UCUM unit: the indexed value in base units (values.py)
            canonical_code = _eq("canonical_code", _as_indexed(converts.unit))
            scaled = _number_condition(parts[0], "canonical_value", converts.factor)
            return _and(scaled, canonical_code)
    conditions = [_number_condition(parts[0])]
    if len(parts) == 3:
        system, code = parts[1], parts[2]
        if system:
            conditions.append(_eq("system", system))
        if code:
            # With a system, the coded unit (a uncoded one only as a fallback); without one,
            # "number||code" matches either the code or the human unit (Quantity.unit).
            # That unit is compared only where it is not the code already: those are the rows
            # of the partial index ix_quantity_unit (migration 0021), and the two branches are
            # two index range scans; `code = x OR unit = x` read every value of the parameter.
            unit = _and(("null", "code"), _eq("unit", code)) if system else _unit_text(code)
            conditions.append(_or(_eq("code", _as_indexed(code)), unit))
    return _and(*conditions)


# The rows of ix_quantity_unit: the unit text is not the code (migration 0021 has the same
# condition, which a database takes the index for only when the query states it).
UNIT_NOT_CODE: Plan = ("or", (("null", "code"), ("differs", "code", "unit")))


def _unit_text(code: str) -> Plan:
    return _and(_eq("unit", code), UNIT_NOT_CODE)


_BUILDERS: dict[str, Callable[[str, str | None, str], Plan]] = {
    "token": _token,
    "string": _string,
    "uri": _uri,
    "reference": _reference,
    "date": lambda value, _modifier, _base: _date_condition(value),
    "number": lambda value, _modifier, _base: _number_condition(value),
    "quantity": _quantity,
}
