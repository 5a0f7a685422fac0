"""In-process figures for the audit trail's cost (a benchmark, not a test).

No HTTP server and no load generator: N threads read one Patient through the door, with the
audit hook and with it swapped for a no-op (as bench/noaudit.py does for the server), and the
background copier's throughput is timed on the records the audited reads left. CPU per read
is this process's CPU time (Python and libpq), so it isolates the server-side cost from the
HTTP stack and from a load generator sharing the machine, which made decisions on this
2-core box unreliable (BENCHMARKS.md, session 6).

    python bench/audit_inprocess.py [--database-url URL] [--reads 8000] [--threads 8]

Without --database-url a fresh SQLite file in a temp dir is used; pass an empty PostgreSQL
database for PostgreSQL figures (the schema is migrated first).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.context import RequestContext  # noqa: E402
from app.db import run_migrations  # noqa: E402
from app.fhir.hooks import Hook  # noqa: E402
from app.main import create_app  # noqa: E402
from app.settings import Settings  # noqa: E402
from audit import indexing  # noqa: E402
from audit.hook import AuditHook  # noqa: E402


def read_figures(url: str, *, audited: bool, reads: int, threads: int) -> tuple[float, float]:
    """(reads per second, CPU µs per read) for `reads` reads over `threads` threads."""
    # The background copier never runs here: its cost is measured on its own below.
    app = create_app(Settings(database_url=url, audit_index_seconds=3600))
    service = app.state.service
    if not audited:
        hooks = app.state.pipeline.hooks
        hooks[:] = [Hook() if isinstance(h, AuditHook) else h for h in hooks]
    with service.unit_of_work(RequestContext.system(), write=True) as uow:
        patient_id = service.create(uow, "Patient", {"resourceType": "Patient"}).version.id

    def read_many(count: int) -> None:
        for _ in range(count):
            with service.unit_of_work(RequestContext.system(), write=False) as uow:
                service.read(uow, "Patient", patient_id)

    read_many(100)  # warm caches, prepared statements, the appender's partition
    workers = [threading.Thread(target=read_many, args=(reads // threads,)) for _ in range(threads)]
    cpu, wall = time.process_time(), time.perf_counter()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    done = (reads // threads) * threads
    app.state.audit.group_commit.close()
    app.state.engine.dispose()
    return done / wall, cpu / done * 1e6


def copy_figures(url: str) -> tuple[int, float, float]:
    """(records copied, records per second, Python CPU µs per record) for the backlog."""
    app = create_app(Settings(database_url=url, audit_index_seconds=3600))
    cpu, wall = time.process_time(), time.perf_counter()
    copied = indexing.catch_up_all(app.state.engine)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    app.state.audit.group_commit.close()
    app.state.engine.dispose()
    return copied, copied / wall if wall else 0.0, cpu / copied * 1e6 if copied else 0.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", help="default: fresh SQLite in a temp dir")
    parser.add_argument("--reads", type=int, default=8000)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2, help="audit on/off pairs, alternating")
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="medisentinel-audit-bench-"))
    url = args.database_url or f"sqlite:///{workdir / 'bench.db'}"
    try:
        run_migrations(url)
        print(f"# in-process reads of one Patient: {args.reads} reads, {args.threads} threads, "
              f"{url.split('@')[-1]}", flush=True)  # fmt: skip
        for _ in range(args.rounds):
            for audited in (True, False):
                rate, cpu = read_figures(
                    url, audited=audited, reads=args.reads, threads=args.threads
                )
                label = "audit on " if audited else "audit off"
                print(f"{label}  {rate:8.0f} reads/s  {cpu:6.0f} µs CPU per read", flush=True)
        copied, per_second, cpu = copy_figures(url)
        print(f"copy      {copied} records: {per_second:.0f} records/s, "
              f"{cpu:.0f} µs Python CPU per record", flush=True)  # fmt: skip
        return 0
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
