#!/usr/bin/env python3
"""What the audit trail costs reads and searches, measured side by side (issue #5; a
benchmark, not a test).

On this shared 2-core machine throughput swings 1.5-2x between spells, so two runs measured
minutes apart (`run_core.py` with and without `--no-audit`) can differ by more than the
audit's cost. Here both servers run at once on one PostgreSQL database: the product, and
bench/noaudit.py's app (the same app with its audit hook a no-op). Short phases alternate
between them, in the order ABBA BAAB ..., each after the machine has gone quiet, so both see
the same spells; the verdict is the median of the per-round ratios (audited / no-op).

    python bench/audit_ab.py --database-url postgresql+psycopg://postgres@127.0.0.1:55433/EMPTY_DB
        [--workers 2] [--concurrency 16] [--rounds 6] [--seconds 4] [--phases read,search]
        [--versus ../other-worktree]   # two code versions instead, both audited

Both servers share the data (Observations created through the audited one before the first
round) and the master key; each gets a token of its own (its audience is its base URL).
The searchable copy of audit records (audit/indexing.py) is postponed for the run
(MEDISENTINEL_AUDIT_INDEX_SECONDS=86400): the copy is deferred work that a busy server runs
behind, and a copy started by the idle server during the other's phase would be charged to
the wrong side. run_core.py's figures leave it
out the same way (its quiet wait lets the copy finish between phases).

`--with-copy` measures the sustained cost instead: the copy runs all the time (every second,
no lag), and after each phase the benchmark waits until every record is searchable; that
wait is added to the phase's time (requests served / (phase + wait)). Under sustained load
the copy has to keep up, so this is what the audit costs a server that serves reads all day.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import secrets
import shutil
import statistics
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run as a script or imported
from harness import (  # noqa: E402
    COPY_ALWAYS_ENV,
    HOST,
    CpuMeter,
    Server,
    check_loopback_db,
    count_resources,
    describe_engine,
    drain_copy,
    engine_label,
    refresh_statistics,
    wait_for_quiet_machine,
)
from load_clients import HEADERS, RawClient  # noqa: E402
from run_core import dumps, loads, observation, reader, run_phase, searcher  # noqa: E402

AUDIT_SIDES = ("audited", "no-op")
VERSUS_SIDES = ("this", "versus")


@dataclass
class Side:
    name: str
    server: Server
    client: RawClient
    meter: CpuMeter


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--database-url", required=True, help="an empty PostgreSQL database")
    p.add_argument("--workers", type=int, default=2, help="worker processes of each server")
    p.add_argument("--concurrency", type=int, default=16, help="raw clients per phase")
    p.add_argument("--rounds", type=int, default=6, help="rounds (each: one phase per side)")
    p.add_argument("--seconds", type=float, default=4.0, help="timed seconds per phase")
    p.add_argument("--phases", default="read,search", help="comma list of read,search")
    p.add_argument("--patients", type=int, default=20)
    p.add_argument("--observations", type=int, default=400, help="made before the rounds")
    p.add_argument("--quiet-wait", type=float, default=10.0, help="max wait for a quiet machine")
    p.add_argument(
        "--with-copy",
        action="store_true",
        help="keep the searchable audit copy on and charge each phase the time its copy takes",
    )
    p.add_argument(
        "--versus",
        type=Path,
        help="instead of the no-op app, the product from this other source tree (a git worktree"
        " of another commit, say): two versions side by side, both audited",
    )
    args = p.parse_args(argv)
    args.phases = [ph.strip() for ph in args.phases.split(",") if ph.strip()]
    if not set(args.phases) <= {"read", "search"} or not args.phases:
        p.error("--phases: read and/or search")
    if args.rounds < 1 or args.seconds <= 0 or args.concurrency < 1 or args.workers < 1:
        p.error("--rounds, --concurrency, --workers must be >= 1 and --seconds > 0")
    return args


async def seed(client: RawClient, patients: int, observations: int) -> tuple[list[str], list[str]]:
    patient_ids: list[str] = []
    for i in range(patients):
        body = {"resourceType": "Patient", "name": [{"family": f"AB{i}"}], "gender": "female"}
        status, answer = await client.request("POST", "/Patient", dumps(body))
        if status != 201:
            raise RuntimeError(f"POST Patient -> {status}: {answer[:300]!r}")
        patient_ids.append(loads(answer)["id"])
    observation_ids: list[str] = []
    for _ in range(observations):
        payload = dumps(observation(random.choice(patient_ids)))
        status, answer = await client.request("POST", "/Observation", payload)
        if status != 201:
            raise RuntimeError(f"POST Observation -> {status}: {answer[:300]!r}")
        observation_ids.append(loads(answer)["id"])
    return patient_ids, observation_ids


def operation(phase: str, client: RawClient, patients: list[str], observations: list[str]) -> Any:
    return reader(client, observations) if phase == "read" else searcher(client, patients, 10)


def order_of(round_index: int) -> tuple[int, int]:
    """ABBA BAAB ...: each side goes first in half the rounds."""
    return (0, 1) if round_index % 2 == 0 else (1, 0)


async def rounds(args: argparse.Namespace, sides: list[Side]) -> dict[str, list[list[float]]]:
    """Per phase, per round, the ops/s of each side (in the order of the sides given)."""
    audited = sides[0].client
    patients, observations = await seed(audited, args.patients, args.observations)
    await asyncio.to_thread(refresh_statistics, args.database_url)
    results: dict[str, list[list[float]]] = {phase: [] for phase in args.phases}
    for phase in args.phases:
        for r in range(args.rounds):
            figures = [0.0, 0.0]
            for i in order_of(r):
                side = sides[i]
                await asyncio.to_thread(wait_for_quiet_machine, args.quiet_wait, side.server)
                result = await run_phase(
                    phase,
                    operation(phase, side.client, patients, observations),
                    seconds=args.seconds,
                    concurrency=args.concurrency,
                    warmup_ops=max(20, 4 * args.concurrency),
                    count_before=lambda: None,
                    meter=side.meter,
                )
                d = result.as_dict()
                if d["errors"]:
                    raise RuntimeError(f"{side.name} {phase}: {d['error_samples']}")
                figures[i] = d["ops_per_s"]
                drained = ""
                if args.with_copy:
                    wait = await asyncio.to_thread(drain_copy, args.database_url)
                    figures[i] = d["ops"] / (d["duration_s"] + wait)
                    drained = f" (served {d['ops_per_s']:.1f}/s, copy wait {wait:.2f} s)"
                cpu = d["cpu_pct"]
                print(
                    f"{phase:6s} round {r + 1} {side.name:7s} {figures[i]:8.1f}/s{drained}"
                    f"  p50 {d['p50_ms']:.1f} p95 {d['p95_ms']:.1f} ms"
                    f" | CPU% server {cpu.get('server', 0):.0f} client {cpu.get('client', 0):.0f}"
                    f" postgres {cpu.get('postgres', 0):.0f} other {cpu.get('other', 0):.0f}",
                    flush=True,
                )
            results[phase].append(figures)
    return results


def summary(results: dict[str, list[list[float]]], sides: tuple[str, str]) -> list[str]:
    lines = []
    a, b = sides
    for phase, per_round in results.items():
        ratios = [on / off for on, off in per_round if off > 0]
        on = statistics.median(f[0] for f in per_round)
        off = statistics.median(f[1] for f in per_round)
        cost = 1 - statistics.median(ratios)
        verdict = (
            f"the audit costs {100 * cost:.0f} %"
            if b == "no-op"
            else f"{a} is {100 * -cost:+.0f} % against {b}"
        )
        lines.append(
            f"{phase:6s} {a} median {on:.1f}/s, {b} median {off:.1f}/s; per-round"
            f" {a}/{b} {min(ratios):.2f}-{max(ratios):.2f}, median"
            f" {statistics.median(ratios):.2f}: {verdict}"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    check_loopback_db(args.database_url)
    info = describe_engine(args.database_url)
    if info["backend"] != "postgresql":
        raise SystemExit("two servers on one database: give a PostgreSQL URL")
    # Shared by both servers (and the CLI that issues the token): one set of signing keys.
    os.environ["MEDISENTINEL_MASTER_KEY"] = secrets.token_urlsafe(36)
    if args.with_copy:
        os.environ.update(COPY_ALWAYS_ENV)
    else:
        os.environ["MEDISENTINEL_AUDIT_INDEX_SECONDS"] = "86400"
    names = VERSUS_SIDES if args.versus else AUDIT_SIDES
    workdirs = [Path(tempfile.mkdtemp(prefix=f"medisentinel-ab-{n}-")) for n in names]
    servers: list[Server] = []
    try:
        servers.append(Server(args.database_url, args.workers, workdirs[0]))
        asyncio.run(servers[0].wait_ready())  # it migrates the database first
        if args.versus:  # Server copies this process's environment when it starts
            os.environ["PYTHONPATH"] = str(args.versus.resolve())
            servers.append(Server(args.database_url, args.workers, workdirs[1]))
        else:
            servers.append(Server(args.database_url, args.workers, workdirs[1], no_audit=True))
        asyncio.run(servers[1].wait_ready())
        for server in servers:
            server.postmaster = info.get("postmaster_pid")
        # A token's audience is one server's base URL: each side gets its own.
        tokens = [
            server.issue_token(f"bench-ab-{name}")
            for name, server in zip(names, servers, strict=True)
        ]
        print(
            f"# audit A/B: {engine_label(info)}, {args.workers} worker(s) per server,"
            f" {args.concurrency} raw clients, {args.rounds} rounds of {args.seconds:g}s per"
            f" side and phase; searchable audit copy "
            + ("on, its catch-up time charged" if args.with_copy else "postponed for the run"),
            flush=True,
        )

        async def run() -> dict[str, list[list[float]]]:
            sides = []
            for name, server, token in zip(names, servers, tokens, strict=True):
                HEADERS["Authorization"] = f"Bearer {token}"  # read once, by the client made here
                client = RawClient(HOST, server.port, "/fhir", args.concurrency)
                sides.append(Side(name, server, client, CpuMeter(server)))
            try:
                return await rounds(args, sides)
            finally:
                for side in sides:
                    await side.client.aclose()

        results = asyncio.run(run())
        for line in summary(results, names):
            print(line, flush=True)
        print(f"# resources in the database at the end: {count_resources(args.database_url)}")
        for server in servers:
            if server.proc.poll() is not None:
                raise RuntimeError(f"a server died during the run:\n{server.log_tail()}")
    finally:
        for server in servers:
            server.stop()
        for workdir in workdirs:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
