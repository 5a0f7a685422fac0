"""Rows in and out of the FHIR tables. Only the service layer calls this module.

Each function works inside a :class:`UnitOfWork` (one database transaction,
app/fhir/unit_of_work.py, re-exported here): writes that nothing reads back in the same
transaction are staged on it and flushed together.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

from sqlalchemy import (
    Select,
    Table,
    TextClause,
    Update,
    bindparam,
    delete,
    exists,
    func,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite

from app.errors import ServerError
from app.fhir import jsonio
from app.fhir.instants import to_instant
from app.fhir.tables import INDEX_TABLES, change_event, resource, resource_history

# The unit of work is reached through this module too (storage.open_unit_of_work ...).
from app.fhir.unit_of_work import RowFilter as RowFilter
from app.fhir.unit_of_work import UnitOfWork as UnitOfWork
from app.fhir.unit_of_work import open_unit_of_work as open_unit_of_work
from app.fhir.unit_of_work import planned_for_values as planned_for_values


def now_us() -> int:
    return time.time_ns() // 1000


@dataclass(frozen=True)
class StoredVersion:
    """One version of a resource as stored: the exact bytes plus the server-owned facts."""

    resource_type: str
    id: str
    version_id: int
    last_updated: int  # epoch microseconds
    deleted: bool
    content: bytes | None
    method: str = ""
    # History rows only: whether this version created the resource (None: not recorded)
    created: bool | None = None


@dataclass
class Change:
    """A committed-to-be write, handed to hooks (outbox, audit, subscriptions)."""

    interaction: str  # create | update | patch | delete
    version: StoredVersion


# ---------------------------------------------------------------- reads

CURRENT_COLUMNS = (
    resource.c.resource_type,
    resource.c.id,
    resource.c.version_id,
    resource.c.last_updated,
    resource.c.deleted,
    resource.c.content,
)


def to_version(row: Any, method: str = "") -> StoredVersion:
    return StoredVersion(
        row.resource_type,
        row.id,
        row.version_id,
        row.last_updated,
        row.deleted,
        row.content,
        method,
    )


def get_current(
    uow: UnitOfWork, rtype: str, rid: str, *, lock: bool = False
) -> StoredVersion | None:
    uow.flush()
    query = _current_query(lock and uow.dialect == "postgresql")
    row = uow.conn.execute(query, {"rtype": rtype, "rid": rid}).first()
    return to_version(row) if row else None


@cache
def _current_query(for_update: bool) -> Select[Any]:
    """Built once (the hottest query of all: every read and every write uses it)."""
    query = select(*CURRENT_COLUMNS).where(
        resource.c.resource_type == bindparam("rtype"), resource.c.id == bindparam("rid")
    )
    return query.with_for_update() if for_update else query


def lock_currents(uow: UnitOfWork, rtype: str, ids: Sequence[str]) -> dict[str, StoredVersion]:
    """The current rows of many ids at once (deleted ones included), locked on PostgreSQL."""
    uow.flush()
    query = select(*CURRENT_COLUMNS).where(
        resource.c.resource_type == rtype, resource.c.id.in_(list(ids))
    )
    if uow.dialect == "postgresql":
        query = query.with_for_update()
    return {row.id: to_version(row) for row in uow.conn.execute(query)}


def count_current(uow: UnitOfWork, rtype: str) -> int:
    query = (
        select(func.count())
        .select_from(resource)
        .where(resource.c.resource_type == rtype, resource.c.deleted.is_(False))
    )
    return int(uow.conn.execute(query).scalar_one())


def types_present(uow: UnitOfWork) -> list[str]:
    query = select(resource.c.resource_type).where(resource.c.deleted.is_(False)).distinct()
    return sorted(r[0] for r in uow.conn.execute(query))


def current_page(
    uow: UnitOfWork, rtype: str, after_id: str | None, limit: int
) -> list[StoredVersion]:
    """Current resources of a type in id order, after `after_id` (keyset, for batch jobs)."""
    uow.flush()
    query = select(*CURRENT_COLUMNS).where(
        resource.c.resource_type == rtype, resource.c.deleted.is_(False)
    )
    if after_id is not None:
        query = query.where(resource.c.id > after_id)
    return [to_version(r) for r in uow.conn.execute(query.order_by(resource.c.id).limit(limit))]


def get_version(uow: UnitOfWork, rtype: str, rid: str, version_id: int) -> StoredVersion | None:
    uow.flush()
    h = resource_history
    row = uow.conn.execute(
        select(
            h.c.resource_type, h.c.id, h.c.version_id, h.c.last_updated, h.c.content, h.c.method
        ).where(h.c.resource_type == rtype, h.c.id == rid, h.c.version_id == version_id)
    ).first()
    if row is None:
        return None
    return StoredVersion(
        row.resource_type,
        row.id,
        row.version_id,
        row.last_updated,
        row.method == "DELETE",
        row.content,
        row.method,
    )


# ---------------------------------------------------------------- writes


def try_insert_current(uow: UnitOfWork, version: StoredVersion) -> bool:
    """Insert a brand-new current row now; False if that id already exists (a racing create)."""
    uow.flush()
    values = _current_values(version)
    dialect_insert = postgresql.insert if uow.dialect == "postgresql" else sqlite.insert
    # RETURNING rather than rowcount: psycopg reports -1 for INSERT .. ON CONFLICT DO NOTHING.
    stmt = (
        dialect_insert(resource).values(**values).on_conflict_do_nothing().returning(resource.c.id)
    )
    return uow.conn.execute(stmt).first() is not None


def stage_insert_current(uow: UnitOfWork, version: StoredVersion) -> None:
    """Insert a new current row with a server-assigned (unique) id, batched."""
    uow.stage(resource, _current_values(version))


def update_current(uow: UnitOfWork, version: StoredVersion, expected_version: int) -> bool:
    """Move the current row to `version` and drop the resource's index rows (the caller
    stages the new version's, if any); False, and nothing changed, if someone else moved it
    first. On PostgreSQL one statement (one round trip instead of two)."""
    uow.flush()
    values = {
        "rtype": version.resource_type,
        "rid": version.id,
        "expected": expected_version,
        "version_id": version.version_id,
        "last_updated": version.last_updated,
        "deleted": version.deleted,
        "content": version.content,
    }
    if uow.dialect == "postgresql":
        return uow.conn.execute(_pg_move_current_statement(), values).scalar_one() == 1
    if uow.conn.execute(_move_current_statement(), values).rowcount != 1:
        return False
    delete_index(uow, version.resource_type, version.id)
    return True


@cache
def _move_current_statement() -> Update:
    return (
        update(resource)
        .where(
            resource.c.resource_type == bindparam("rtype"),
            resource.c.id == bindparam("rid"),
            resource.c.version_id == bindparam("expected"),
        )
        .values(
            version_id=bindparam("version_id"),
            last_updated=bindparam("last_updated"),
            deleted=bindparam("deleted"),
            content=bindparam("content"),
        )
    )


@cache
def _pg_move_current_statement() -> Select[Any]:
    """The update and, only if it moved the row, the deletion of every index table's rows
    (data-modifying CTEs; each DELETE reads the UPDATE's RETURNING, so it runs after it)."""
    moved = _move_current_statement().returning(resource.c.id).cte("moved")
    dropped = [
        delete(table)
        .where(
            table.c.resource_type == bindparam("rtype"),
            table.c.resource_id == bindparam("rid"),
            exists(select(moved.c.id)),
        )
        .cte(f"dropped_{i}")
        for i, table in enumerate(INDEX_TABLES.values())
    ]
    return select(func.count()).select_from(moved).add_cte(*dropped)


def stage_history(
    uow: UnitOfWork, version: StoredVersion, method: str, *, resurrects: bool = False
) -> None:
    """`resurrects`: the version brings back a deleted resource, a create (201) that the row
    alone cannot show; a POST and a first version are creates anyway."""
    created = method == "POST" or version.version_id == 1 or resurrects
    uow.stage(
        resource_history,
        {
            "resource_type": version.resource_type,
            "id": version.id,
            "version_id": version.version_id,
            "last_updated": version.last_updated,
            "method": method,
            "content": version.content,
            "created": created,
        },
    )


def stage_change_event(uow: UnitOfWork, change: Change) -> None:
    v = change.version
    uow.stage(
        change_event,
        {
            "resource_type": v.resource_type,
            "resource_id": v.id,
            "version_id": v.version_id,
            "interaction": change.interaction,
            "occurred_at": v.last_updated,
            "request_id": uow.ctx.request_id,
        },
    )


def replace_index(
    uow: UnitOfWork, rtype: str, rid: str, rows: dict[Table, list[dict[str, Any]]], *, new: bool
) -> None:
    """Replace the search index rows of one resource (nothing to delete for a brand-new one)."""
    if not new:
        delete_index(uow, rtype, rid)
    stage_index(uow, rows)


def stage_index(uow: UnitOfWork, rows: dict[Table, list[dict[str, Any]]]) -> None:
    for table, table_rows in rows.items():
        for row in table_rows:
            uow.stage(table, row)


def delete_index(uow: UnitOfWork, rtype: str, rid: str) -> None:
    uow.flush()
    if uow.dialect == "postgresql":
        # One round trip for all index tables instead of one per table.
        uow.conn.execute(_pg_delete_index_statement(), {"rtype": rtype, "rid": rid})
        return
    for table in INDEX_TABLES.values():
        uow.conn.execute(
            delete(table).where(table.c.resource_type == rtype, table.c.resource_id == rid)
        )


@cache
def _pg_delete_index_statement() -> TextClause:
    names = [t.name for t in INDEX_TABLES.values()]
    ctes = ", ".join(
        f"d{i} AS (DELETE FROM {name} WHERE resource_type = :rtype AND resource_id = :rid)"
        for i, name in enumerate(names[1:])
    )
    last = f"DELETE FROM {names[0]} WHERE resource_type = :rtype AND resource_id = :rid"
    return text(f"WITH {ctes} {last}")


def _current_values(version: StoredVersion) -> dict[str, Any]:
    return {
        "resource_type": version.resource_type,
        "id": version.id,
        "version_id": version.version_id,
        "last_updated": version.last_updated,
        "deleted": version.deleted,
        "content": version.content,
    }


def stamp(rtype: str, rid: str, body: dict[str, Any], version_id: int) -> StoredVersion:
    """The stored bytes: the client's JSON, with the id and the server-owned meta set."""
    last_updated = now_us()
    meta = dict(body.get("meta") or {})
    meta.pop("versionId", None)
    meta.pop("lastUpdated", None)
    meta = {"versionId": str(version_id), "lastUpdated": to_instant(last_updated), **meta}
    stored = {"resourceType": rtype, "id": rid, "meta": meta}
    stored.update((k, v) for k, v in body.items() if k not in stored)
    try:
        content = jsonio.dumps(stored)
    except TypeError as exc:  # cannot happen for parsed JSON; guard against callers' bugs
        raise ServerError(f"resource is not serializable: {exc}") from exc
    return StoredVersion(rtype, rid, version_id, last_updated, False, content)
