#!/usr/bin/env python3
"""Core throughput/latency benchmark for MediSentinel (a benchmark, not a test).

Starts `medisentinel serve` itself as a subprocess on a free loopback port, waits for
/fhir/metadata, then drives it with --concurrency concurrent async clients (httpx by default):

  create  single-POST Observation create: ops/s, p50/p95 latency per request
  txn     100-entry transaction Bundle (POST at the base): resources/s, p50/p95 per bundle
  read    GET Observation/{id} over every Observation created by the phases before it

Each phase runs for --seconds (default 10) after the planner statistics are refreshed
(ANALYZE; --no-analyze to skip) and a short untimed warm-up. Every figure is
printed with the data size (resources before the phase, how many were made or read, how long),
the DB engine and the CPU that the server, the load generator, PostgreSQL and the rest of the
machine used meanwhile. The server (its whole process group, bench/harness.py) is killed at the end,
whatever happens. Traffic goes only to 127.0.0.1.

    python bench/run_core.py                                   # fresh SQLite file in a temp dir
    python bench/run_core.py --workers 2 \\
        --database-url postgresql+psycopg://postgres@127.0.0.1:55433/bench
    python bench/run_core.py --seconds 1 --concurrency 2       # small mode for CI
    python bench/run_core.py --json                            # one JSON document on stdout

About the load generator: an httpx AsyncClient spends ~1.4-1.7 ms of CPU per request (~2 ms
before `sniffio` was installed; measured on a 2-core AMD EPYC box), so one httpx process
saturates a core at ~600-700 requests/s and, on a 2-core machine, takes that core away from
the server (bench/load_clients.py). `--client raw` uses a minimal HTTP/1.1
keep-alive client on asyncio streams instead (~0.1 ms CPU per request) to measure what the
server itself can do. The CPU columns say which side was the limit.

With PostgreSQL, give it an empty database (the benchmark only adds rows; it never deletes).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run as a script or imported
from harness import (  # noqa: E402
    HOST,
    CpuMeter,
    Server,
    count_resources,
    engine_label,
    finish,
    percentile,
    refresh_statistics,
    serve_for_bench,
    wait_for_quiet_machine,
)
from load_clients import HEADERS, HttpxClient, LoadClient, RawClient  # noqa: E402
from procnet import connections_per_worker  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run as a script or imported

try:  # the server depends on orjson, so the venv has it; plain json works too
    import orjson

    def dumps(obj: Any) -> bytes:
        return orjson.dumps(obj)

    def loads(data: bytes) -> Any:
        return orjson.loads(data)

except ImportError:  # pragma: no cover

    def dumps(obj: Any) -> bytes:
        return json.dumps(obj, separators=(",", ":")).encode()

    def loads(data: bytes) -> Any:
        return json.loads(data)


LOINC = ["8867-4", "8310-5", "9279-1", "59408-5", "8480-6"]
PHASES = ("create", "txn", "read", "search")


# ----------------------------------------------------------------------------- workload


def observation(patient_id: str) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "category": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                        "code": "vital-signs",
                    }
                ]
            }
        ],
        "code": {"coding": [{"system": "http://loinc.org", "code": random.choice(LOINC)}]},
        "subject": {"reference": f"Patient/{patient_id}"},
        "effectiveDateTime": (
            f"2024-{random.randint(1, 12):02d}-{random.randint(1, 28):02d}"
            f"T{random.randint(0, 23):02d}:00:00Z"
        ),
        "valueQuantity": {
            "value": random.randint(40, 180),
            "unit": "/min",
            "system": "http://unitsofmeasure.org",
            "code": "/min",
        },
    }


def transaction_bundle(patient_ids: list[str], size: int) -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": f"urn:uuid:{uuid.uuid4()}",
                "resource": observation(random.choice(patient_ids)),
                "request": {"method": "POST", "url": "Observation"},
            }
            for _ in range(size)
        ],
    }


# ----------------------------------------------------------------------------- phases


@dataclass
class PhaseResult:
    phase: str
    concurrency: int
    existing_before: int | None
    duration_s: float = 0.0
    ops: int = 0
    units: int = 0
    errors: int = 0
    latencies: list[float] = field(default_factory=list, repr=False)
    error_samples: list[str] = field(default_factory=list)
    cpu_pct: dict[str, float] = field(default_factory=dict)
    read_pool: int | None = None
    # Open connections per worker process at the end of the phase (Linux): with every
    # connection on one of two workers, that one runs out of its core (BENCHMARKS, session 9).
    connections: list[int] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        lat = sorted(self.latencies)
        secs = self.duration_s or float("nan")
        d: dict[str, Any] = {
            "phase": self.phase,
            "unit": {
                "create": "resources",
                "txn": "resources",
                "read": "reads",
                "search": "searches",
            }[self.phase],
            "concurrency": self.concurrency,
            "duration_s": round(self.duration_s, 3),
            "ops": self.ops,
            "ops_per_s": round(self.ops / secs, 1),
            "units": self.units,
            "units_per_s": round(self.units / secs, 1),
            "p50_ms": round(percentile(lat, 50), 2),
            "p95_ms": round(percentile(lat, 95), 2),
            "p99_ms": round(percentile(lat, 99), 2),
            "max_ms": round(lat[-1] * 1000, 2) if lat else float("nan"),
            "errors": self.errors,
            "error_samples": self.error_samples[:3],
            "resources_existing_before": self.existing_before,
            # % of one core; "other" = CPU used on the machine by none of server, load
            # generator or PostgreSQL: somebody else's work, which makes the figures pessimistic.
            "cpu_pct": self.cpu_pct,
        }
        if self.read_pool is not None:
            d["read_pool_ids"] = self.read_pool
        if self.connections:
            d["connections_per_worker"] = self.connections
        return d


async def run_phase(
    name: str,
    op: Any,
    *,
    seconds: float,
    concurrency: int,
    warmup_ops: int,
    count_before: Any,
    meter: CpuMeter,
) -> PhaseResult:
    """Run `op` from `concurrency` clients for `seconds`; op returns how many units it did."""
    # Untimed warm-up: connections opened, first statements prepared, caches filled.
    warm = [
        warmup_ops // concurrency + (1 if i < warmup_ops % concurrency else 0)
        for i in range(concurrency)
    ]

    async def warm_worker(n: int) -> None:
        for _ in range(n):
            try:
                await op()
            except Exception:  # noqa: BLE001, S110 - counted in the timed part if it persists
                pass

    await asyncio.gather(*(warm_worker(n) for n in warm))

    result = PhaseResult(name, concurrency, count_before())
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            try:
                n = await op()
            except Exception as exc:  # noqa: BLE001 - a benchmark counts every failure
                result.errors += 1
                if len(result.error_samples) < 3:
                    result.error_samples.append(f"{type(exc).__name__}: {str(exc)[:200]}")
                await asyncio.sleep(0.01)  # don't spin on a dead server
                continue
            result.latencies.append(time.perf_counter() - started)
            result.ops += 1
            result.units += n

    cpu0 = meter.sample()
    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    result.duration_s = time.perf_counter() - t0
    result.cpu_pct = CpuMeter.percent(cpu0, meter.sample(), result.duration_s)
    result.connections = connections_per_worker(meter.server.port, meter.server.proc.pid)
    return result


Operation = Callable[[], Awaitable[int]]


def reader(client: LoadClient, observation_ids: list[str]) -> Operation:
    """GET one Observation by id, picked from `observation_ids` (which may grow meanwhile)."""

    async def read() -> int:
        oid = random.choice(observation_ids)
        status, _ = await client.request("GET", f"/Observation/{oid}")
        if status != 200:
            raise RuntimeError(f"GET Observation/{oid} -> {status}")
        return 1

    return read


def searcher(client: LoadClient, patient_ids: list[str], count: int) -> Operation:
    """fhirload's search: one patient's Observations, `_count` of them."""

    async def search() -> int:
        path = f"/Observation?subject=Patient/{random.choice(patient_ids)}&_count={count}"
        status, _ = await client.request("GET", path)
        if status != 200:
            raise RuntimeError(f"GET {path} -> {status}")
        return 1

    return search


async def drive(
    args: argparse.Namespace, server: Server, engine_info: dict[str, Any]
) -> list[dict[str, Any]]:
    conns = max(args.concurrency, args.txn_concurrency or 0)
    client: LoadClient = (
        RawClient(HOST, server.port, "/fhir", conns)
        if args.client == "raw"
        else HttpxClient(server.base, conns)
    )
    meter = CpuMeter(server)
    label = engine_label(engine_info)
    results: list[dict[str, Any]] = []
    try:
        patient_ids: list[str] = []
        for i in range(args.patients):
            patient = {
                "resourceType": "Patient",
                "name": [{"family": f"Bench{i}", "given": ["Core"]}],
                "gender": random.choice(["male", "female"]),
                "birthDate": "1970-01-01",
            }
            status, body = await client.request("POST", "/Patient", dumps(patient))
            if status != 201:
                raise RuntimeError(f"POST Patient -> {status}: {body[:300]!r}")
            patient_ids.append(loads(body)["id"])

        observation_ids: list[str] = []

        async def create() -> int:
            payload = dumps(observation(random.choice(patient_ids)))
            status, body = await client.request("POST", "/Observation", payload)
            if status != 201:
                raise RuntimeError(f"POST Observation -> {status}: {body[:200]!r}")
            observation_ids.append(loads(body)["id"])
            return 1

        async def txn() -> int:
            payload = dumps(transaction_bundle(patient_ids, args.bundle_size))
            status, body = await client.request("POST", "", payload)
            if status != 200:
                raise RuntimeError(f"POST transaction -> {status}: {body[:200]!r}")
            entries = loads(body).get("entry", [])
            if len(entries) != args.bundle_size:
                raise RuntimeError(f"transaction answered {len(entries)} of {args.bundle_size}")
            for e in entries:
                # response.location: "Observation/{id}/_history/{v}", possibly absolute
                loc = (e.get("response") or {}).get("location", "")
                parts = loc.split("/_history")[0].rstrip("/").split("/")
                if len(parts) >= 2 and parts[-2] == "Observation":
                    observation_ids.append(parts[-1])
            return args.bundle_size

        read = reader(client, observation_ids)
        search = searcher(client, patient_ids, args.search_count)
        ops = {"create": create, "txn": txn, "read": read, "search": search}
        for phase in args.phases:
            conc = (
                (args.txn_concurrency or args.concurrency) if phase == "txn" else args.concurrency
            )
            if phase in ("read", "search") and not observation_ids:
                for _ in range(max(100, 10 * conc)):  # something to read, made untimed
                    await create()
            if not args.no_analyze:
                await asyncio.to_thread(refresh_statistics, args.database_url)
            if args.quiet_wait:
                await asyncio.to_thread(wait_for_quiet_machine, args.quiet_wait, server)
            warmup = 0 if args.no_warmup else (2 * conc if phase == "txn" else max(20, 8 * conc))
            pool = len(observation_ids)
            res = await run_phase(
                phase,
                ops[phase],
                seconds=args.seconds,
                concurrency=conc,
                warmup_ops=warmup,
                count_before=lambda: count_resources(args.database_url),
                meter=meter,
            )
            if phase == "read":
                res.read_pool = pool
            d = res.as_dict()
            results.append(d)
            if not args.json:
                print(format_line(d, label, args.workers, client.name), flush=True)
                for sample in d["error_samples"]:
                    print(f"         error sample: {sample}", flush=True)
    finally:
        await client.aclose()
    return results


# ----------------------------------------------------------------------------- output, main


def format_line(r: dict[str, Any], label: str, workers: int, client: str) -> str:
    if r["phase"] == "txn":
        rate = f"{r['units_per_s']:8.1f} resources/s ({r['ops_per_s']:.1f} bundles/s)"
        size = f"{r['units']} resources created in {r['ops']} bundles"
        per = "bundle"
    elif r["phase"] == "create":
        rate, size, per = f"{r['ops_per_s']:8.1f} ops/s", f"{r['ops']} created", "request"
    else:
        rate = f"{r['ops_per_s']:8.1f} ops/s"
        size = f"{r['ops']} reads over {r.get('read_pool_ids', 0)} ids"
        per = "request"
    cpu = r.get("cpu_pct") or {}
    cpu_text = ", ".join(
        f"{k} {cpu[k]:.0f}" for k in ("server", "client", "postgres", "other") if k in cpu
    )
    return (
        f"{r['phase']:6s} [{label}, {workers} worker(s), {r['concurrency']} {client} clients]"
        f" {rate}  p50 {r['p50_ms']:.1f} ms  p95 {r['p95_ms']:.1f} ms  p99 {r['p99_ms']:.1f} ms"
        f" per {per} | {size} in {r['duration_s']:.1f}s,"
        f" {r['resources_existing_before']} resources existed before, errors {r['errors']}"
        + (f" | CPU% of a core: {cpu_text}" if cpu_text else "")
        + (f" | connections per worker {spread}" if (spread := _spread(r)) else "")
    )


def _spread(r: dict[str, Any]) -> str:
    return "/".join(str(n) for n in r.get("connections_per_worker", []))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=(__doc__ or "").split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--database-url", help="SQLAlchemy URL (default: fresh SQLite in a temp dir)")
    p.add_argument("--workers", type=int, default=1, help="server worker processes (default 1)")
    p.add_argument("--concurrency", type=int, default=16, help="concurrent clients (default 16)")
    p.add_argument(
        "--txn-concurrency",
        type=int,
        default=0,
        help="clients in the transaction phase (default: --concurrency)",
    )
    p.add_argument("--seconds", type=float, default=10.0, help="timed seconds per phase (10)")
    p.add_argument(
        "--phases",
        default=",".join(PHASES),
        help="comma list, in order, of create,txn,read,search (default: all)",
    )
    p.add_argument("--bundle-size", type=int, default=100, help="entries per transaction (100)")
    p.add_argument("--patients", type=int, default=20, help="Patients the Observations refer to")
    p.add_argument(
        "--client",
        choices=("httpx", "raw"),
        default="httpx",
        help="load generator: httpx (default) or a minimal asyncio HTTP/1.1 client"
        " that costs ~20x less CPU per request",
    )
    p.add_argument("--no-warmup", action="store_true", help="no untimed warm-up before phases")
    p.add_argument("--no-analyze", action="store_true", help="no ANALYZE before each phase")
    p.add_argument("--search-count", type=int, default=10, help="_count of the search phase (10)")
    p.add_argument(
        "--no-audit",
        action="store_true",
        help="serve bench/noaudit.py's app: the audit hook swapped for a no-op, to measure"
        " what auditing costs (the product itself cannot turn auditing off)",
    )
    p.add_argument(
        "--quiet-wait",
        type=float,
        default=0.0,
        help="before each phase wait up to this many seconds for the rest of the"
        " machine to go idle (a shared box skews figures); default 0: don't",
    )
    p.add_argument("--pid-file", type=Path, help="write the server pid here when ready (py-spy)")
    p.add_argument("--json", action="store_true", help="print one JSON document, not lines")
    p.add_argument("--json-out", type=Path, help="also write the JSON document to this file")
    args = p.parse_args(argv)
    args.phases = [ph.strip() for ph in args.phases.split(",") if ph.strip()]
    unknown = set(args.phases) - set(PHASES)
    if unknown:
        p.error(f"unknown phase(s): {', '.join(sorted(unknown))}")
    if args.concurrency < 1 or args.workers < 1 or args.seconds <= 0 or args.bundle_size < 1:
        p.error("--concurrency, --workers, --bundle-size must be >= 1 and --seconds > 0")
    if args.seconds > 600:
        p.error("--seconds is per phase and at most 600")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with serve_for_bench(args, "medisentinel-bench-", no_audit=args.no_audit) as served:
        server, engine_info = served.server, served.engine_info
        HEADERS["Authorization"] = f"Bearer {server.issue_token()}"
        if not args.json:
            print(
                f"# MediSentinel core benchmark: {engine_label(engine_info)}"
                f" ({engine_info['url']}), {args.workers} worker(s), {args.concurrency}"
                f" {args.client} clients, {args.seconds:g}s per phase; server pid {server.pid}"
                f" at {server.base}, ready in {served.ready_s:.1f}s",
                flush=True,
            )
        results = asyncio.run(drive(args, server, engine_info))
        final_count = count_resources(args.database_url)
    return finish(
        args, "medisentinel-core", served, results, final_count,
        f"# resources in the database at the end: {final_count}",
        txn_concurrency=args.txn_concurrency or args.concurrency, bundle_size=args.bundle_size,
    )  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
