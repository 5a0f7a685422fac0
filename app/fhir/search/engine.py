"""Run a parsed search: criteria -> SQL over the current table, sorting, keyset paging,
totals, and _include / _revinclude."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, func, literal, or_, select

from app.errors import InvalidRequest
from app.fhir.search.criteria import criterion_sql, is_local
from app.fhir.search.params import Include, SearchParams, encode_cursor, lookup
from app.fhir.search.values import MAX_TIME, MIN_TIME
from app.fhir.storage import CURRENT_COLUMNS, StoredVersion, UnitOfWork, to_version
from app.fhir.tables import INDEX_TABLES, resource, search_reference

DEFAULT_COUNT = 50
MAX_COUNT = 1000
MAX_INCLUDES = 1000  # beyond this, includes are cut and the Bundle says so
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
    owner_type: Any = rtypes[0] if len(rtypes) == 1 else resource.c.resource_type
    type_filter = (
        resource.c.resource_type == rtypes[0]
        if len(rtypes) == 1
        else resource.c.resource_type.in_(rtypes)
    )
    where = [type_filter, resource.c.deleted.is_(False)]
    where += _criteria_sql(params, owner_type, base_url)
    if uow.row_filter is not None:
        where.append(uow.row_filter.sql(owner_type, resource.c.id))
    count = min(params.count if params.count is not None else DEFAULT_COUNT, MAX_COUNT)
    total = _total(uow, where, params)
    if count == 0 or params.summary == "count":
        return SearchResult([], total, None, None, params.ignored, [])
    keys = _sort_keys(rtypes[0], params.sort, owner_type)
    backwards = bool(params.page and params.page.get("dir") == "prev")
    query = _page_query(where, keys, params, backwards).limit(count + 1)
    rows = list(uow.conn.execute(query))
    more = len(rows) > count
    rows = rows[:count]
    if backwards:
        rows.reverse()
    versions = [to_version(r) for r in rows]
    next_page, previous_page = _cursors(rows, len(keys), params, more, backwards)
    if total is None and not params.page and not more:
        total = len(versions)
    included, warnings = _includes(uow, versions, params.includes, base_url)
    return SearchResult(
        versions, total, next_page, previous_page, params.ignored, included, warnings
    )


def _version(row: Any) -> StoredVersion:
    return StoredVersion(
        row.resource_type, row.id, row.version_id, row.last_updated, row.deleted, row.content
    )


# Which criterion should drive the query: the likeliest to be selective goes first.
_SELECTIVITY = ["_id", "reference", "token", "composite", "string", "uri", "quantity",
                "number", "date"]  # fmt: skip


def _criteria_sql(
    params: SearchParams, owner_type: Any, base_url: str
) -> list[ColumnElement[bool]]:
    def rank(c: Any) -> int:
        kind = "_id" if c.name == "_id" else c.kind.split(":")[0]
        return _SELECTIVITY.index(kind) if kind in _SELECTIVITY else len(_SELECTIVITY)

    ordered = sorted(params.criteria, key=rank)
    return [
        criterion_sql(c, (owner_type, resource.c.id), base_url, top=True, drive=i == 0)
        for i, c in enumerate(ordered)
    ]


def _total(uow: UnitOfWork, where: list[ColumnElement[bool]], params: SearchParams) -> int | None:
    if params.total in ("accurate", "estimate") or params.summary == "count":
        query = select(func.count()).select_from(resource).where(*where)
        return int(uow.conn.execute(query).scalar_one())
    return None


# ------------------------------------------------------------------ sorting and paging


@dataclass(frozen=True)
class SortKey:
    expression: Any
    descending: bool


def _sort_keys(rtype: str, sort: tuple[str, ...], owner_type: Any) -> list[SortKey]:
    keys = [_sort_key(rtype, key.lstrip("-"), key.startswith("-"), owner_type) for key in sort]
    keys.append(SortKey(resource.c.id, False))  # a unique tiebreaker makes keyset paging exact
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
            (Decimal("-1e30") if numeric else "")
            if descending
            else (Decimal("1e30") if numeric else TEXT_LAST)
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
    where: list[ColumnElement[bool]], keys: list[SortKey], params: SearchParams, backwards: bool
) -> Select[Any]:
    labelled = [k.expression.label(f"sort_{i}") for i, k in enumerate(keys)]
    query = select(*CURRENT_COLUMNS, *labelled).where(*where)
    if params.page:
        position = params.page.get("at")
        if not isinstance(position, list) or len(position) != len(keys):
            raise InvalidRequest("_page does not belong to this search", expression="_page")
        query = query.where(_beyond(keys, [_from_json(v) for v in position], backwards))
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
        return [_to_json(getattr(row, f"sort_{i}")) for i in range(width)]

    has_next = more if not backwards else True
    has_previous = (params.page is not None) if not backwards else more
    next_page = encode_cursor({"dir": "next", "at": at(rows[-1])}) if has_next else None
    previous_page = encode_cursor({"dir": "prev", "at": at(rows[0])}) if has_previous else None
    return next_page, previous_page


def _to_json(value: Any) -> Any:
    return {"decimal": str(value)} if isinstance(value, Decimal) else value


def _from_json(value: Any) -> Any:
    return Decimal(value["decimal"]) if isinstance(value, dict) and "decimal" in value else value


# ------------------------------------------------------------------ includes


def _includes(
    uow: UnitOfWork, matches: list[StoredVersion], includes: tuple[Include, ...], base_url: str
) -> tuple[list[StoredVersion], tuple[str, ...]]:
    if not includes or not matches:
        return [], ()
    seen = {(v.resource_type, v.id) for v in matches}
    included: list[StoredVersion] = []
    frontier = matches
    warnings: list[str] = []
    for round_number in range(4):  # the matches, then up to three :iterate rounds
        active = [i for i in includes if round_number == 0 or i.iterate]
        found = _include_round(uow, frontier, active, seen, base_url)
        if len(included) + len(found) > MAX_INCLUDES:
            found = found[: MAX_INCLUDES - len(included)]
            warnings.append(f"included resources were limited to {MAX_INCLUDES}; narrow the search")
        included.extend(found)
        seen.update((v.resource_type, v.id) for v in found)
        frontier = found
        if not found or warnings:
            break
    return included, tuple(warnings)


def _include_round(
    uow: UnitOfWork,
    frontier: list[StoredVersion],
    includes: list[Include],
    seen: set[tuple[str, str]],
    base_url: str,
) -> list[StoredVersion]:
    wanted: set[tuple[str, str]] = set()
    by_type: dict[str, list[str]] = {}
    for version in frontier:
        by_type.setdefault(version.resource_type, []).append(version.id)
    ref = search_reference
    for inc in includes:
        if inc.reverse:
            targets = [(t, ids) for t, ids in by_type.items() if inc.target_type in (None, t)]
            for target_type, ids in targets:
                query = select(ref.c.resource_id).where(
                    ref.c.resource_type == inc.source_type, ref.c.param == inc.param,
                    ref.c.target_type == target_type, ref.c.target_id.in_(ids),
                    is_local(ref, base_url),
                ).limit(MAX_INCLUDES + 1)  # fmt: skip
                wanted.update((inc.source_type, rid) for (rid,) in uow.conn.execute(query))
        elif inc.source_type in by_type:
            query = select(ref.c.target_type, ref.c.target_id).where(
                ref.c.resource_type == inc.source_type, ref.c.param == inc.param,
                ref.c.resource_id.in_(by_type[inc.source_type]), ref.c.target_id.is_not(None),
                is_local(ref, base_url),
            )  # fmt: skip
            if inc.target_type:
                query = query.where(ref.c.target_type == inc.target_type)
            wanted.update((t, i) for t, i in uow.conn.execute(query) if t)
    return _fetch(uow, sorted(wanted - seen))


def _fetch(uow: UnitOfWork, keys: list[tuple[str, str]]) -> list[StoredVersion]:
    if not keys:
        return []
    by_type: dict[str, list[str]] = {}
    for rtype, rid in keys:
        by_type.setdefault(rtype, []).append(rid)
    out: list[StoredVersion] = []
    for rtype, ids in by_type.items():
        query = select(*CURRENT_COLUMNS).where(
            resource.c.resource_type == rtype, resource.c.id.in_(ids), resource.c.deleted.is_(False)
        )
        if uow.row_filter is not None:  # an included resource is shown only if allowed
            query = query.where(uow.row_filter.sql(rtype, resource.c.id))
        out.extend(to_version(r) for r in uow.conn.execute(query))
    return out
