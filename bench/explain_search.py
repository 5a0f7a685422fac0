#!/usr/bin/env python3
"""Print PostgreSQL's plan (EXPLAIN ANALYZE) for searches, to design indexes against.

    python bench/explain_search.py DATABASE_URL "Observation?subject=Patient/p1&code=8867-4"

Compiles each query exactly as the server would (app.fhir.search), then runs EXPLAIN ANALYZE on
the page query. Read-only.
"""

from __future__ import annotations

import sys
from urllib.parse import parse_qsl

from sqlalchemy import create_engine, text
from sqlalchemy.dialects import postgresql

from app.fhir.search import SearchParams
from app.fhir.search.engine import _page_query, _sort_keys
from app.fhir.search.sql import criterion_sql
from app.fhir.tables import resource


def plan(url: str, query: str) -> str:
    rtype, _, qs = query.partition("?")
    params = SearchParams.parse(parse_qsl(qs), rtype, strict=True)
    where = [resource.c.resource_type == rtype, resource.c.deleted.is_(False)]
    where += [criterion_sql(c, (rtype, resource.c.id), "", top=True) for c in params.criteria]
    keys = _sort_keys(rtype, params.sort, rtype, several_types=False)
    statement = _page_query(where, keys, params, backwards=False).limit((params.count or 50) + 1)
    sql = str(
        statement.compile(dialect=postgresql.dialect(), compile_kwargs={"literal_binds": True})
    )
    engine = create_engine(url)
    with engine.connect() as conn:
        rows = conn.execute(text("EXPLAIN (ANALYZE, BUFFERS) " + sql)).all()
    engine.dispose()
    return "\n".join(r[0] for r in rows)


if __name__ == "__main__":
    for q in sys.argv[2:]:
        print(f"### {q}\n{plan(sys.argv[1], q)}\n")
