#!/usr/bin/env python3
"""Search micro-benchmark (a benchmark, not a test): the cost of one search, in-process.

    python bench/search_micro.py                          # a fresh SQLite file in a temp dir
    python bench/search_micro.py --database-url postgresql+psycopg://u@127.0.0.1:5432/postgres

With --database-url, a fresh database (search_micro_<pid>) is created on that server and
dropped afterwards; the given database itself is only used to create and drop it.

Loads --patients Patients (with an MRN), one Device each, and --observations Observations
(bench/search_scale.py's data: one series per patient) through FhirService, 100 per unit of
work, then times --repeat runs of each query below with random patients: parse + search
through FhirService.search in one read unit of work, as a request would. Prints p50 / p95 in
microseconds per search, and a cProfile of --profile (top 20 by cumulative time).
"""

from __future__ import annotations

import argparse
import cProfile
import functools
import pstats
import random
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.context import RequestContext  # noqa: E402
from app.db import create_db_engine, refresh_statistics, run_migrations  # noqa: E402
from app.fhir.hooks import Pipeline  # noqa: E402
from app.fhir.search import SearchParams  # noqa: E402
from app.fhir.service import FhirService  # noqa: E402
from bench.search_scale import CODES, device, observation, patient  # noqa: E402

BASE = "http://bench.local/fhir"


def queries(patients: int) -> dict[str, Callable[[random.Random], tuple[str, str]]]:
    """name -> a function giving (type, query string) for a random patient."""

    def code_of(n: int) -> str:
        # search_scale's series: observation n belongs to patient n % patients; its code
        # depends on n % 10 / n % 4, i.e. on the patient (when patients is a multiple of 20).
        if n % 10 == 9:
            return "85354-9"
        return CODES[(0 if n % 2 else 4) + n % 4]

    def pick(rng: random.Random) -> int:
        return rng.randrange(patients)

    def subject_code(rng: random.Random, extra: str = "") -> tuple[str, str]:
        n = pick(rng)
        return "Observation", f"subject=Patient/p{n}&code={code_of(n)}{extra}"

    return {
        "subject+code": lambda r: subject_code(r, "&_count=10"),
        "identifier": lambda r: ("Patient", f"identifier=urn:mrn|MRN{pick(r):07d}"),
        "subject+code+date": lambda r: subject_code(r, "&date=ge2025-01-01&date=lt2025-07-01"),
        "latest10": lambda r: subject_code(r, "&_sort=-date&_count=10"),
        "chained": lambda r: (
            "Observation",
            f"subject:Patient.identifier=urn:mrn|MRN{(n := pick(r)):07d}&code={code_of(n)}",
        ),
        "include": lambda r: (
            "Observation",
            f"subject=Patient/p{pick(r)}&_include=Observation:subject&_count=50",
        ),
        "revinclude": lambda r: (
            "Patient",
            f"_id=p{pick(r)}&_revinclude=Observation:subject&_count=50",
        ),
    }


def load(service: FhirService, ctx: RequestContext, patients: int, observations: int) -> None:
    rng = random.Random(1)
    bodies = [patient(n) for n in range(patients)] + [device(n) for n in range(patients)]
    bodies += [observation(n, patients, rng) for n in range(observations)]
    started = time.perf_counter()
    for i in range(0, len(bodies), 100):
        with service.unit_of_work(ctx, write=True) as uow:
            for body in bodies[i : i + 100]:
                service.update(uow, body["resourceType"], body["id"], body)
    print(f"loaded {len(bodies)} resources in {time.perf_counter() - started:.1f} s")


def run_one(service: FhirService, ctx: RequestContext, rtype: str, qs: str) -> int:
    with service.unit_of_work(ctx, write=False) as uow:
        params = SearchParams.parse_query(qs, rtype)
        result = service.search(uow, rtype, params)
    return len(result.versions) + len(result.included)


def time_queries(
    service: FhirService, ctx: RequestContext, patients: int, repeat: int, seed: int
) -> None:
    print(f"{'query':<20} {'p50 µs':>9} {'p95 µs':>9} {'rows/search':>12}")
    for name, make in queries(patients).items():
        rng = random.Random(seed)
        for _ in range(20):  # warm-up: caches, connection pool
            run_one(service, ctx, *make(rng))
        samples, rows = [], 0
        for _ in range(repeat):
            rtype, qs = make(rng)
            started = time.perf_counter_ns()
            rows += run_one(service, ctx, rtype, qs)
            samples.append((time.perf_counter_ns() - started) / 1000)
        samples.sort()
        p50 = statistics.median(samples)
        p95 = samples[min(len(samples) - 1, int(len(samples) * 0.95))]
        print(f"{name:<20} {p50:>9.0f} {p95:>9.0f} {rows / repeat:>12.1f}")


def profile(
    service: FhirService, ctx: RequestContext, patients: int, name: str, repeat: int
) -> None:
    make = queries(patients)[name]
    rng = random.Random(7)
    work = [make(rng) for _ in range(repeat)]
    profiler = cProfile.Profile()
    profiler.enable()
    for rtype, qs in work:
        run_one(service, ctx, rtype, qs)
    profiler.disable()
    print(f"\n### cProfile: {name} x {repeat}, top 20 by cumulative time")
    pstats.Stats(profiler).sort_stats("cumulative").print_stats(20)


def analyze(engine: Engine) -> None:
    """Planner statistics, as the server means to keep them (app.db.refresh_statistics)."""
    refresh_statistics(engine)
    if engine.dialect.name == "sqlite":
        with engine.connect() as conn:
            found = conn.exec_driver_sql("SELECT 1 FROM sqlite_master WHERE name='sqlite_stat1'")
            if found.first() is not None:
                return
        # Seen 2026-11-21: its ANALYZE ran in a transaction that was then rolled back.
        print("warning: refresh_statistics left no sqlite_stat1; running ANALYZE here")
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            conn.exec_driver_sql("PRAGMA analysis_limit=1000")
        conn.exec_driver_sql("ANALYZE")
        conn.commit()


def fresh_postgres(url: str) -> tuple[str, Callable[[], None]]:
    name = f"search_micro_{uuid.uuid4().hex[:8]}"
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))

    def drop() -> None:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    return make_url(url).set(database=name).render_as_string(hide_password=False), drop


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--database-url", help="a PostgreSQL server (default: SQLite)")
    parser.add_argument("--patients", type=int, default=200)
    parser.add_argument("--observations", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=300)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--profile", default="subject+code", help="query to profile ('' none)")
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    args = parser.parse_args()
    cleanups: list[Callable[[], None]] = []
    if args.database_url:
        url, drop = fresh_postgres(args.database_url)
    else:
        tmp = tempfile.mkdtemp(prefix="search_micro")
        url, drop = f"sqlite:///{tmp}/micro.db", functools.partial(shutil.rmtree, tmp)
    if args.keep:
        print(f"database (kept): {url}")
    else:
        cleanups.append(drop)
    try:
        run_migrations(url)
        engine = create_db_engine(url)
        service = FhirService(engine, Pipeline())
        ctx = RequestContext.system(BASE, channel="cli")
        load(service, ctx, args.patients, args.observations)
        analyze(engine)
        print(f"database: {engine.dialect.name}, repeat {args.repeat}")
        time_queries(service, ctx, args.patients, args.repeat, args.seed)
        if args.profile:
            profile(service, ctx, args.patients, args.profile, args.repeat)
        engine.dispose()
    finally:
        for cleanup in reversed(cleanups):
            cleanup()


if __name__ == "__main__":
    main()
