"""SQL for search criteria: one builder per parameter type, over the index tables.

Every builder answers "does the resource (owner_type, owner_id) match?" as a boolean SQL
expression, so criteria compose freely: AND across parameters, OR across values, and chains
/ reverse chains simply nest a criterion on another resource's id.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

from sqlalchemy import (
    ColumnElement,
    FromClause,
    Table,
    and_,
    exists,
    false,
    not_,
    or_,
    select,
    true,
)

from app.errors import InvalidRequest
from app.fhir.search import values
from app.fhir.search.params import RESOURCE_COLUMNS, Criterion, join_values, parse_criterion
from app.fhir.tables import INDEX_TABLES, resource, search_reference

Owner = tuple[Any, Any]  # (resource type: str or column, resource id: column)
_UNESCAPED_DOLLAR = re.compile(r"(?<!\\)\$")
_PREFIXED = re.compile(r"^(eq|ne|gt|lt|ge|le|sa|eb|ap)(?=[-+0-9.])")
_ESCAPED = re.compile(r"\\(.)")


def criterion_sql(
    c: Criterion, owner: Owner, base_url: str, *, top: bool, drive: bool = True
) -> ColumnElement[bool]:
    """`drive`: written as `id IN (SELECT ...)` so the database can start from these index
    rows; otherwise as a correlated EXISTS, a cheap per-candidate check. The engine lets the
    most selective-looking criterion drive (SQLite follows the form literally)."""
    owner_type, owner_id = owner
    if c.has_type:
        return _has(c, owner, base_url)
    if c.chain is not None:
        return _chain(c, owner, base_url)
    if c.name in RESOURCE_COLUMNS and c.modifier == "missing":
        return false() if c.values == ("true",) else true()  # every resource has both
    if c.name == "_id":
        match_id = owner_id.in_(list(c.values))
        return not_(match_id) if c.modifier == "not" else match_id
    if c.name == "_lastUpdated":
        return _last_updated(c, owner, top=top)
    # No alias: each criterion is its own subquery (aliasing copies every column: ~0.2 ms).
    table = INDEX_TABLES[c.kind.split(":")[0]]
    owned = [table.c.resource_type == owner_type, table.c.param == c.name]
    if c.modifier == "missing":
        if c.values == ("true",):
            return not_(exists().where(*owned, table.c.resource_id == owner_id))
        return owner_id.in_(select(table.c.resource_id).where(*owned))
    match = or_(*[_value_sql(c, table, v, base_url) for v in c.values])
    if c.kind == "token" and c.modifier == "not":
        return not_(exists().where(*owned, table.c.resource_id == owner_id, match))
    if not drive:
        return exists().where(*owned, table.c.resource_id == owner_id, match)
    # `id IN (SELECT resource_id ...)`: PostgreSQL and SQLite can drive the query from the
    # index rows (with only correlated EXISTS, SQLite scans every resource of the type).
    return owner_id.in_(select(table.c.resource_id).where(*owned, match))


def _value_sql(c: Criterion, table: Table, value: str, base_url: str) -> ColumnElement[bool]:
    if c.kind.startswith("composite:"):
        return _composite(table, value, c.kind.split(":")[1], base_url)
    builder = _BUILDERS[c.kind]
    return builder(table, value, c.modifier, base_url)


# ------------------------------------------------------------------ composite


class _Columns:
    """Presents some composite columns under the names a single-type builder expects, so
    `code$value` reuses the token and quantity/date/string builders unchanged."""

    def __init__(self, **columns: Any) -> None:
        self.c = SimpleNamespace(**columns)


def _composite(t: Table, value: str, second: str, base_url: str) -> ColumnElement[bool]:
    parts = _UNESCAPED_DOLLAR.split(value)
    if len(parts) != 2:
        raise InvalidRequest(f"'{value}' must be two values joined by '$'")
    first_view = _Columns(system=t.c.c1_system, code=t.c.c1_code)
    second_view = _Columns(
        system=t.c.c2_system, code=t.c.c2_code, value=t.c.c2_value, unit=t.c.c2_unit,
        low=t.c.c2_low, high=t.c.c2_high, exact=t.c.c2_text,
    )  # fmt: skip
    if second == "string":
        second_view.c.value = t.c.c2_text
    first = _token(first_view, parts[0], None, base_url)  # type: ignore[arg-type]
    return and_(first, _BUILDERS[second](second_view, parts[1], None, base_url))  # type: ignore[arg-type]


# ------------------------------------------------------------------ chains


def _chain(c: Criterion, owner: Owner, base_url: str) -> ColumnElement[bool]:
    assert c.chain is not None and c.chain_type is not None
    ref = search_reference.alias()
    leaf = c.chain.leaf()
    alternatives = []
    for target in c.chain_type.split("|"):
        inner = parse_criterion(target, c.chain.key(), join_values(leaf.values))
        alternatives.append(
            and_(
                ref.c.target_type == target,
                criterion_sql(inner, (target, ref.c.target_id), base_url, top=False),
            )
        )
    return owner[1].in_(
        select(ref.c.resource_id).where(
            ref.c.resource_type == owner[0],
            ref.c.param == c.name,
            is_local(ref, base_url),
            or_(*alternatives),
        )
    )


def _has(c: Criterion, owner: Owner, base_url: str) -> ColumnElement[bool]:
    assert c.chain is not None and c.has_type is not None
    ref = search_reference.alias()
    return owner[1].in_(
        select(ref.c.target_id).where(
            ref.c.resource_type == c.has_type,
            ref.c.param == c.has_param,
            ref.c.target_type == owner[0],
            is_local(ref, base_url),
            criterion_sql(c.chain, (c.has_type, ref.c.resource_id), base_url, top=False),
        )
    )


def _last_updated(c: Criterion, owner: Owner, *, top: bool) -> ColumnElement[bool]:
    if top:
        column = resource.c.last_updated
        return or_(*[_date_condition(column, column + 1, v) for v in c.values])
    other = resource.alias()
    return exists().where(
        other.c.resource_type == owner[0],
        other.c.id == owner[1],
        or_(
            *[_date_condition(other.c.last_updated, other.c.last_updated + 1, v) for v in c.values]
        ),
    )


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


def _token(t: Table, value: str, modifier: str | None, _base: str) -> ColumnElement[bool]:
    if modifier == "text":
        text = values.normalize(unescape(value))
        return t.c.display.like(f"%{_like_escape(text)}%", escape="\\")
    parts = split_token(value)
    if modifier == "of-type":
        if len(parts) != 3:
            raise InvalidRequest(f":of-type needs system|code|value, got '{value}'")
        return and_(t.c.type_system == parts[0], t.c.type_code == parts[1], t.c.code == parts[2])
    if len(parts) == 1:
        return t.c.code == parts[0]
    system, code = parts[0], "|".join(parts[1:])
    conditions = [t.c.system.is_(None) if system == "" else t.c.system == system]
    if code:
        conditions.append(t.c.code == code)
    return and_(*conditions)


# ------------------------------------------------------------------ string, uri


def _string(t: Table, value: str, modifier: str | None, _base: str) -> ColumnElement[bool]:
    value = unescape(value)
    if modifier == "exact":
        return t.c.exact == value
    normalized = values.normalize(value)
    if modifier == "contains":
        return t.c.value.like(f"%{_like_escape(normalized)}%", escape="\\")
    return prefix_range(t.c.value, normalized)


def _uri(t: Table, value: str, modifier: str | None, _base: str) -> ColumnElement[bool]:
    value = unescape(value)
    if modifier == "below":  # the searched uri or anything under it, by path segment
        return or_(t.c.value == value, prefix_range(t.c.value, value.rstrip("/") + "/"))
    if modifier == "above":  # the searched uri or one of its path ancestors
        return t.c.value.in_(uri_ancestors(value))
    return t.c.value == value


def uri_ancestors(uri: str) -> list[str]:
    """'http://a.org/fhir/ValueSet/1' -> itself, 'http://a.org/fhir/ValueSet/', '.../ValueSet',
    ... 'http://a.org': every path prefix (with and without its trailing slash)."""
    scheme_end = uri.find("://")
    start = scheme_end + 3 if scheme_end >= 0 else 0
    found = {uri}
    for i, char in enumerate(uri):
        if char == "/" and i > start:
            found.update((uri[:i], uri[: i + 1]))
    return sorted(found)


def prefix_range(column: Any, prefix: str) -> ColumnElement[bool]:
    """column starts with prefix, as an index-friendly range: [prefix, prefix-successor)."""
    if not prefix:
        return true()
    successor = prefix[:-1] + chr(ord(prefix[-1]) + 1)
    return and_(column >= prefix, column < successor)


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


# ------------------------------------------------------------------ reference


def _reference(t: Table, value: str, modifier: str | None, base_url: str) -> ColumnElement[bool]:
    if modifier == "identifier":
        parts = split_token(value)
        if len(parts) == 1:
            return t.c.identifier_value == parts[0]
        system_match = (
            t.c.identifier_system == parts[0] if parts[0] else t.c.identifier_system.is_(None)
        )
        return and_(system_match, t.c.identifier_value == parts[1]) if parts[1] else system_match
    local = is_local(t, base_url)
    if modifier:  # :[Type]
        return and_(t.c.target_type == modifier, t.c.target_id == value, local)
    if base_url and value.startswith(base_url + "/"):
        value = value[len(base_url) + 1 :]
    if value.startswith(("http:", "https:", "urn:")):
        return t.c.url == value
    rtype, rid = values.parse_reference(value)
    if rtype:
        return and_(t.c.target_type == rtype, t.c.target_id == rid, local)
    return and_(t.c.target_id == value, local)


def is_local(t: FromClause, base_url: str) -> ColumnElement[bool]:
    """The reference row points at a resource on this server: a relative reference, or an
    absolute one under our base. http://elsewhere/fhir/Patient/1 is not our Patient/1 (the
    indexer parses type and id from any absolute URL; only the url column tells them apart)."""
    if not base_url:
        return true()
    return or_(t.c.url.is_(None), t.c.url.like(_like_escape(base_url) + "/%", escape="\\"))


# ------------------------------------------------------------------ date


def _date(t: Table, value: str, modifier: str | None, _base: str) -> ColumnElement[bool]:
    return _date_condition(t.c.low, t.c.high, value)


def _date_condition(low: Any, high: Any, raw: str) -> ColumnElement[bool]:
    prefix, text = _prefix(raw)
    span = values.date_range(text)
    if span is None:
        raise InvalidRequest(f"'{text}' is not a valid date")
    p_low, p_high = span
    within = and_(low >= p_low, high <= p_high)
    if prefix == "eq":
        return within
    if prefix == "ne":
        return not_(within)
    if prefix == "gt":
        return high > p_high
    if prefix == "lt":
        return low < p_low
    if prefix == "ge":
        return or_(high > p_high, within)
    if prefix == "le":
        return or_(low < p_low, within)
    if prefix == "sa":
        return low >= p_high
    if prefix == "eb":
        return high <= p_low
    now = int(datetime.now(UTC).timestamp() * 1_000_000)
    slack = abs(now - p_low) // 10  # ap: within 10% of the distance to now
    return and_(high > p_low - slack, low < p_high + slack)


def _prefix(raw: str) -> tuple[str, str]:
    match = _PREFIXED.match(raw)
    return (match.group(1), raw[2:]) if match else ("eq", raw)


# ------------------------------------------------------------------ number, quantity


def _number(t: Table, value: str, modifier: str | None, _base: str) -> ColumnElement[bool]:
    return _number_condition(t.c.value, value)


def _number_condition(column: Any, raw: str) -> ColumnElement[bool]:
    prefix, text = _prefix(raw)
    number = values.to_decimal(text)
    if number is None:
        raise InvalidRequest(f"'{text}' is not a number")
    # Precision comes from how the number was written: 100 means [99.5, 100.5).
    half = Decimal(5).scaleb(number.as_tuple().exponent - 1)  # type: ignore[operator]
    low, high = number - half, number + half
    if prefix == "eq":
        return and_(column >= low, column < high)
    if prefix == "ne":
        return or_(column < low, column >= high)
    if prefix in ("gt", "sa"):
        return column > number
    if prefix in ("lt", "eb"):
        return column < number
    if prefix == "ge":
        return column >= number
    if prefix == "le":
        return column <= number
    slack = abs(number) / 10  # ap: within 10%
    return and_(column >= number - slack, column <= number + slack)


def _quantity(t: Table, value: str, modifier: str | None, _base: str) -> ColumnElement[bool]:
    parts = split_token(value)
    if len(parts) not in (1, 3):
        raise InvalidRequest(f"'{value}' is not number|system|code")
    conditions = [_number_condition(t.c.value, parts[0])]
    if len(parts) == 3:
        system, code = parts[1], parts[2]
        if system:
            conditions.append(t.c.system == system)
        if code:
            # With a system, the coded unit (a uncoded one only as a fallback); without one,
            # "number||code" matches either the code or the human unit (Quantity.unit).
            unit = and_(t.c.code.is_(None), t.c.unit == code) if system else t.c.unit == code
            conditions.append(or_(t.c.code == code, unit))
    return and_(*conditions)


_BUILDERS = {
    "token": _token,
    "string": _string,
    "uri": _uri,
    "reference": _reference,
    "date": _date,
    "number": _number,
    "quantity": _quantity,
}
