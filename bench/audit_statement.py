"""What one audit statement costs by batch size, on PostgreSQL (a benchmark, not a test).

Appends N records through the appender's statements (audit/appender.py) on one connection in
autocommit, one statement per batch of 1, 2, 4 or 8 records, and prints per record: the
PostgreSQL backend's CPU (from /proc, so the server must run on this machine), this process's
CPU and the wall time. The figures behind batching reads' records (audit/async_commit.py).

    python bench/audit_statement.py --database-url postgresql+psycopg://HOST/EMPTY_DB
        [--records 6000]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.db import libpq_dsn, run_migrations  # noqa: E402
from audit.appender import _NEW_DEDICATED, Head, statement  # noqa: E402
from audit.chain import GENESIS, AuditRecord  # noqa: E402


def backend_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().split()
    return (int(fields[13]) + int(fields[14])) / os.sysconf("SC_CLK_TCK")


def run(conn: psycopg.Connection, batch: int, n: int) -> str:
    (partition,) = conn.execute(_NEW_DEDICATED, (0,)).fetchone() or (0,)
    head = Head(partition, 0, GENESIS, 0)
    content = b'{"resourceType":"AuditEvent","note":"' + b"x" * 1950 + b'"}'  # ~2 KB, as reads'
    backend = conn.info.backend_pid
    db0, cpu0, wall0 = backend_cpu(backend), time.process_time(), time.perf_counter()
    for _ in range(n // batch):
        records = [
            AuditRecord(str(uuid.uuid4()), time.time_ns() // 1000, content, {})
            for _ in range(batch)
        ]
        sql, params, chain = statement(head, records)
        conn.execute(sql, params, prepare=True)
        head.advance(chain)
    done = (n // batch) * batch
    db = (backend_cpu(backend) - db0) / done * 1e6
    cpu = (time.process_time() - cpu0) / done * 1e6
    wall = (time.perf_counter() - wall0) / done * 1e6
    return (
        f"batch {batch}: PostgreSQL CPU {db:4.0f} µs, client CPU {cpu:4.0f} µs, "
        f"wall {wall:4.0f} µs per record"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--database-url", required=True, help="an empty PostgreSQL database")
    parser.add_argument("--records", type=int, default=6000, help="records per batch size")
    args = parser.parse_args(argv)
    run_migrations(args.database_url)
    with psycopg.connect(libpq_dsn(args.database_url), autocommit=True) as conn:
        print(f"# {args.records} records per batch size, one statement per batch", flush=True)
        for batch in (1, 2, 4, 8, 1):
            print(run(conn, batch, args.records), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
