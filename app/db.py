"""Engine creation for SQLite (embedded default) and PostgreSQL (psycopg 3), and migrations."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

import migrations

log = logging.getLogger(__name__)


def create_db_engine(url: str, *, pool_size: int = 10) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return _sqlite_engine(url)
    return create_engine(
        url,
        pool_size=pool_size,
        # Few overflow connections: each one is opened and closed per use, and that churn
        # cost PostgreSQL half its CPU under load (see BENCHMARKS.md).
        max_overflow=max(2, pool_size // 4),
        # No pre-ping: it costs a round trip on every request. Stale connections are
        # recycled by age instead, and a broken one fails just that request.
        pool_recycle=1800,
    )


def libpq_dsn(url: str) -> str:
    """A PostgreSQL SQLAlchemy URL as psycopg.connect() takes it (for connections a process
    holds for its lifetime, outside the pool: listeners, the audit appender)."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def _sqlite_engine(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(
        url,
        connect_args={"check_same_thread": False, "timeout": 30},
        pool_size=8,
        max_overflow=8,
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Take over transaction control from pysqlite so we can say BEGIN IMMEDIATE
        # for writers (no deadlock-prone lock upgrades) and plain BEGIN for readers.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA busy_timeout=30000")
        # After a checkpoint, shrink the WAL file back (otherwise it keeps its peak size:
        # 8 GB after loading 100,000 Observations under concurrent readers).
        cur.execute("PRAGMA journal_size_limit=67108864")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        mode = "IMMEDIATE" if conn.get_execution_options().get("for_write") else "DEFERRED"
        conn.exec_driver_sql(f"BEGIN {mode}")

    return engine


@contextmanager
def write_transaction(engine: Engine) -> Iterator[Connection]:
    """A transaction that will write: on SQLite it takes the write lock at BEGIN (IMMEDIATE).

    `engine.begin()` starts a deferred transaction there, and a deferred transaction that
    reads and then writes fails at once ("database is locked", no busy wait) when another
    connection wrote in between -- which background writers (audit copies, group commits)
    make likely. Nested reads on other connections stay possible (WAL readers never wait)."""
    with engine.connect() as conn:
        conn = conn.execution_options(for_write=True)
        with conn.begin():
            yield conn


def refresh_statistics(engine: Engine) -> None:
    """Give SQLite's planner statistics (PostgreSQL's autovacuum keeps its own).

    Without them SQLite may check a per-resource criterion by range-scanning a value index
    instead of looking up the owner index: 2.4 s instead of 3 ms for patient + code + date
    at 100,000 Observations. `analysis_limit` keeps ANALYZE to a sample (under a second).
    """
    if engine.dialect.name != "sqlite":
        return
    with engine.connect() as conn:
        conn.exec_driver_sql("PRAGMA analysis_limit=1000")
        conn.exec_driver_sql("ANALYZE")
        conn.commit()  # the statistics are rows (sqlite_stat1): kept only if committed


# PostgreSQL: a table is re-analyzed by the server once this many rows changed since its
# statistics were taken (and at least GROWN_ROWS): autovacuum waits for its next round (up to
# a minute) and a tenth of the table, so a database filled from empty planned every search
# with the statistics of its first seconds.
GROWN_FRACTION = 0.2
GROWN_ROWS = 500
GROWN_CHECK_SECONDS = 10.0  # how often each server process looks (one cheap query)
_STATISTICS_LOCK = 0x4D53_5354_4154  # "MSSTAT": one process at a time analyzes

_GROWN_TABLES = text(
    "SELECT relname FROM pg_stat_user_tables WHERE schemaname = current_schema()"
    " AND n_mod_since_analyze > greatest(:rows, :fraction * n_live_tup) ORDER BY relname"
)


def analyze_grown_tables(engine: Engine) -> list[str]:
    """PostgreSQL: ANALYZE the tables that changed much since their last statistics; the
    names analyzed. A store filled from empty in seconds otherwise ran its searches and
    identifier matches on plans made for empty tables until autovacuum came round
    (fhirload's search phase on a fresh database: 145 searches/s with a p50 of 91 ms, 282/s
    and 38 ms with this; an HL7 identifier match took 3 ms instead of 0.2). ANALYZE reads a
    sample and blocks neither reads nor writes; a table that another ANALYZE (autovacuum's)
    holds is left for the next round. No-op on SQLite."""
    if engine.dialect.name != "postgresql":
        return []
    analyzed: list[str] = []
    with engine.connect() as conn:
        conn = conn.execution_options(isolation_level="AUTOCOMMIT")
        if not conn.execute(
            text("SELECT pg_try_advisory_lock(:k)"), {"k": _STATISTICS_LOCK}
        ).scalar():
            return []
        try:
            conn.execute(text("SET lock_timeout = '200ms'"))
            grown = (
                conn.execute(_GROWN_TABLES, {"rows": GROWN_ROWS, "fraction": GROWN_FRACTION})
                .scalars()
                .all()
            )
            for name in grown:
                try:
                    conn.execute(text(f'ANALYZE "{name}"'))
                    analyzed.append(name)
                except OperationalError:  # lock_timeout: autovacuum is analyzing it
                    continue
        finally:
            conn.execute(text("RESET lock_timeout"))
            conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _STATISTICS_LOCK})
    return analyzed


def run_migrations(url: str) -> None:
    """Bring the schema to the newest Alembic revision (the only way tables are made)."""
    from alembic import command
    from alembic.config import Config

    script_location = Path(migrations.__file__).parent
    config = Config()
    config.set_main_option("script_location", str(script_location))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    engine = create_db_engine(url, pool_size=1)
    try:
        with engine.connect() as conn:
            if engine.dialect.name == "postgresql":
                # Several processes may start at once: one migrates, the others wait.
                conn.execute(text("SELECT pg_advisory_lock(727274)"))
                conn.commit()
            try:
                config.attributes["connection"] = conn
                command.upgrade(config, "head")
                conn.commit()
            finally:
                if engine.dialect.name == "postgresql":
                    conn.execute(text("SELECT pg_advisory_unlock(727274)"))
                    conn.commit()
    finally:
        engine.dispose()
