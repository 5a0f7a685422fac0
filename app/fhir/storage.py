"""Rows in and out of the FHIR tables. Only the service layer calls this module.

A :class:`UnitOfWork` is one database transaction. Inserts that nothing in the same
transaction reads back (history rows, index rows, outbox rows, brand-new resources) are
staged and sent as one executemany per table: a 100-entry transaction costs a handful of
round trips, not hundreds.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cache
from operator import itemgetter
from typing import Any, Protocol

from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
    Insert,
    Select,
    Table,
    TextClause,
    Update,
    bindparam,
    delete,
    exists,
    func,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite

from app.context import RequestContext
from app.fhir.tables import INDEX_TABLES, change_event, resource, resource_history


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


@dataclass
class Change:
    """A committed-to-be write, handed to hooks (outbox, audit, subscriptions)."""

    interaction: str  # create | update | patch | delete
    version: StoredVersion


class RowFilter(Protocol):
    """Which rows the caller may see, as a condition on a resource's (type, id) columns."""

    def sql(self, owner_type: Any, owner_id: Any) -> ColumnElement[bool]: ...

    # The resources of `rtype` that a chain or _has tests, and those an include returns.
    def criteria_sql(self, rtype: str, owner_id: Any) -> ColumnElement[bool]: ...

    def included_sql(self, rtype: str, owner_id: Any) -> ColumnElement[bool]: ...


@dataclass
class UnitOfWork:
    conn: Connection
    ctx: RequestContext
    changes: list[Change] = field(default_factory=list)
    # Set by the authorization hook when the caller may see only some rows: searches,
    # includes and history AND it into their SQL.
    row_filter: RowFilter | None = None
    notes: dict[str, Any] = field(default_factory=dict)  # hooks' per-transaction state
    # The caller promised to only read (write=False). On SQLite such a unit is a shared
    # transaction that must not write at all (hooks record elsewhere: audit group.py); on
    # PostgreSQL it runs in autocommit and sends only `with_commit`, after its reads.
    read_only: bool = False
    # PostgreSQL: statements (SQL, parameters) sent together with COMMIT, after every staged
    # row, in the same network round trip (the audit records; see audit/chain.py).
    with_commit: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    # Called once the transaction has ended, with True if it committed (False: rolled back,
    # or its outcome is unknown). Hooks release what they held for the commit here.
    after_end: list[Callable[[bool], None]] = field(default_factory=list)
    _staged: dict[Table, list[dict[str, Any]]] = field(default_factory=dict)

    def stage(self, table: Table, row: dict[str, Any]) -> None:
        self._staged.setdefault(table, []).append(row)

    def flush(self) -> None:
        """Send staged inserts; call before any read that could see them."""
        if not self._staged:
            return
        staged, self._staged = self._staged, {}
        if self.dialect == "postgresql":
            _flush_pipelined(self.conn, staged)
            return
        for table, rows in staged.items():
            self.conn.execute(_insert_statement(table), rows)

    def flush_bulk(self) -> None:
        """Send staged inserts of a bulk job (thousands of rows): on PostgreSQL with COPY,
        which costs a fraction of an INSERT per row."""
        if self.dialect != "postgresql" or not self._staged:
            self.flush()
            return
        staged, self._staged = self._staged, {}
        driver = self.conn.connection.driver_connection
        assert driver is not None
        with driver.cursor() as cursor:
            for table, rows in staged.items():
                columns = tuple(rows[0])
                values_of = _row_values(columns)
                with cursor.copy(f"COPY {table.name} ({', '.join(columns)}) FROM STDIN") as copy:
                    for row in rows:
                        copy.write_row(values_of(row))

    @property
    def dialect(self) -> str:
        return self.conn.dialect.name


def _flush_pipelined(conn: Connection, staged: dict[Table, list[dict[str, Any]]]) -> None:
    """All staged inserts, every table, in one network round trip (psycopg pipeline mode).

    A create writes the resource, its history row, the outbox row and index rows in five or
    six tables; sent one statement at a time that is as many round trips, which dominates
    the cost of a write on PostgreSQL.
    """
    driver = conn.connection.driver_connection
    assert driver is not None
    with driver.pipeline(), driver.cursor() as cursor:
        _send_staged(cursor, staged)


def _send_staged(cursor: Any, staged: dict[Table, list[dict[str, Any]]]) -> None:
    for table, rows in staged.items():
        columns = tuple(rows[0])
        values_of = _row_values(columns)
        cursor.executemany(_pg_insert_sql(table.name, columns), [values_of(r) for r in rows])


@cache
def _row_values(columns: tuple[str, ...]) -> Callable[[dict[str, Any]], tuple[Any, ...]]:
    """A staged row's values in `columns` order (itemgetter: C speed, thousands of rows a
    second go through here)."""
    if len(columns) == 1:
        (only,) = columns
        return lambda row: (row[only],)
    return itemgetter(*columns)


def _commit_pipelined(uow: UnitOfWork) -> None:
    """Staged rows, the statements sent with the commit, and COMMIT: one round trip."""
    staged, uow._staged = uow._staged, {}
    driver = uow.conn.connection.driver_connection
    assert driver is not None
    if not staged and not uow.with_commit:
        driver.commit()  # nothing written: pipeline mode would cost more than it saves
        return
    with driver.pipeline(), driver.cursor() as cursor:
        _send_staged(cursor, staged)
        for sql, params in uow.with_commit:
            cursor.execute(sql, params)
        driver.commit()


def _end_read(uow: UnitOfWork) -> None:
    """A PostgreSQL read unit (autocommit) sends what hooks queued for its commit (its audit
    record): one statement is one round trip and commits alone; several go in a transaction
    of their own, to commit together."""
    if uow._staged:
        raise RuntimeError("a read-only unit of work staged rows to write")
    if not uow.with_commit:
        return
    driver = uow.conn.connection.driver_connection
    assert driver is not None
    if len(uow.with_commit) == 1:
        ((sql, params),) = uow.with_commit
        driver.execute(sql, params)
        return
    with driver.transaction(), driver.pipeline(), driver.cursor() as cursor:
        for sql, params in uow.with_commit:
            cursor.execute(sql, params)


@cache
def _pg_insert_sql(table_name: str, columns: tuple[str, ...]) -> str:
    placeholders = ", ".join(["%s"] * len(columns))
    return f"INSERT INTO {table_name} ({', '.join(columns)}) VALUES ({placeholders})"


@cache
def _insert_statement(table: Table) -> Insert:
    """Built once: constructing an Insert costs more than executing a cached one."""
    return insert(table)


@contextmanager
def open_unit_of_work(engine: Engine, ctx: RequestContext, *, write: bool) -> Iterator[UnitOfWork]:
    """One transaction. A read-only unit on SQLite runs as a shared (deferred) transaction, so
    readers never queue behind the single writer lock; it must not write (a deferred SQLite
    transaction that has read cannot safely start writing), and hooks that must record
    something about a read (its audit record) write it elsewhere (`uow.read_only`).
    On PostgreSQL the staged rows, the statements queued in `uow.with_commit` and COMMIT go
    in one network round trip; a read-only unit runs in autocommit (see _end_read)."""
    with engine.connect() as conn:
        postgresql = conn.dialect.name == "postgresql"
        if postgresql and not write:
            # No BEGIN and COMMIT round trips around a read: at READ COMMITTED a transaction
            # gives its statements nothing that autocommit does not (each still sees the
            # data committed when it starts), and a read holds no locks.
            conn = conn.execution_options(isolation_level="AUTOCOMMIT")
        else:
            conn = conn.execution_options(for_write=write)
        uow = UnitOfWork(conn=conn, ctx=ctx, read_only=not write)
        committed = False
        try:
            with conn.begin():
                yield uow
                if not postgresql:
                    uow.flush()
                elif write:
                    _commit_pipelined(uow)  # SQLAlchemy's COMMIT that follows finds nothing
                else:
                    _end_read(uow)
            committed = True
        finally:
            for ended in uow.after_end:
                ended(committed)


@contextmanager
def planned_for_values(uow: UnitOfWork) -> Iterator[None]:
    """Statements run inside are planned for their parameters' values every time.

    psycopg prepares a statement after its fifth run on a connection, and PostgreSQL then
    may switch to a generic plan, made without the values. For a search that plan rests on
    guesses: `subject=Patient/p` was estimated at one match (four equalities multiplied), so
    the generic plan fetched all 1,338 of a patient's Observations to sort them and keep
    ten: 12 ms alone and 60 ms under load, where a plan for the values merges the page from
    an index in 1.3 ms (session 7). Unprepared, each run gets a plan for its values; the
    planning costs far less than a wrong plan."""
    if uow.dialect != "postgresql":
        yield
        return
    driver = uow.conn.connection.driver_connection
    assert driver is not None
    saved = driver.prepare_threshold
    driver.prepare_threshold = None  # psycopg: never use or make a prepared statement
    try:
        yield
    finally:
        driver.prepare_threshold = saved


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


def stage_history(uow: UnitOfWork, version: StoredVersion, method: str) -> None:
    uow.stage(
        resource_history,
        {
            "resource_type": version.resource_type,
            "id": version.id,
            "version_id": version.version_id,
            "last_updated": version.last_updated,
            "method": method,
            "content": version.content,
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
