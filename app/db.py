"""Engine creation for SQLite (embedded default) and PostgreSQL (psycopg 3), and migrations."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import make_url

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
