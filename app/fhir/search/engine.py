"""Turn SearchParams into SQL over the current table and the token index, with keyset paging."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, and_, exists, false, func, or_, select

from app.errors import InvalidRequest
from app.fhir.instants import parse_instant
from app.fhir.search.params import Criterion, SearchParams, encode_cursor
from app.fhir.storage import StoredVersion, UnitOfWork
from app.fhir.tables import resource, search_token

DEFAULT_COUNT = 50
MAX_COUNT = 1000
_PREFIX = re.compile(r"^(eq|ne|gt|lt|ge|le|sa|eb|ap)?(.*)$")


@dataclass(frozen=True)
class SearchResult:
    versions: list[StoredVersion]
    total: int | None
    next_page: str | None  # cursor token for the next page, if any
    ignored: tuple[str, ...]


def search(uow: UnitOfWork, rtype: str, params: SearchParams) -> SearchResult:
    uow.flush()
    where = [resource.c.resource_type == rtype, resource.c.deleted.is_(False)]
    where += [_criterion_sql(rtype, c) for c in params.criteria]
    count = min(params.count if params.count is not None else DEFAULT_COUNT, MAX_COUNT)
    total = _total(uow, where, params)
    if count == 0 or params.summary == "count":
        return SearchResult([], total, None, params.ignored)
    order_cols, descending = _order(params.sort)
    query = select(
        resource.c.resource_type,
        resource.c.id,
        resource.c.version_id,
        resource.c.last_updated,
        resource.c.deleted,
        resource.c.content,
    ).where(*where)
    if params.page:
        query = query.where(_after(order_cols, descending, params.page))
    query = query.order_by(
        *[c.desc() if d else c for c, d in zip(order_cols, descending, strict=True)]
    )
    rows = list(uow.conn.execute(query.limit(count + 1)))
    page, more = rows[:count], len(rows) > count
    versions = [
        StoredVersion(r.resource_type, r.id, r.version_id, r.last_updated, r.deleted, r.content)
        for r in page
    ]
    next_page = None
    if more and page:
        last = page[-1]
        next_page = encode_cursor(tuple(getattr(last, c.name) for c in order_cols))
    if total is None and not params.page and not more:
        total = len(versions)
    return SearchResult(versions, total, next_page, params.ignored)


def _total(uow: UnitOfWork, where: list[ColumnElement[bool]], params: SearchParams) -> int | None:
    if params.total == "accurate" or params.summary == "count":
        return int(
            uow.conn.execute(select(func.count()).select_from(resource).where(*where)).scalar_one()
        )
    return None


def _order(sort: tuple[str, ...]) -> tuple[list[Any], list[bool]]:
    cols: list[Any] = []
    desc: list[bool] = []
    for key in sort:
        col = resource.c.last_updated if key.lstrip("-") == "_lastUpdated" else resource.c.id
        if col not in cols:
            cols.append(col)
            desc.append(key.startswith("-"))
    if resource.c.id not in cols:  # a unique tiebreaker makes keyset paging exact
        cols.append(resource.c.id)
        desc.append(False)
    return cols, desc


def _after(
    cols: list[Any], descending: list[bool], cursor: tuple[object, ...]
) -> ColumnElement[bool]:
    """Rows strictly after the cursor in (col1, col2, ...) order, honouring each direction."""
    if len(cursor) != len(cols):
        raise InvalidRequest("_page does not belong to this search", expression="_page")
    clauses = []
    for i, (col, desc) in enumerate(zip(cols, descending, strict=True)):
        equal_prefix = [c == cursor[j] for j, c in enumerate(cols[:i])]
        beyond = col < cursor[i] if desc else col > cursor[i]
        clauses.append(and_(*equal_prefix, beyond))
    return or_(*clauses)


def _criterion_sql(rtype: str, criterion: Criterion) -> ColumnElement[bool]:
    if criterion.name == "_id":
        return resource.c.id.in_([v for v in criterion.values if v])
    if criterion.name == "identifier":
        return or_(*[_token_exists(rtype, "identifier", v) for v in criterion.values])
    if criterion.name == "_lastUpdated":
        return or_(*[_date_sql(resource.c.last_updated, v) for v in criterion.values])
    raise InvalidRequest(f"search parameter '{criterion.name}' is not supported")


def _token_exists(rtype: str, param: str, value: str) -> ColumnElement[bool]:
    t = search_token
    conds = [t.c.resource_type == rtype, t.c.resource_id == resource.c.id, t.c.param == param]
    if "|" in value:
        system, _, code = value.partition("|")
        conds.append(t.c.system.is_(None) if system == "" else t.c.system == system)
        if code:
            conds.append(t.c.code == code)
    elif value:
        conds.append(t.c.code == value)
    else:
        return false()
    return exists().where(*conds)


def _date_sql(column: Any, raw: str) -> ColumnElement[bool]:
    match = _PREFIX.match(raw)
    assert match
    prefix, value = match.group(1) or "eq", match.group(2)
    try:
        low, high = _date_range(value)
    except ValueError as exc:
        raise InvalidRequest(f"'{value}' is not a valid date", expression="_lastUpdated") from exc
    conditions = {
        "eq": and_(column >= low, column < high),
        "ne": or_(column < low, column >= high),
        "gt": column >= high,
        "sa": column >= high,
        "ge": column >= low,
        "lt": column < low,
        "eb": column < low,
        "le": column < high,
    }
    if prefix not in conditions:
        raise InvalidRequest(
            f"prefix '{prefix}' is not supported for dates", expression="_lastUpdated"
        )
    return conditions[prefix]


_TIME = re.compile(r"^\d{2}:\d{2}(:\d{2})?(\.\d+)?")


def _date_range(value: str) -> tuple[int, int]:
    """[low, high) in microseconds for a date of any precision."""
    low = parse_instant(value)
    day_part, _, time_part = value.partition("T")
    if time_part:
        match = _TIME.match(time_part)
        if match is None:
            raise ValueError(value)
        if match.group(2):  # fractional seconds: as precise as we store
            return low, low + 1
        return low, low + (1_000_000 if match.group(1) else 60_000_000)
    if len(day_part) == 4:
        return low, parse_instant(str(int(day_part) + 1))
    if len(day_part) == 7:
        year, month = int(day_part[:4]), int(day_part[5:7])
        return low, parse_instant(f"{year + 1}-01" if month == 12 else f"{year}-{month + 1:02d}")
    return low, low + 86_400_000_000
