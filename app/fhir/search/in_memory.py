"""Search criteria judged on a resource that is not stored yet, from its index rows.

A transaction's conditional reference must see what the Bundle itself writes (R4
http.html#trules; HAPI resolves it after the writes): the Bundle's resources are not in the
database when the reference is rewritten, so the same plans the SQL is built from
(criteria.py) are evaluated here on the rows the indexer would store for them
(indexer.index_rows), with SQL's three-valued logic: a NULL column compares as unknown.

Criteria this cannot judge without the database (`_lastUpdated`, chains, `_has`: a version
not yet stamped, other resources) answer None.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Sequence
from typing import Any

from app.fhir.search.criteria import Plan, Value
from app.fhir.search.indexer import Rows
from app.fhir.tables import INDEX_TABLES

_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "=": operator.eq, "<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge,
}  # fmt: skip
_LIKE_TOKEN = re.compile(r"\\(.)|(%)|(_)|([^\\%_]+)", re.DOTALL)


def matches_all(plans: Sequence[Plan], rid: str, rows: Rows) -> bool | None:
    """Whether the resource `rid` with index `rows` meets every criterion (they are ANDed,
    as in a search); None when one cannot be judged here and none is false."""
    answer: bool | None = True
    for plan in plans:
        found = matches(plan, rid, rows)
        if found is False:
            return False
        if found is None:
            answer = None
    return answer


def matches(plan: Plan, rid: str, rows: Rows) -> bool | None:
    """One criterion's plan (criteria.plan) on one resource."""
    tag = plan[0]
    if tag in ("true", "false"):
        return tag == "true"
    if tag == "id":
        _, ids, negate = plan
        return (rid in ids.value) != negate
    if tag != "index":
        return None  # updated, chain, has
    _, kind, name, mode, cond = plan
    own = [row for row in rows.get(INDEX_TABLES[kind], ()) if row.get("param") == name]
    if mode == "missing":
        return not own
    if mode == "present":
        return bool(own)
    hit = any(_cond(cond, row.get) is True for row in own)
    return not hit if mode == "not" else hit


def _cond(cond: Plan, column: Callable[[str], Any]) -> bool | None:
    """A row condition (criteria.py's grammar) in SQL's three-valued logic."""
    tag = cond[0]
    if tag == "cmp":
        _, op, name, value = cond
        return _compare(op, column(name), _value(value))
    if tag == "null":
        return column(cond[1]) is None
    if tag == "differs":  # two columns of the row: `a <> b`, unknown where either is NULL
        first, second = column(cond[1]), column(cond[2])
        return None if first is None or second is None else first != second
    if tag == "like":
        found = column(cond[1])
        return None if found is None else bool(_like(_value(cond[2])).fullmatch(str(found)))
    if tag == "starts":  # (column, prefix, its LIKE pattern)
        found = column(cond[1])
        return None if found is None else str(found).startswith(_value(cond[2]))
    if tag == "in":
        found = column(cond[1])
        return None if found is None else found in tuple(_value(cond[2]))
    if tag == "and":
        parts = [_cond(c, column) for c in cond[1]]
        return False if False in parts else None if None in parts else True
    if tag == "or":
        parts = [_cond(c, column) for c in cond[1]]
        return True if True in parts else None if None in parts else False
    if tag == "not":
        inner = _cond(cond[1], column)
        return None if inner is None else not inner
    if tag == "view":
        names = dict(cond[1])
        return _cond(cond[2], lambda name: column(names.get(name, name)))
    if tag in ("true", "false"):
        return tag == "true"
    return None  # a condition this module does not know yet: not judged (never a wrong no)


def _compare(op: str, found: Any, wanted: Any) -> bool | None:
    if found is None or wanted is None:
        return None
    try:
        return _COMPARE[op](found, wanted)
    except TypeError:  # kinds SQL would have cast; not judged here
        return None


def _value(value: Any) -> Any:
    return value.value if isinstance(value, Value) else value


def _like(pattern: str) -> re.Pattern[str]:
    """SQL LIKE with `\\` as its escape (criteria._like_escape) as a regular expression."""
    parts = []
    for escaped, many, one, text in _LIKE_TOKEN.findall(pattern):
        parts.append(".*" if many else "." if one else re.escape(escaped or text))
    return re.compile("".join(parts), re.DOTALL)
