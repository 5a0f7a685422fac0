#!/usr/bin/env python3
"""Core throughput/latency benchmark for MediSentinel (a benchmark, not a test).

Starts `medisentinel serve` itself as a subprocess on a free loopback port, waits for
/fhir/metadata, then drives it with an async httpx load of --concurrency clients:

  create  single-POST Observation create: ops/s, p50/p95 latency
  txn     100-entry transaction Bundle (POST at the base): resources/s, p50/p95 per bundle
  read    GET Observation/{id} over every Observation created by the two phases above

Each phase runs for --seconds (default 10) after a short untimed warm-up; the server is
killed at the end, whatever happens. Traffic goes only to 127.0.0.1.

    python bench/run_core.py                                   # fresh SQLite file in a temp dir
    python bench/run_core.py --database-url postgresql+psycopg://postgres@127.0.0.1:55433/bench --workers 2
    python bench/run_core.py --seconds 1 --concurrency 2       # small mode for CI
    python bench/run_core.py --json                            # one JSON document on stdout

Only the pieces the workload needs exist before the first phase: --patients Patients that the
Observations reference. With PostgreSQL the database should be empty (or at least be one you
don't mind filling); the figures report how many resources existed when each phase began.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
FHIR_JSON = "application/fhir+json"
HEADERS = {"Content-Type": FHIR_JSON, "Accept": FHIR_JSON}
LOINC = ["8867-4", "8310-5", "9279-1", "59408-5", "8480-6"]
LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1", ""}


# ----------------------------------------------------------------------------- workload


def observation(patient_id: str) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "category": [{"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/observation-category",
            "code": "vital-signs",
        }]}],
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


def percentile(sorted_values: list[float], p: float) -> float:
    """Nearest-rank percentile of an ascending list (seconds in, milliseconds out)."""
    if not sorted_values:
        return float("nan")
    rank = max(1, min(len(sorted_values), int(round(p / 100.0 * len(sorted_values) + 0.5))))
    return sorted_values[rank - 1] * 1000.0


@dataclass
class PhaseResult:
    phase: str
    unit: str
    concurrency: int
    duration_s: float
    ops: int
    units: int
    errors: int
    existing_before: int
    latencies: list[float] = field(default_factory=list, repr=False)
    error_samples: list[str] = field(default_factory=list)
    server_cpu_s: float | None = None
    client_cpu_s: float | None = None
    postgres_cpu_s: float | None = None
    system_cpu_s: float | None = None
    read_pool: int | None = None

    def as_dict(self) -> dict[str, Any]:
        lat = sorted(self.latencies)
        d = {
            "phase": self.phase,
            "unit": self.unit,
            "concurrency": self.concurrency,
            "duration_s": round(self.duration_s, 3),
            "ops": self.ops,
            "ops_per_s": round(self.ops / self.duration_s, 1) if self.duration_s else 0.0,
            "units": self.units,
            "units_per_s": round(self.units / self.duration_s, 1) if self.duration_s else 0.0,
            "p50_ms": round(percentile(lat, 50), 2),
            "p95_ms": round(percentile(lat, 95), 2),
            "p99_ms": round(percentile(lat, 99), 2),
            "max_ms": round(lat[-1] * 1000, 2) if lat else float("nan"),
            "errors": self.errors,
            "error_samples": self.error_samples[:3],
            "resources_existing_before": self.existing_before,
        }
        if self.read_pool is not None:
            d["read_pool_ids"] = self.read_pool
        if self.server_cpu_s is not None and self.duration_s:
            d["server_cpu_pct"] = round(100.0 * self.server_cpu_s / self.duration_s, 1)
        if self.client_cpu_s is not None and self.duration_s:
            d["client_cpu_pct"] = round(100.0 * self.client_cpu_s / self.duration_s, 1)
        if self.postgres_cpu_s is not None and self.duration_s:
            d["postgres_cpu_pct"] = round(100.0 * self.postgres_cpu_s / self.duration_s, 1)
        if self.system_cpu_s is not None and self.duration_s:
            # Whole machine, in % of one core (2 cores = 200%). "other" is what neither the
            # server, this load generator nor PostgreSQL used: someone else's work on the box,
            # which makes the figures of that run pessimistic.
            d["machine_cpu_pct"] = round(100.0 * self.system_cpu_s / self.duration_s, 1)
            ours = sum(x or 0.0 for x in (self.server_cpu_s, self.client_cpu_s, self.postgres_cpu_s))
            d["other_cpu_pct"] = round(max(0.0, 100.0 * (self.system_cpu_s - ours) / self.duration_s), 1)
        return d


async def run_phase(
    name: str,
    unit: str,
    client: httpx.AsyncClient,
    op: Any,
    *,
    seconds: float,
    concurrency: int,
    warmup_ops: int,
    existing_before: int,
    server: Server,
) -> PhaseResult:
    """Run `op` from `concurrency` clients for `seconds`; op returns how many units it did."""
    # Untimed warm-up: first connections, first statement preparation, caches.
    for _ in range(warmup_ops):
        try:
            await op(client, record=False)
        except Exception:  # counted in the timed part if it persists
            pass

    result = PhaseResult(name, unit, concurrency, 0.0, 0, 0, 0, existing_before)
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            try:
                n = await op(client, record=True)
            except Exception as exc:  # noqa: BLE001 - a benchmark counts every failure
                result.errors += 1
                if len(result.error_samples) < 3:
                    result.error_samples.append(f"{type(exc).__name__}: {str(exc)[:200]}")
                await asyncio.sleep(0.01)  # don't spin on a dead server
                continue
            result.latencies.append(time.perf_counter() - started)
            result.ops += 1
            result.units += n

    server_cpu0, client_cpu0 = server.cpu_seconds(), time.process_time()
    pg_cpu0, sys_cpu0 = postgres_cpu_seconds(), machine_cpu_seconds()
    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    result.duration_s = time.perf_counter() - t0
    server_cpu1 = server.cpu_seconds()
    pg_cpu1, sys_cpu1 = postgres_cpu_seconds(), machine_cpu_seconds()
    if server_cpu0 is not None and server_cpu1 is not None:
        result.server_cpu_s = server_cpu1 - server_cpu0
    result.client_cpu_s = time.process_time() - client_cpu0
    if pg_cpu0 is not None and pg_cpu1 is not None and server.is_postgres:
        result.postgres_cpu_s = pg_cpu1 - pg_cpu0
    if sys_cpu0 is not None and sys_cpu1 is not None:
        result.system_cpu_s = sys_cpu1 - sys_cpu0
    return result


def _proc_stat_fields(pid: int | str) -> list[str] | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return [stat[stat.find("(") + 1:stat.rfind(")")]] + stat[stat.rfind(")") + 2:].split()


def postgres_cpu_seconds() -> float | None:
    """user+system CPU of every live process named `postgres` (backends, walwriter, ...)."""
    if not Path("/proc/self/stat").exists():
        return None
    total = 0
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            f = _proc_stat_fields(entry.name)
            if f and f[0] == "postgres":
                total += int(f[12]) + int(f[13])
    return total / os.sysconf("SC_CLK_TCK")


def machine_cpu_seconds() -> float | None:
    """Busy CPU seconds of the whole machine (all cores) since boot, from /proc/stat."""
    try:
        first = Path("/proc/stat").read_text().splitlines()[0].split()
    except OSError:
        return None
    user, nice, system, idle, iowait, irq, softirq, steal = (int(x) for x in first[1:9])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


# ----------------------------------------------------------------------------- server


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def server_command() -> list[str]:
    script = Path(sys.executable).with_name("medisentinel")
    if script.exists():
        return [str(script)]
    found = shutil.which("medisentinel")
    if found:
        return [found]
    return [sys.executable, "-m", "app.cli"]


class Server:
    """`medisentinel serve` in its own process group; killed (the whole group) on stop()."""

    def __init__(self, database_url: str, workers: int, workdir: Path) -> None:
        self.port = free_port()
        self.base = f"http://{HOST}:{self.port}/fhir"
        self.is_postgres = database_url.startswith("postgresql")
        self.log_path = workdir / "server.log"
        env = dict(os.environ)
        env.update({
            "MEDISENTINEL_DATABASE_URL": database_url,
            "MEDISENTINEL_HOST": HOST,
            "MEDISENTINEL_PORT": str(self.port),
            "MEDISENTINEL_WORKERS": str(workers),
            "MEDISENTINEL_BASE_URL": self.base,
            "MEDISENTINEL_LOG_LEVEL": "warning",
            "PYTHONUNBUFFERED": "1",
        })
        self.cmd = server_command() + [
            "serve", "--host", HOST, "--port", str(self.port), "--workers", str(workers),
        ]
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        # cwd = the temp dir so a stray .env or ./data in the caller's directory plays no part.
        self.proc = subprocess.Popen(
            self.cmd, cwd=workdir, env=env, stdout=self._log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    async def wait_ready(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(timeout=5.0) as client:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(
                        f"server exited with {self.proc.returncode} before it was ready:\n"
                        + self.log_tail())
                try:
                    r = await client.get(f"{self.base}/metadata", headers={"Accept": FHIR_JSON})
                    if r.status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.2)
        raise RuntimeError(f"server not ready after {timeout:.0f}s:\n{self.log_tail()}")

    def group_pids(self) -> list[int]:
        """Every live process of the server's process group (uvicorn supervisor + workers)."""
        pids = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            fields = stat[stat.rfind(")") + 2:].split()
            if int(fields[2]) == self.proc.pid:  # field 5 (pgrp) of /proc/PID/stat
                pids.append(int(entry.name))
        return pids

    def cpu_seconds(self) -> float | None:
        """user+system CPU of the whole server process group so far (Linux only)."""
        if not Path("/proc/self/stat").exists():
            return None
        ticks = os.sysconf("SC_CLK_TCK")
        total = 0
        for pid in self.group_pids():
            try:
                stat = Path(f"/proc/{pid}/stat").read_text()
            except OSError:
                continue
            fields = stat[stat.rfind(")") + 2:].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
        return total / ticks

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                pass
        # Whatever is left of the group (a worker that ignored SIGTERM) goes the hard way.
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        self._log.close()


# ----------------------------------------------------------------------------- db info


def check_loopback_db(url: str) -> None:
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return
    host = (parsed.host or "").strip("[]")
    if host not in LOOPBACK_NAMES and not host.startswith("127.") and not host.startswith("/"):
        raise SystemExit(f"refusing a non-loopback database host {host!r}: benchmarks stay on this machine")


def describe_engine(url: str) -> dict[str, Any]:
    """Engine name, server version and settings that matter for write throughput."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    info: dict[str, Any] = {
        "backend": parsed.get_backend_name(),
        "url": parsed.render_as_string(hide_password=True),
    }
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            if info["backend"] == "postgresql":
                info["version"] = conn.execute(text("SHOW server_version")).scalar()
                for setting in ("fsync", "synchronous_commit", "full_page_writes", "shared_buffers"):
                    info[setting] = conn.execute(text(f"SHOW {setting}")).scalar()
            elif info["backend"] == "sqlite":
                info["version"] = conn.execute(text("SELECT sqlite_version()")).scalar()
    except Exception as exc:  # noqa: BLE001 - informational only
        info["version"] = f"unknown ({type(exc).__name__})"
    finally:
        engine.dispose()
    return info


def count_resources(url: str) -> int | None:
    """Rows in the current-resource table, if the schema has one we recognise (else None)."""
    from sqlalchemy import create_engine, inspect, text

    engine = create_engine(url)
    try:
        names = set(inspect(engine).get_table_names())
        for table in ("resource_current", "resources", "resource", "current_resource"):
            if table in names:
                with engine.connect() as conn:
                    return int(conn.execute(text(f'SELECT count(*) FROM "{table}"')).scalar() or 0)
    except Exception:  # noqa: BLE001 - informational only
        return None
    finally:
        engine.dispose()
    return None


# ----------------------------------------------------------------------------- main


def engine_label(info: dict[str, Any]) -> str:
    return f"{info['backend']} {info.get('version', '?')}"


def format_line(r: dict[str, Any], label: str, workers: int) -> str:
    per = "bundle" if r["phase"] == "txn" else "request"
    rate = (
        f"{r['units_per_s']:8.1f} resources/s ({r['ops_per_s']:.1f} bundles/s)"
        if r["phase"] == "txn" else f"{r['ops_per_s']:8.1f} ops/s"
    )
    size = (
        f"{r['units']} resources created in {r['ops']} bundles"
        if r["phase"] == "txn"
        else f"{r['ops']} created" if r["phase"] == "create"
        else f"{r['ops']} reads over {r.get('read_pool_ids', 0)} ids"
    )
    cpu = ""
    if "server_cpu_pct" in r:
        cpu = f" | CPU% server {r['server_cpu_pct']:.0f}, client {r.get('client_cpu_pct', 0):.0f}"
        if "postgres_cpu_pct" in r:
            cpu += f", postgres {r['postgres_cpu_pct']:.0f}"
        if "other_cpu_pct" in r:
            cpu += f", other {r['other_cpu_pct']:.0f} (of {100 * (os.cpu_count() or 1)})"
    return (
        f"{r['phase']:6s} [{label}, {workers} worker(s), {r['concurrency']} clients] {rate}"
        f"  p50 {r['p50_ms']:.1f} ms  p95 {r['p95_ms']:.1f} ms  p99 {r['p99_ms']:.1f} ms per {per}"
        f" | {size} in {r['duration_s']:.1f}s, {r['resources_existing_before']} resources existed before"
        f", errors {r['errors']}{cpu}"
    )


async def drive(args: argparse.Namespace, server: Server, engine_info: dict[str, Any]) -> list[dict[str, Any]]:
    conc = args.concurrency
    limits = httpx.Limits(max_connections=max(conc, args.txn_concurrency or conc),
                          max_keepalive_connections=max(conc, args.txn_concurrency or conc))
    results: list[dict[str, Any]] = []
    existing = count_resources(args.database_url) or 0
    async with httpx.AsyncClient(base_url=server.base, headers=HEADERS, timeout=60.0,
                                 limits=limits) as client:
        patient_ids: list[str] = []
        for i in range(args.patients):
            r = await client.post("/Patient", json={
                "resourceType": "Patient", "name": [{"family": f"Bench{i}", "given": ["Core"]}],
                "gender": random.choice(["male", "female"]), "birthDate": "1970-01-01",
            })
            r.raise_for_status()
            patient_ids.append(r.json()["id"])
        existing += len(patient_ids)

        observation_ids: list[str] = []

        async def create(c: httpx.AsyncClient, *, record: bool) -> int:
            r = await c.post("/Observation", json=observation(random.choice(patient_ids)))
            if r.status_code != 201:
                raise RuntimeError(f"POST Observation -> {r.status_code}: {r.text[:200]}")
            observation_ids.append(r.json()["id"])
            return 1

        async def txn(c: httpx.AsyncClient, *, record: bool) -> int:
            bundle = transaction_bundle(patient_ids, args.bundle_size)
            r = await c.post("", json=bundle)
            if r.status_code != 200:
                raise RuntimeError(f"POST transaction -> {r.status_code}: {r.text[:200]}")
            entries = r.json().get("entry", [])
            if len(entries) != args.bundle_size:
                raise RuntimeError(f"transaction answered {len(entries)} entries, sent {args.bundle_size}")
            for e in entries:
                loc = (e.get("response") or {}).get("location", "")
                # "Observation/{id}/_history/{v}" (possibly absolute)
                parts = loc.split("/_history")[0].rstrip("/").split("/")
                if len(parts) >= 2 and parts[-2] == "Observation":
                    observation_ids.append(parts[-1])
            return args.bundle_size

        async def read(c: httpx.AsyncClient, *, record: bool) -> int:
            oid = random.choice(observation_ids)
            r = await c.get(f"/Observation/{oid}")
            if r.status_code != 200:
                raise RuntimeError(f"GET Observation/{oid} -> {r.status_code}")
            return 1

        ops = {"create": (create, "resources", conc),
               "txn": (txn, "resources", args.txn_concurrency or conc),
               "read": (read, "reads", conc)}
        for phase in args.phases:
            op, unit, phase_conc = ops[phase]
            if phase == "read" and not observation_ids:
                # Reads need something to read: seed untimed, like the other phases would have.
                for _ in range(max(100, conc * 10)):
                    await create(client, record=False)
            before = count_resources(args.database_url)
            if before is None:
                before = existing
            warmup = 0 if args.no_warmup else (max(2, phase_conc) if phase == "txn" else max(20, 4 * phase_conc))
            if phase == "read":
                pool = len(observation_ids)
            res = await run_phase(phase, unit, client, op, seconds=args.seconds, concurrency=phase_conc,
                                  warmup_ops=warmup, existing_before=before, server=server)
            if phase == "read":
                res.read_pool = pool
            d = res.as_dict()
            results.append(d)
            existing = before + (res.units if phase != "read" else 0)
            if not args.json:
                print(format_line(d, engine_label(engine_info), args.workers), flush=True)
                for sample in d["error_samples"]:
                    print(f"         error sample: {sample}", flush=True)
    return results


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--database-url", help="SQLAlchemy URL (default: a fresh SQLite file in a temp dir)")
    p.add_argument("--workers", type=int, default=1, help="uvicorn worker processes (default 1)")
    p.add_argument("--concurrency", type=int, default=16, help="concurrent clients (default 16)")
    p.add_argument("--txn-concurrency", type=int, default=0,
                   help="clients for the transaction phase (default: --concurrency)")
    p.add_argument("--seconds", type=float, default=10.0, help="timed seconds per phase (default 10)")
    p.add_argument("--phases", default="create,txn,read",
                   help="comma list of create,txn,read (default all, in that order)")
    p.add_argument("--bundle-size", type=int, default=100, help="entries per transaction (default 100)")
    p.add_argument("--patients", type=int, default=20, help="Patients the Observations refer to")
    p.add_argument("--no-warmup", action="store_true", help="skip the untimed warm-up before each phase")
    p.add_argument("--pid-file", type=Path, help="write the server's pid here once it is ready (for py-spy)")
    p.add_argument("--json", action="store_true", help="print one JSON document instead of lines")
    args = p.parse_args(argv)
    args.phases = [ph.strip() for ph in args.phases.split(",") if ph.strip()]
    unknown = set(args.phases) - {"create", "txn", "read"}
    if unknown:
        p.error(f"unknown phase(s): {', '.join(sorted(unknown))}")
    if args.concurrency < 1 or args.workers < 1 or args.seconds <= 0:
        p.error("--concurrency and --workers must be >= 1, --seconds > 0")
    return args


def machine_info() -> dict[str, Any]:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gib = None
    try:
        mem_gib = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError):
        pass
    return {"cores": os.cpu_count(), "memory_gib": mem_gib, "cpu": cpu,
            "os": platform.platform(), "python": platform.python_version()}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="medisentinel-bench-"))
    if not args.database_url:
        args.database_url = f"sqlite:///{workdir / 'bench.db'}"
    check_loopback_db(args.database_url)

    server: Server | None = None
    try:
        server = Server(args.database_url, args.workers, workdir)
        started = time.perf_counter()
        asyncio.run(server.wait_ready())
        ready_s = time.perf_counter() - started
        engine_info = describe_engine(args.database_url)
        if args.pid_file:
            args.pid_file.write_text(f"{server.pid}\n")
        if not args.json:
            print(f"# MediSentinel core benchmark: {engine_label(engine_info)} ({engine_info['url']}), "
                  f"{args.workers} worker(s), {args.concurrency} clients, {args.seconds:g}s per phase; "
                  f"server pid {server.pid} on {server.base}, ready in {ready_s:.1f}s", flush=True)
        results = asyncio.run(drive(args, server, engine_info))
        final_count = count_resources(args.database_url)
        if server.proc.poll() is not None:
            raise RuntimeError(f"server died during the run:\n{server.log_tail()}")
        if args.json:
            print(json.dumps({
                "benchmark": "medisentinel-core",
                "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "machine": machine_info(),
                "engine": engine_info,
                "workers": args.workers,
                "concurrency": args.concurrency,
                "seconds_per_phase": args.seconds,
                "bundle_size": args.bundle_size,
                "patients": args.patients,
                "resources_at_end": final_count,
                "results": results,
            }, indent=2))
        else:
            print(f"# resources in the database at the end: {final_count}", flush=True)
        errors = sum(r["errors"] for r in results)
        return 1 if errors and all(r["ops"] == 0 for r in results) else 0
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
