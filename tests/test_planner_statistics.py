"""PostgreSQL planner statistics kept fresh by the server (app.db.analyze_grown_tables): a table
that changed by a fifth since its last ANALYZE is analyzed, a small change is not."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, text

from app.db import GROWN_ROWS, analyze_grown_tables, create_db_engine

PROBE = "statistics_probe"


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = create_db_engine(database_url)
    yield engine
    engine.dispose()


def _changed_since_analyze(engine: Engine, at_least: int) -> int:
    """Rows changed since the probe's last ANALYZE, once the inserting session's counts have
    reached the statistics (a backend reports them after its transaction, within a second)."""
    deadline = time.monotonic() + 10
    while True:
        with engine.connect() as conn:
            changed = conn.execute(
                text("SELECT n_mod_since_analyze FROM pg_stat_user_tables WHERE relname = :t"),
                {"t": PROBE},
            ).scalar()
        if (changed or 0) >= at_least or time.monotonic() > deadline:
            return int(changed or 0)
        time.sleep(0.2)


def _insert(engine: Engine, rows: int) -> None:
    """Insert `rows` rows on a connection of their own, then close it: a PostgreSQL 15 backend
    flushes its table statistics when it ends (or only after 10 s idle, which a pooled
    connection left alone would be: the counts then missed the wait under load)."""
    with engine.connect() as conn:
        conn.execute(text(f"INSERT INTO {PROBE} SELECT generate_series(1, {rows})"))
        conn.commit()
        conn.invalidate()  # closes the DBAPI connection: the backend exits


def test_grown_tables_are_analyzed(engine: Engine, is_postgres: bool) -> None:
    if not is_postgres:
        assert analyze_grown_tables(engine) == []  # SQLite's are refreshed whole
        return
    with engine.begin() as conn:
        # autovacuum off for the probe, so that only the function under test analyzes it
        conn.execute(text(f"CREATE TABLE {PROBE} (n int) WITH (autovacuum_enabled = false)"))
    try:
        _insert(engine, 4 * GROWN_ROWS)
        assert _changed_since_analyze(engine, 4 * GROWN_ROWS) >= 4 * GROWN_ROWS
        # The live server's own rounds hold the statistics lock while they run (one that
        # finds it held analyzes nothing): under load a round can overlap this call.
        deadline = time.monotonic() + 20
        while PROBE not in (found := analyze_grown_tables(engine)):
            assert time.monotonic() < deadline, found
            time.sleep(0.2)
        with engine.connect() as conn:
            analyzed, changed = conn.execute(
                text(
                    "SELECT last_analyze IS NOT NULL, n_mod_since_analyze"
                    " FROM pg_stat_user_tables WHERE relname = :t"
                ),
                {"t": PROBE},
            ).one()
        assert analyzed and changed == 0

        _insert(engine, 10)  # a few more: below both thresholds
        assert _changed_since_analyze(engine, 10) >= 10
        assert PROBE not in analyze_grown_tables(engine)
    finally:
        with engine.begin() as conn:
            conn.execute(text(f"DROP TABLE {PROBE}"))
