"""Step 2 of a search criterion (criteria.py has step 1 and the plan's grammar): a plan as
SQLAlchemy over the index tables. A `Value` is bound inline; a `Slot` (where `split` took a
Value out) is the parameter `:v<n>`, given at execution, so one statement serves every
search of the same shape (engine.py)."""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

from sqlalchemy import (
    ColumnElement,
    FromClause,
    Select,
    and_,
    bindparam,
    exists,
    false,
    not_,
    or_,
    select,
    true,
    union_all,
)
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.elements import Grouping
from sqlalchemy.sql.functions import FunctionElement
from sqlalchemy.types import Boolean

from app.fhir.search.criteria import Owner, Plan, Slot, Value, local_plan, plan
from app.fhir.search.params import Criterion
from app.fhir.storage import RowFilter
from app.fhir.tables import INDEX_TABLES, resource, search_reference


def criterion_sql(
    c: Criterion, owner: Owner, base_url: str, *, top: bool, drive: bool = True
) -> ColumnElement[bool]:
    """The criterion as SQL with its values bound inline (for callers building their own
    statements; the search engine splits the plan and caches the SQL per shape instead)."""
    return plan_sql(plan(c, base_url), owner, base_url, top=top, drive=drive)


def is_local(t: FromClause, base_url: str) -> ColumnElement[bool]:
    """The reference row points at a resource on this server: a relative reference, or an
    absolute one under our base. http://elsewhere/fhir/Patient/1 is not our Patient/1 (the
    indexer parses type and id from any absolute URL; only the url column tells them apart)."""
    return _cond_sql(local_plan(base_url), lambda name: t.c[name])


def plan_sql(
    node: Plan,
    owner: Owner,
    base_url: str,
    *,
    top: bool,
    drive: bool = True,
    access: RowFilter | None = None,
    contained: ColumnElement[Any] | None = None,
) -> ColumnElement[bool]:
    """`drive`: written as `id IN (SELECT ...)` so the database can start from these index
    rows; otherwise as a correlated EXISTS, a cheap per-candidate check. The engine lets the
    most selective-looking criterion drive (SQLite follows the form literally). `access`: the
    caller's row filter, which the resources a chain or _has tests must pass too.
    `contained`: the criterion is on a contained resource of the owner, whose rows are the
    owner's with parameters named `<contained>.<code>` (indexer.py; `contained` is SQL for
    the `#<position>` part)."""
    owner_type, owner_id = owner
    tag = node[0]
    if tag in ("true", "false"):
        return true() if tag == "true" else false()
    if contained is not None and tag in ("id", "updated", "has"):
        return false()  # a contained resource has no id, version or referrers of its own
    if tag == "id":
        match_id = owner_id.in_(_bind(node[1], owner_id, expanding=True))
        return not_(match_id) if node[2] else match_id
    if tag == "updated":
        return _updated(node[1], owner, top=top)
    if tag == "chain":
        return _chain(node, owner, base_url, access, contained)
    if tag == "has":
        return _has(node, owner, base_url, access)
    assert tag == "index", node
    _, kind, name, mode, cond = node
    # No alias: each criterion is its own subquery (aliasing copies every column: ~0.2 ms).
    table = INDEX_TABLES[kind]
    owned = _rows_of(table, owner_type, name, contained)
    drive = drive and contained is None  # correlated through the parameter's name
    if mode == "missing":
        return not_(exists().where(*owned, table.c.resource_id == owner_id))
    if mode == "present":
        return owner_id.in_(select(table.c.resource_id).where(*owned))
    match = _cond_sql(cond, lambda column: table.c[column])
    if mode == "not":
        return not_(exists().where(*owned, table.c.resource_id == owner_id, match))
    if not drive:
        return exists().where(*owned, table.c.resource_id == owner_id, match)
    # `id IN (SELECT resource_id ...)`: PostgreSQL and SQLite can drive the query from the
    # index rows (with only correlated EXISTS, SQLite scans every resource of the type).
    return owner_id.in_(select(table.c.resource_id).where(*owned, match))


PER_TYPE_LIMIT = 12


def criterion_for_types(
    node: Plan, rtypes: list[str], base_url: str, *, drive: bool, access: RowFilter | None
) -> ColumnElement[bool]:
    """One criterion's SQL. A search of several types (`_type=A,B`) takes it per type, each
    branch with its type as a literal: written once with the type as the outer row's column,
    every `id IN (SELECT ... WHERE resource_type = <that column>)` was correlated and run
    again for each candidate row (SQLite, ~6,000 resources: 3.5 s for a chained system
    search, against 3 ms for one type). Past PER_TYPE_LIMIT types (a system search without
    `_type` names every type) the statement would grow too large: one correlated form."""
    if len(rtypes) == 1 or len(rtypes) > PER_TYPE_LIMIT:
        owner: tuple[Any, Any] = (
            rtypes[0] if len(rtypes) == 1 else resource.c.resource_type,
            resource.c.id,
        )
        return plan_sql(node, owner, base_url, top=True, drive=drive, access=access)
    return or_(
        *(
            and_(
                resource.c.resource_type == rtype,
                plan_sql(
                    node, (rtype, resource.c.id), base_url, top=True, drive=drive, access=access
                ),
            )
            for rtype in rtypes
        )
    )


def matching_ids(node: Plan, others: list[Plan], owner_type: str, base_url: str) -> Select[Any]:
    """The ids matching index criterion `node` and every one of `others` (index criteria
    too), from index rows alone: `node`'s rows, each checked against `others` by its
    resource id. The engine pages on this for a reference-driven search (engine.py)."""
    _, kind, name, _, cond = node
    rows = INDEX_TABLES[kind].alias()  # so that a check on the same table is a row of its own
    owner = (owner_type, rows.c.resource_id)
    checks = [plan_sql(other, owner, base_url, top=False, drive=False) for other in others]
    match = _cond_sql(cond, lambda column: rows.c[column])
    return select(rows.c.resource_id).where(*_rows_of(rows, owner_type, name), match, *checks)


def _rows_of(
    table: Any, owner_type: Any, name: str, contained: ColumnElement[Any] | None = None
) -> list[ColumnElement[bool]]:
    """An index table's rows of one search parameter for one resource type (of a contained
    resource of it: see plan_sql)."""
    param = table.c.param == (name if contained is None else contained + f".{name}")
    return [table.c.resource_type == owner_type, param]


def own_params(table: Any) -> ColumnElement[bool]:
    """The rows of the resource's own parameters, not of its contained resources (`#0.name`,
    indexer.py): a wildcard include follows what the resource refers to, and the types it may
    return (the scopes it needs, reach.py) are its own parameters' targets."""
    return table.c.param.not_like("#%")


def _chain(
    node: Plan,
    owner: Owner,
    base_url: str,
    access: RowFilter | None,
    contained: ColumnElement[Any] | None = None,
) -> ColumnElement[bool]:
    """The owner refers through `name` to a resource of ours that matches, or to one of its
    own contained resources that does (R4 search.html: a chain is evaluated inside contained
    resources). The two are one UNION ALL, so the chain can still drive the search."""
    _, name, targets = node
    ref = search_reference.alias()
    alternatives = [
        and_(
            ref.c.target_type == target,
            plan_sql(inner, (target, ref.c.target_id), base_url, top=False, access=access),
            *_allowed(access, target, ref.c.target_id),
            *([] if _needs_rows(inner) else [_is_live(target, ref.c.target_id)]),
        )
        for target, inner in targets
    ]
    referring = select(ref.c.resource_id).where(
        *_rows_of(ref, owner[0], name, contained), is_local(ref, base_url), or_(*alternatives)
    )
    # A contained resource is part of its owner: the owner's own access already covers it.
    inner_ref = search_reference.alias()
    inside = [
        and_(
            inner_ref.c.target_type == target,
            plan_sql(
                inner,
                (owner[0], inner_ref.c.resource_id),
                base_url,
                top=False,
                drive=False,
                access=access,
                contained=inner_ref.c.url,
            ),
        )  # fmt: skip
        for target, inner in targets
    ]
    into_contained = select(inner_ref.c.resource_id).where(
        *_rows_of(inner_ref, owner[0], name, contained),
        inner_ref.c.target_id.is_(None),
        inner_ref.c.url.like("#%"),
        or_(*inside),
    )
    if contained is not None:  # inside a contained resource: the same owner's rows
        referring = referring.where(ref.c.resource_id == owner[1])
        into_contained = into_contained.where(inner_ref.c.resource_id == owner[1])
    return owner[1].in_(union_all(referring, into_contained))


def _needs_rows(inner: Plan) -> bool:
    """Whether a target can meet `inner` only through index rows of its own, which exist
    for current, undeleted resources alone: then the target is one that is there. Other
    criteria (`_has`, `_id`, `_lastUpdated`, `:missing=true`, `:not`) are met by what a
    reference names even when it was deleted or never written, so the chain checks that."""
    return inner[0] == "chain" or (inner[0] == "index" and inner[3] in ("match", "present"))


def _is_live(rtype: str, rid: Any) -> ColumnElement[bool]:
    other = resource.alias()
    return exists().where(
        other.c.resource_type == rtype, other.c.id == rid, other.c.deleted.is_(False)
    )


def _has(node: Plan, owner: Owner, base_url: str, access: RowFilter | None) -> ColumnElement[bool]:
    _, source_type, param, inner = node
    ref = search_reference.alias()
    return owner[1].in_(
        select(ref.c.target_id).where(
            ref.c.resource_type == source_type,
            ref.c.param == param,
            ref.c.target_type == owner[0],
            is_local(ref, base_url),
            plan_sql(inner, (source_type, ref.c.resource_id), base_url, top=False, access=access),
            *_allowed(access, source_type, ref.c.resource_id),
        )
    )


def _allowed(access: RowFilter | None, rtype: str, rid: Any) -> list[ColumnElement[bool]]:
    """A chained or reverse-chained resource counts only if the caller may search it:
    otherwise the search would answer questions about data it may not see."""
    return [] if access is None else [access.criteria_sql(rtype, rid)]


def _updated(cond: Plan, owner: Owner, *, top: bool) -> ColumnElement[bool]:
    if top:
        column = resource.c.last_updated
        return _cond_sql(cond, {"low": column, "high": column + 1}.__getitem__)
    other = resource.alias()
    columns = {"low": other.c.last_updated, "high": other.c.last_updated + 1}
    return exists().where(
        other.c.resource_type == owner[0],
        other.c.id == owner[1],
        _cond_sql(cond, columns.__getitem__),
    )


class _Nested(Grouping[bool]):
    """Parentheses that `and_` / `or_` keep (they flatten a Grouping of their own operator)."""

    inherit_cache = True
    operator = None  # type: ignore[assignment]


# SQLite parses `a OR b OR c ...` into a tree as deep as the list is long, and refuses one
# deeper than 1,000 ("Expression tree is too large"): `code=` with the 1,000 codes of a value
# set was a 500. A long list is written as nested halves, `(a OR b) OR (c OR d)`, log2 deep;
# a short one (every common search's) stays flat, the SQL it always was.
FLAT_LIST = 64


def joined(
    join: Callable[..., ColumnElement[bool]], parts: list[ColumnElement[bool]]
) -> ColumnElement[bool]:
    """`join(*parts)` (and_ or or_), nested when the list is long."""
    if len(parts) <= FLAT_LIST:
        return join(*parts)
    half = len(parts) // 2
    return join(_Nested(joined(join, parts[:half])), _Nested(joined(join, parts[half:])))


_COMPARE = {"=": operator.eq, "<": operator.lt, "<=": operator.le, ">": operator.gt,
            ">=": operator.ge}  # fmt: skip


def _cond_sql(cond: Plan, column: Callable[[str], ColumnElement[Any]]) -> ColumnElement[bool]:
    """`column`: the SQL for a column name of the plan (the composite views, lastUpdated)."""
    tag = cond[0]
    if tag == "cmp":
        _, op, name, value = cond
        compared: ColumnElement[bool] = _COMPARE[op](column(name), _bind(value, column(name)))
        return compared
    if tag == "null":
        return column(cond[1]).is_(None)
    if tag == "like":
        return column(cond[1]).like(_bind(cond[2], column(cond[1])), escape="\\")
    if tag == "starts":
        found = column(cond[1])
        return _StartsWith(found, _bind(cond[2], found), _bind(cond[3], found))
    if tag == "differs":  # two columns of the row (NULL on either side: not "differs")
        differs: ColumnElement[bool] = column(cond[1]) != column(cond[2])
        return differs
    if tag == "in":
        return column(cond[1]).in_(_bind(cond[2], column(cond[1]), expanding=True))
    if tag in ("and", "or"):
        return joined(and_ if tag == "and" else or_, [_cond_sql(c, column) for c in cond[1]])
    if tag == "not":
        return not_(_cond_sql(cond[1], column))
    if tag == "view":
        names = dict(cond[1])
        return _cond_sql(cond[2], lambda name: column(names.get(name, name)))
    assert tag in ("true", "false"), cond
    return true() if tag == "true" else false()


class _StartsWith(FunctionElement[bool]):
    """(column, prefix, LIKE pattern of the prefix): the column starts with the prefix, case
    and all. SQLite's LIKE ignores case, so there it is `substr(...) = prefix`; PostgreSQL
    keeps its LIKE, which has case and costs a third of the substr (300,000 rows: ~35 ms
    against ~100)."""

    type = Boolean()
    inherit_cache = True
    name = "starts_with"


@compiles(_StartsWith)
def _starts_with(element: _StartsWith, compiler: Any, **kw: Any) -> str:
    column, prefix, _pattern = (compiler.process(c, **kw) for c in element.clauses)
    # parenthesized: SQLite has no boolean type, so SQLAlchemy may append `= 1`
    return f"(substr({column}, 1, length({prefix})) = {prefix})"


@compiles(_StartsWith, "postgresql")
def _starts_like(element: _StartsWith, compiler: Any, **kw: Any) -> str:
    column, _prefix, pattern = list(element.clauses)
    return str(compiler.process(column.like(pattern, escape="\\"), **kw))


def _bind(value: Value | Slot, column: Any, *, expanding: bool = False) -> Any:
    if isinstance(value, Slot):  # typed like the column, as an inline value would be
        return bindparam(f"v{value.index}", type_=column.type, expanding=expanding)
    return list(value.value) if expanding else value.value
