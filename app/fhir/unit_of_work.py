"""One database transaction (a :class:`UnitOfWork`) and how its writes reach the database.

Inserts that nothing in the same transaction reads back (history rows, index rows, outbox
rows, brand-new resources) are staged and sent as one executemany per table: a 100-entry
transaction costs a handful of round trips, not hundreds. On PostgreSQL the staged rows,
the statements queued for the commit and COMMIT go in one network round trip, except that
a table with many rows goes ahead of it by COPY (COPY_FROM_ROWS). The rows themselves are
app.fhir.storage's business.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cache
from operator import itemgetter
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy import ColumnElement, Connection, Engine, Insert, Table, insert

from app.context import RequestContext

if TYPE_CHECKING:
    from app.fhir.storage import Change


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
                _copy_rows(cursor, table, rows)

    @contextmanager
    def trial(self) -> Iterator[None]:
        """Writes made inside are undone when it ends (a SAVEPOINT rolled back), whatever
        happens: what a write would store, staged and checked but never kept ($validate).
        Rows staged inside are flushed inside (by the checks that read them) or dropped."""
        self.flush()  # what was staged before stays the transaction's own
        savepoint = self.conn.begin_nested()
        try:
            yield
        finally:
            self._staged = {}
            savepoint.rollback()

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
    staged = _copy_many(driver, staged)
    if staged:
        with driver.pipeline(), driver.cursor() as cursor:
            _send_staged(cursor, staged)


# When a flush or commit stages at least COPY_FROM_TOTAL rows, each table with at least
# COPY_FROM_ROWS of them is sent by COPY, ahead of the pipeline that carries the rest (COPY
# cannot run inside one). On one ORU^R01's 126 rows executemany cost ~1.2 ms of client CPU
# and ~0.8 ms of PostgreSQL's, COPY ~0.6 and ~0.5, despite a round trip per table; but each
# COPY is a round trip more, and for a message's few dozen rows (an A08: 27 and 26 rows in
# two flushes) the extra round trips cost more than COPY saves (in process, A08 +4..+14 %
# CPU, +15..+19 % wall with COPY from 8 rows a table). BENCHMARKS.md, session 17.
COPY_FROM_ROWS = 8
COPY_FROM_TOTAL = 100


def _copy_many(
    driver: Any, staged: dict[Table, list[dict[str, Any]]]
) -> dict[Table, list[dict[str, Any]]]:
    """COPY the tables that have many staged rows; return the others, to pipeline."""
    if sum(len(rows) for rows in staged.values()) < COPY_FROM_TOTAL:
        return staged
    rest: dict[Table, list[dict[str, Any]]] = {}
    with driver.cursor() as cursor:
        for table, rows in staged.items():
            if len(rows) >= COPY_FROM_ROWS:
                _copy_rows(cursor, table, rows)
            else:
                rest[table] = rows
    return rest


def _copy_rows(cursor: Any, table: Table, rows: list[dict[str, Any]]) -> None:
    columns = tuple(rows[0])
    values_of = _row_values(columns)
    with cursor.copy(f"COPY {table.name} ({', '.join(columns)}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(values_of(row))


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
    staged = _copy_many(driver, staged)
    if not staged and not uow.with_commit:
        driver.commit()  # nothing more to write: pipeline mode would cost more than it saves
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
