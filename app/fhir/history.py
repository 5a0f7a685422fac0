"""History pages: a resource's, a type's or the whole server's versions, newest first, paged
by keyset (the position of the last entry shown) rather than OFFSET."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlencode

from sqlalchemy import and_, exists, or_, select

from app.digits import whole_number
from app.fhir.instants import to_instant
from app.fhir.storage import StoredVersion, UnitOfWork
from app.fhir.tables import resource_history

# The columns' ranges (version_id is an INTEGER, last_updated a BIGINT on PostgreSQL): a
# number from a URL or a paging token outside them would fail in the database, a 500.
MAX_VERSION_ID = 2**31 - 1
MAX_INSTANT_US = 2**63 - 1


def parse_version_id(text: str) -> int | None:
    """The version number a URL segment or header names, or None when it names none (only
    ASCII digits count: "²".isdigit() is true, and int() refuses it). A versionId is a string
    (R4 Meta.versionId, an id) and this server writes "1", "2", ...: "01" names no version
    (it answered version 1, whose meta says "1", as If-Match refuses `W/"01"`)."""
    number = whole_number(text, MAX_VERSION_ID + 1)
    if number is None or number > MAX_VERSION_ID or text != str(number):
        return None
    return number


@dataclass(frozen=True)
class HistoryCursor:
    """Keyset position: the last entry of the previous page (newest first ordering)."""

    last_updated: int
    resource_type: str
    id: str
    version_id: int

    def __post_init__(self) -> None:
        if not (
            0 <= self.version_id <= MAX_VERSION_ID and abs(self.last_updated) <= MAX_INSTANT_US
        ):
            raise ValueError("history position out of range")


@dataclass(frozen=True)
class HistoryResult:
    """One page of a history listing, and where the next one starts."""

    versions: list[StoredVersion]
    next_cursor: HistoryCursor | None


def history_page(
    uow: UnitOfWork,
    *,
    rtype: str | None,
    rid: str | None,
    since: int | None,
    current_during: tuple[int, int] | None,
    after: HistoryCursor | None,
    limit: int,
) -> list[StoredVersion]:
    """Versions newest first; `after` continues a previous page without OFFSET.
    `current_during` [low, high) in µs (`_at`) keeps the versions current at some moment of
    it: written before its end, and not replaced by a later version by its start."""
    uow.flush()
    h = resource_history
    query = select(
        h.c.resource_type,
        h.c.id,
        h.c.version_id,
        h.c.last_updated,
        h.c.method,
        h.c.content,
        h.c.created,
    )
    if rtype:
        query = query.where(h.c.resource_type == rtype)
    if rid:
        query = query.where(h.c.id == rid)
    if since is not None:
        query = query.where(h.c.last_updated >= since)
    if current_during is not None:
        low, high = current_during
        later = resource_history.alias("later")
        replaced = exists().where(
            later.c.resource_type == h.c.resource_type,
            later.c.id == h.c.id,
            later.c.version_id > h.c.version_id,
            later.c.last_updated <= low,
        )
        query = query.where(h.c.last_updated < high, ~replaced)
    if after is not None:
        query = query.where(
            or_(
                h.c.last_updated < after.last_updated,
                and_(
                    h.c.last_updated == after.last_updated,
                    or_(
                        h.c.resource_type > after.resource_type,
                        and_(h.c.resource_type == after.resource_type, h.c.id > after.id),
                        and_(
                            h.c.resource_type == after.resource_type,
                            h.c.id == after.id,
                            h.c.version_id < after.version_id,
                        ),
                    ),
                ),
            )
        )
    if uow.row_filter is not None:
        owner_type = rtype if rtype else h.c.resource_type
        query = query.where(uow.row_filter.sql(owner_type, h.c.id))
    query = query.order_by(
        h.c.last_updated.desc(), h.c.resource_type, h.c.id, h.c.version_id.desc()
    ).limit(limit)
    return [
        StoredVersion(
            r.resource_type,
            r.id,
            r.version_id,
            r.last_updated,
            r.method == "DELETE",
            r.content,
            r.method,
            r.created,
        )
        for r in uow.conn.execute(query)
    ]


def history_query(since: int | None, at: tuple[int, int] | None) -> str:
    """A history listing's criteria as a query string (the audit trail's BALP Query entity
    records it, as a search's criteria; paging and _count are left out, as for searches).
    `_at` is recorded as the start of its period."""
    pairs = [("_since", since), ("_at", at[0] if at else None)]
    return urlencode([(k, to_instant(v)) for k, v in pairs if v is not None])
