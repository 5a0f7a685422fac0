"""Run a parsed search: criteria -> SQL over the current table, sorting, keyset paging,
totals; _include / _revinclude in includes.py."""

from __future__ import annotations

import functools
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Select,
    and_,
    bindparam,
    func,
    literal,
    or_,
    select,
    union_all,
)

from app.fhir.search import cursor, includes
from app.fhir.search.criteria import Plan, plan, split, version_notes
from app.fhir.search.params import (
    SearchParams,
    encode_cursor,
    lookup,
)
from app.fhir.search.sql import criterion_for_types, matching_ids
from app.fhir.search.values import MAX_TIME, MIN_TIME, NUMBER_LAST
from app.fhir.storage import (
    CURRENT_COLUMNS,
    RowFilter,
    StoredVersion,
    UnitOfWork,
    planned_for_values,
    to_version,
)
from app.fhir.tables import INDEX_TABLES, resource

DEFAULT_COUNT = 50
MAX_COUNT = 1000
BATCH_BRANCHES = 100  # first_ids: searches per statement (SQLite allows 500 UNION terms)
SORT_COLUMN = {"string": "value", "token": "code", "reference": "target_id", "number": "value",
               "quantity": "value", "uri": "value"}  # fmt: skip
TEXT_LAST = "\U0010ffff"


@dataclass(frozen=True)
class SearchResult:
    versions: list[StoredVersion]
    total: int | None
    next_page: str | None  # cursor for the next page
    previous_page: str | None
    ignored: tuple[str, ...]
    included: list[StoredVersion]
    warnings: tuple[str, ...] = ()


def search(
    uow: UnitOfWork, rtypes: list[str], params: SearchParams, *, base_url: str = ""
) -> SearchResult:
    """Search one type, or several (system search with resource-level criteria)."""
    uow.flush()
    count = _page_size(params)
    backwards = bool(params.page and params.page.get("dir") == "prev")
    # The SQL depends only on the search's shape; its values go in as parameters.
    form, values = split(_criteria_plans(params, base_url))
    bound = {f"v{i}": value for i, value in enumerate(values)}
    if params.page:
        bound.update(cursor.position(params, rtypes[0], several_types=len(rtypes) > 1))
    shape = Shape(
        tuple(rtypes), base_url, form, params.sort, count,
        page="prev" if backwards else "next" if params.page else None,
        # R4 search.html#count: `_count=0` is treated as `_summary=count`
        total=params.total in ("accurate", "estimate") or params.summary == "count" or count == 0,
    )  # fmt: skip
    if uow.row_filter is None:
        statements = _cached_statements(shape)
    else:  # the filter is this caller's own SQL: never shared with other callers
        statements = _statements(shape, uow.row_filter)
    total = None
    with planned_for_values(uow):
        if statements.total is not None:
            total = int(uow.conn.execute(statements.total, bound).scalar_one())
        if count == 0 or params.summary == "count":
            notes = tuple(version_notes(params.criteria))
            return SearchResult([], total, None, None, params.ignored, [], notes)
        rows = list(uow.conn.execute(statements.page, bound))
    more = len(rows) > count
    rows = rows[:count]
    if backwards:
        rows.reverse()
    versions = [to_version(r) for r in rows]
    width = len(params.sort) + cursor.tiebreakers(len(rtypes) > 1)
    next_page, previous_page = _cursors(rows, width, params, more, backwards)
    if total is None and not params.page and not more:
        total = len(versions)
    included, warnings = includes.follow(uow, versions, params.includes, base_url)
    warnings += tuple(version_notes(params.criteria))
    return SearchResult(
        versions, total, next_page, previous_page, params.ignored, included, warnings
    )


def _page_size(params: SearchParams) -> int:
    return min(params.count if params.count is not None else DEFAULT_COUNT, MAX_COUNT)


def first_ids(
    uow: UnitOfWork, searches: list[tuple[str, SearchParams]], *, base_url: str = ""
) -> list[list[str]]:
    """The ids on each search's first page (its own _count and _sort; as a set, their order
    not kept), for several searches of one type each, in one statement: conditional lookups
    (FhirService.find_ids, one search) and those a caller needs together before it writes (an
    HL7 ORU^R01 matches ~10 identifiers, one round trip each when asked one by one).

    Each search is a UNION ALL branch with its own parameters, so each keeps the plan it gets
    alone (one OR of all the values planned badly on young tables). A caller with a row filter,
    or a search continuing from a cursor, is asked one by one."""
    if len(searches) > BATCH_BRANCHES:
        return [ids for start in range(0, len(searches), BATCH_BRANCHES)
                for ids in first_ids(uow, searches[start : start + BATCH_BRANCHES],
                                     base_url=base_url)]  # fmt: skip
    if uow.row_filter is not None or any(params.page for _, params in searches):
        return [[v.id for v in search(uow, [t], p, base_url=base_url).versions]
                for t, p in searches]  # fmt: skip
    if not searches:
        return []
    uow.flush()
    shapes: list[Shape] = []
    bound: dict[str, Any] = {}
    for rtype, params in searches:
        # Each branch's values get names of their own: its slots continue the previous ones.
        form, values = split(_criteria_plans(params, base_url), first=len(bound))
        bound.update({f"v{len(bound) + i}": value for i, value in enumerate(values)})
        count = _page_size(params)
        shapes.append(Shape((rtype,), base_url, form, params.sort, count, None, False))
    found: list[list[str]] = [[] for _ in searches]
    # Identifier lookups plan alike whatever the value (an identifier names one resource),
    # so those may run as prepared statements: planning ten branches cost PostgreSQL more
    # than running them (~1 ms per HL7 message). Anything else is planned for its values.
    by_identifier = all(_identifier_lookup(shape) for shape in shapes)
    with nullcontext() if by_identifier else planned_for_values(uow):
        for branch, rid in uow.conn.execute(_first_ids_statement(tuple(shapes)), bound):
            found[branch].append(rid)
    return found


@functools.lru_cache(maxsize=200)
def _first_ids_statement(shapes: tuple[Shape, ...]) -> Any:
    branches = []
    for branch, shape in enumerate(shapes):
        page = _cached_statements(shape).page.limit(shape.count).subquery()
        branches.append(select(literal(branch).label("branch"), page.c.id))
    return union_all(*branches) if len(branches) > 1 else branches[0]


def _identifier_lookup(shape: Shape) -> bool:
    """Only `identifier` token matches, in the default order."""
    return not shape.sort and all(
        node[:4] == ("index", "token", "identifier", "match") for node in shape.criteria
    )


# ------------------------------------------------------------------ statements per shape


@dataclass(frozen=True)
class Shape:
    """Everything the SQL of a search depends on; the searched values are not part of it
    (they are the parameters :v0, :v1, ... and the cursor's :at0, :at1, ...)."""

    rtypes: tuple[str, ...]
    base_url: str
    criteria: tuple[Any, ...]  # the criteria's plans with their values taken out (split)
    sort: tuple[str, ...]
    count: int
    page: str | None  # continuing from a cursor: "next" or "prev"
    total: bool  # count the matches too


@dataclass(frozen=True)
class Statements:
    page: Select[Any]
    total: Select[Any] | None


def _statements(shape: Shape, row_filter: RowFilter | None) -> Statements:
    """Built from the shape alone (and the caller's row filter, if any), so a statement can
    only ever be shared by searches that need exactly that SQL."""
    rtypes = list(shape.rtypes)
    owner_type: Any = rtypes[0] if len(rtypes) == 1 else resource.c.resource_type
    type_filter = (
        resource.c.resource_type == rtypes[0]
        if len(rtypes) == 1
        else resource.c.resource_type.in_(rtypes)
    )
    where = [type_filter, resource.c.deleted.is_(False)]
    where += [
        criterion_for_types(node, rtypes, shape.base_url, drive=i == 0, access=row_filter)
        for i, node in enumerate(shape.criteria)
    ]
    if row_filter is not None:
        where.append(row_filter.sql(owner_type, resource.c.id))
    total = select(func.count()).select_from(resource).where(*where) if shape.total else None
    keys = _sort_keys(rtypes[0], shape.sort, owner_type, several_types=len(rtypes) > 1)
    backwards = shape.page == "prev"
    ids = _page_of_ids(shape, backwards) if row_filter is None else None
    if ids is not None:
        where = [type_filter, resource.c.deleted.is_(False), resource.c.id.in_(ids)]
    page = _page_query(where, keys, shape, backwards).limit(shape.count + 1)
    return Statements(page, total)


def _page_of_ids(shape: Shape, backwards: bool) -> Select[Any] | None:
    """For a search driven by a reference (`subject=...`, `patient=...`) in the default order
    (by id) whose other criteria are all index criteria: the page's ids, found from index rows
    alone, or None for any other search.

    The reference lookup index ends with the resource id, so these rows come in id order and
    the database stops at the end of the page; only the page's resources are fetched. The
    general form fetches every resource the reference matches before checking the rest and
    sorting: at a million Observations, `subject=p&code=c&_count=10` read all ~100 of the
    patient's Observations (2.7-3.5 ms against 0.6-0.7). Index rows exist only for current,
    undeleted resources (storage.update_current drops an old version's; a deletion stages
    none), so the page is never short."""
    if len(shape.rtypes) != 1 or shape.sort or not shape.criteria:
        return None
    driver, *others = shape.criteria
    if driver[0] != "index" or driver[1] != "reference" or driver[3] != "match":
        return None
    if any(other[0] != "index" for other in others):
        return None
    ids = matching_ids(driver, others, shape.rtypes[0], shape.base_url)
    column = ids.selected_columns[0]
    if shape.page:  # continuing from a cursor: its id is :at0 (the only sort key)
        at = bindparam("at0", type_=column.type)
        ids = ids.where(column < at if backwards else column > at)
    return ids.distinct().order_by(column.desc() if backwards else column).limit(shape.count + 1)


# Searches of the same shape (most: the same requests with other values) share statements:
# building one costs more than running it, and SQLAlchemy compiles each only once (its own
# cache of compiled statements holds 500 per engine: more shapes would not stay compiled).
_cached_statements = functools.lru_cache(maxsize=500)(
    functools.partial(_statements, row_filter=None)
)


# Which criterion should drive the query: the likeliest to be selective goes first.
_SELECTIVITY = ["_id", "reference", "token", "composite", "string", "uri", "quantity",
                "number", "date"]  # fmt: skip


def _criteria_plans(params: SearchParams, base_url: str) -> tuple[Plan, ...]:
    def rank(c: Any) -> int:
        kind = "_id" if c.name == "_id" else c.kind.split(":")[0]
        return _SELECTIVITY.index(kind) if kind in _SELECTIVITY else len(_SELECTIVITY)

    return tuple(plan(c, base_url) for c in sorted(params.criteria, key=rank))


# ------------------------------------------------------------------ sorting and paging


@dataclass(frozen=True)
class SortKey:
    expression: Any
    descending: bool


def _sort_keys(
    rtype: str, sort: tuple[str, ...], owner_type: Any, *, several_types: bool
) -> list[SortKey]:
    keys = [_sort_key(rtype, key.lstrip("-"), key.startswith("-"), owner_type) for key in sort]
    # Unique tiebreakers make keyset paging exact (cursor.tiebreakers): the id, and the type
    # when several are searched (an id is unique within its type only).
    keys.append(SortKey(resource.c.id, False))
    if several_types:
        keys.append(SortKey(resource.c.resource_type, False))
    return keys


def _sort_key(rtype: str, name: str, descending: bool, owner_type: Any) -> SortKey:
    if name == "_id":
        return SortKey(resource.c.id, descending)
    if name == "_lastUpdated":
        return SortKey(resource.c.last_updated, descending)
    kind, _ = lookup(rtype, name)
    table = INDEX_TABLES[kind]
    missing: Any
    if kind == "date":  # ascending by earliest start, descending by latest end
        column, missing = (table.c.high, MIN_TIME) if descending else (table.c.low, MAX_TIME)
    else:
        column = table.c[SORT_COLUMN[kind]]
        numeric = kind in ("number", "quantity")
        missing = (
            (-NUMBER_LAST if numeric else "")
            if descending
            else (NUMBER_LAST if numeric else TEXT_LAST)
        )
    aggregate = func.max(column) if descending else func.min(column)
    value = (
        select(aggregate)
        .where(
            table.c.resource_type == owner_type,
            table.c.resource_id == resource.c.id,
            table.c.param == name,
        )
        .scalar_subquery()
    )
    # Resources without a value sort last either way (a sentinel keeps keyset paging simple).
    return SortKey(func.coalesce(value, literal(missing)), descending)


def _page_query(
    where: list[ColumnElement[bool]], keys: list[SortKey], paged: Any, backwards: bool
) -> Select[Any]:
    """The matches in order. `paged.page` (a Shape, or SearchParams): continue after the cursor
    position, given as the parameters :at0, :at1, ... in the sort keys' order."""
    labelled = [k.expression.label(f"sort_{i}") for i, k in enumerate(keys)]
    query = select(*CURRENT_COLUMNS, *labelled).where(*where)
    if paged.page:
        position = [bindparam(f"at{i}", type_=k.expression.type) for i, k in enumerate(keys)]
        query = query.where(_beyond(keys, position, backwards))
    order = []
    for key in keys:
        descending = key.descending != backwards  # walking backwards flips every direction
        order.append(key.expression.desc() if descending else key.expression.asc())
    return query.order_by(*order)


def _beyond(keys: list[SortKey], position: list[Any], backwards: bool) -> ColumnElement[bool]:
    """Rows strictly after (or, walking backwards, before) `position` in sort order."""
    clauses = []
    for i, key in enumerate(keys):
        equal_prefix = [keys[j].expression == position[j] for j in range(i)]
        forward_is_smaller = key.descending != backwards
        beyond = (
            key.expression < position[i] if forward_is_smaller else key.expression > position[i]
        )
        clauses.append(and_(*equal_prefix, beyond))
    return or_(*clauses)


def _cursors(
    rows: list[Any], width: int, params: SearchParams, more: bool, backwards: bool
) -> tuple[str | None, str | None]:
    if not rows:
        return None, None

    def at(row: Any) -> list[Any]:
        return [cursor.to_json(getattr(row, f"sort_{i}")) for i in range(width)]

    has_next = more if not backwards else True
    has_previous = (params.page is not None) if not backwards else more
    next_page = encode_cursor({"dir": "next", "at": at(rows[-1])}) if has_next else None
    previous_page = encode_cursor({"dir": "prev", "at": at(rows[0])}) if has_previous else None
    return next_page, previous_page
